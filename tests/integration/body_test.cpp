// Streaming bodies: byte-for-byte, both directions at once, bounded memory, body filters.
#include "integration/helpers.hpp"

#include <fstream>
#include <thread>

using namespace itest;
using portico::testing::Client;
using portico::testing::Origin;
using portico::testing::RawOrigin;

namespace {

enum class Framing { ContentLength, Chunked };
struct BodyCase {
  Framing up;
  Framing down;
  std::size_t size;
};

std::string chunked(std::string_view body, std::size_t piece) {
  std::string out;
  for (std::size_t i = 0; i < body.size(); i += piece) {
    auto part = body.substr(i, piece);
    char line[32];
    std::snprintf(line, sizeof line, "%zx\r\n", part.size());
    out += line;
    out.append(part);
    out += "\r\n";
  }
  return out + "0\r\n\r\n";
}

std::size_t rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
  return 0;
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

}  // namespace

class BodyTransfer : public ::testing::TestWithParam<BodyCase> {};

TEST_P(BodyTransfer, UploadAndDownloadAreByteForByte) {
  const BodyCase bc = GetParam();
  const std::string body = pattern(bc.size);
  Origin origin([&](const pt::OriginRequest& r) {
    pt::OriginResponse o;
    o.body = r.body == body ? body : std::string("MISMATCH");
    o.chunked = bc.down == Framing::Chunked;
    return o;
  });
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port(), 30s);
  std::string req = "POST /echo HTTP/1.1\r\nHost: h\r\n";
  if (bc.up == Framing::ContentLength)
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  else
    req += "Transfer-Encoding: chunked\r\n\r\n" + chunked(body, 7000);
  ASSERT_TRUE(c.send(req));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200u);
  EXPECT_EQ(r->body.size(), body.size());
  EXPECT_TRUE(r->body == body);
}

INSTANTIATE_TEST_SUITE_P(
    Framings, BodyTransfer,
    ::testing::Values(BodyCase{Framing::ContentLength, Framing::ContentLength, 1},
                      BodyCase{Framing::ContentLength, Framing::Chunked, 300000},
                      BodyCase{Framing::Chunked, Framing::ContentLength, 300000},
                      BodyCase{Framing::Chunked, Framing::Chunked, 3000000},
                      BodyCase{Framing::ContentLength, Framing::ContentLength, 5000000}),
    [](const ::testing::TestParamInfo<BodyCase>& i) {
      return std::string(i.param.up == Framing::Chunked ? "ChunkedUp" : "LengthUp") +
             (i.param.down == Framing::Chunked ? "ChunkedDown" : "LengthDown") +
             std::to_string(i.param.size);
    });

TEST(Body, UploadAndDownloadStreamAtOnceWithBoundedMemory) {
  // The origin echoes while it reads, so the request and the response bodies are in flight
  // together; neither side may wait for the other to finish. 1 GiB each way (64 MiB under
  // the sanitizers, whose allocator makes RSS meaningless).
  const std::uint64_t total = kSanitized ? (64ull << 20) : (1ull << 30);
  RawOrigin origin([&](int fd) {
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    if (!pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(total) + "\r\n\r\n"))
      return;
    std::uint64_t echoed = 0;
    if (!extra.empty() && !pt::write_all(fd, extra)) return;
    echoed += extra.size();
    std::vector<char> buf(256 * 1024);
    while (echoed < total) {
      ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
      if (n <= 0) return;
      if (!pt::write_all(fd, std::string_view(buf.data(), static_cast<std::size_t>(n)))) return;
      echoed += static_cast<std::uint64_t>(n);
    }
  });
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port(), 60s);
  ASSERT_TRUE(c.send("PUT /stream HTTP/1.1\r\nHost: h\r\nContent-Length: " + std::to_string(total) + "\r\n\r\n"));
  const std::size_t rss_before = rss_kib();
  std::size_t rss_peak = rss_before;
  std::atomic<bool> send_ok{true};
  std::thread sender([&] {
    std::string block(1 << 20, 'q');
    for (std::uint64_t sent = 0; sent < total; sent += block.size())
      if (!pt::write_all(c.fd(), block)) {
        send_ok = false;
        return;
      }
  });
  std::string head;
  std::uint64_t received = 0;
  bool all_q = true;
  std::vector<char> buf(1 << 20);
  int reads = 0;
  while (received < total) {
    ssize_t n = ::recv(c.fd(), buf.data(), buf.size(), 0);
    if (n <= 0) break;
    std::size_t off = 0;
    if (head.find("\r\n\r\n") == std::string::npos) {
      head.append(buf.data(), static_cast<std::size_t>(n));
      auto p = head.find("\r\n\r\n");
      if (p == std::string::npos) continue;
      off = static_cast<std::size_t>(n) - (head.size() - p - 4);
    }
    for (std::size_t i = off; i < static_cast<std::size_t>(n); ++i) all_q &= buf[i] == 'q';
    received += static_cast<std::uint64_t>(n) - off;
    if (++reads % 64 == 0) rss_peak = std::max(rss_peak, rss_kib());
  }
  sender.join();
  EXPECT_TRUE(send_ok);
  EXPECT_EQ(head.rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_EQ(received, total);
  EXPECT_TRUE(all_q);
  if (!kSanitized) {
    EXPECT_LT(rss_peak - rss_before, 16u * 1024) << "RSS grew by " << (rss_peak - rss_before) << " KiB";
  }
}

namespace {
/// Upper-cases response bodies and counts request body bytes.
class Filters : public ProxyHttp<> {
 public:
  explicit Filters(SocketAddr up) : peer_(make_peer(up)) {}
  task<Result<HttpPeerPtr>> upstream_peer(Session&, NoCtx&) override { co_return peer_; }
  Result<void> request_body_filter(Session&, BodyChunk& b, bool, NoCtx&) override {
    seen += b.size();
    return ok();
  }
  task<Result<void>> response_filter(Session&, ResponseHeader& h, NoCtx&) override {
    h.remove_header("Content-Length");  // the body changes length below
    co_return ok();
  }
  Result<void> response_body_filter(Session&, BodyChunk& b, bool end, NoCtx&) override {
    std::string s(b.data());
    for (auto& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    if (end) s += "[END]";
    b.replace(std::move(s));
    return ok();
  }
  std::atomic<std::size_t> seen{0};

 private:
  HttpPeerPtr peer_;
};
}  // namespace

TEST(Body, FiltersSeeAndRewriteBodies) {
  Origin origin([](const pt::OriginRequest& r) {
    pt::OriginResponse o;
    o.body = "echo:" + r.body;
    return o;
  });
  auto f = std::make_shared<Filters>(origin.addr());
  pt::TestProxy px(f);
  Client c(px.port());
  auto r = c.request("POST", "/", {}, "abc def");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "ECHO:ABC DEF[END]");
  EXPECT_EQ(r->header("Transfer-Encoding"), "chunked");
  EXPECT_EQ(f->seen.load(), 7u);
}

TEST(Body, EarlyResponseDuringUploadClosesTheConnection) {
  RawOrigin origin([](int fd) {
    std::string extra;
    pt::read_head(fd, extra);
    pt::write_all(fd, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\n\r\ntoo big!");
  });
  auto fwd = std::make_shared<Forward>(origin.addr());
  pt::TestProxy px(fwd);
  Client c(px.port());
  ASSERT_TRUE(c.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100000000\r\n\r\nstart"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413u);
  EXPECT_EQ(r->body, "too big!");
  EXPECT_EQ(r->header("Connection"), "close") << "the unread request body ends the connection";
  EXPECT_TRUE(c.closed_by_peer());
  ASSERT_TRUE(fwd->logged.wait_for(1));
  std::lock_guard lk(fwd->mu);
  EXPECT_FALSE(fwd->last_error.has_value()) << "the response itself was delivered whole";
  EXPECT_EQ(fwd->last_status, 413);
}
