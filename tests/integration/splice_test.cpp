// Zero-copy response bodies (HttpServerOptions::splice_min_body_bytes): which bodies are
// spliced, that they arrive byte for byte, and how a transfer that fails midway ends.
#include "integration/helpers.hpp"

#include <sys/socket.h>

using namespace itest;
using portico::testing::Client;
using portico::testing::RawOrigin;

namespace {

/// Forward that records how many body bytes each request sent and spliced.
class Recording : public Forward {
 public:
  using Forward::Forward;
  task<void> logging(Session& s, const Error* e, NoCtx& c) override {
    {
      std::lock_guard lk(mu);
      sent.push_back(s.body_bytes_sent());
      spliced.push_back(s.body_bytes_spliced());
      reused.push_back(s.upstream_reused());
    }
    co_await Forward::logging(s, e, c);
  }
  std::vector<std::uint64_t> sent, spliced;
  std::vector<bool> reused;
};

/// Recording that also filters response bodies (so nothing may bypass it).
class Filtering : public Recording {
 public:
  using Recording::Recording;
  Result<void> response_body_filter(Session&, BodyChunk& b, bool, NoCtx&) override {
    seen += b.size();
    return ok();
  }
  std::atomic<std::uint64_t> seen{0};
};

/// Reads from `fd` until `want` bytes are in `out` (or EOF, an error, the 10 s receive timeout).
bool read_exactly(int fd, std::string& out, std::size_t want) {
  char buf[65536];
  while (out.size() < want) {
    const ssize_t n = ::recv(fd, buf, std::min(sizeof buf, want - out.size()), 0);
    if (n <= 0) return false;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return true;
}

/// Reads until EOF (true) or an error / the receive timeout (false).
bool read_to_eof(int fd, std::string& out) {
  char buf[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

std::string head_for(std::size_t length) {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(length) + "\r\n\r\n";
}

/// An origin that answers each request with `first` body bytes, waits until the test says the
/// client has them (so the proxy decided what to do with the rest), then sends `rest` bytes. The
/// body is pattern(first + rest).
struct TwoPartOrigin {
  TwoPartOrigin(std::size_t first_bytes, std::size_t rest)
      : first(first_bytes), body(pattern(first_bytes + rest)), origin([this](int fd) {
          for (;;) {
            std::string extra;
            if (pt::read_head(fd, extra).empty()) return;
            if (!pt::write_all(fd, head_for(body.size()) + body.substr(0, first))) return;
            if (!client_has_first.wait_for(++served)) return;
            if (!pt::write_all(fd, std::string_view(body).substr(first))) return;
          }
        }) {}
  /// Sends a GET on `c` and reads the response: the head and the first part, then (once the
  /// origin was told) the rest. Returns whether the head and the body were as sent.
  bool fetch(Client& c) {
    const std::string head = head_for(body.size());
    std::string got;
    if (!c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n") ||
        !read_exactly(c.fd(), got, head.size() + first))
      return false;
    client_has_first.add();
    return read_exactly(c.fd(), got, head.size() + body.size()) && got == head + body;
  }

  std::size_t first;
  std::string body;
  Latch client_has_first;
  int served = 0;  // the origin's thread only
  RawOrigin origin;
};

HttpServerOptions splice_at(std::size_t min) {
  HttpServerOptions o;
  o.splice_min_body_bytes = min;
  return o;
}

}  // namespace

// The threshold counts the bytes still to come once what the proxy read with the head is
// forwarded: at it the rest is spliced, one byte short of it the rest is copied.
TEST(Splice, BodiesFromTheThresholdUpAreSplicedAndArriveByteForByte) {
  constexpr std::size_t kMin = 200000;
  for (const std::size_t rest : {kMin, kMin - 1, 3 * kMin}) {
    SCOPED_TRACE(rest);
    TwoPartOrigin o(1000, rest);
    auto proxy = std::make_shared<Recording>(o.origin.addr());
    pt::TestProxy px(proxy, splice_at(kMin));
    Client c(px.port(), 10s);
    for (int round = 1; round <= 2; ++round) {  // the second on both kept-alive connections
      ASSERT_TRUE(o.fetch(c));
      ASSERT_TRUE(proxy->logged.wait_for(round));
      std::lock_guard lk(proxy->mu);
      EXPECT_FALSE(proxy->last_error) << proxy->last_error->to_string();
      EXPECT_EQ(proxy->sent.back(), o.body.size());
      EXPECT_EQ(proxy->spliced.back(), rest >= kMin ? rest : 0u);
      EXPECT_EQ(proxy->reused.back(), round == 2);  // a spliced body leaves the upstream reusable
    }
  }
}

TEST(Splice, OffWhenTheThresholdIsZero) {
  TwoPartOrigin o(10, 1 << 20);
  auto proxy = std::make_shared<Recording>(o.origin.addr());
  pt::TestProxy px(proxy, splice_at(0));
  Client c(px.port(), 10s);
  ASSERT_TRUE(o.fetch(c));
  ASSERT_TRUE(proxy->logged.wait_for(1));
  std::lock_guard lk(proxy->mu);
  EXPECT_EQ(proxy->spliced.back(), 0u);
}

TEST(Splice, AResponseBodyFilterSeesEveryByte) {
  TwoPartOrigin o(10, 1 << 20);
  auto proxy = std::make_shared<Filtering>(o.origin.addr());
  pt::TestProxy px(proxy, splice_at(1));
  Client c(px.port(), 10s);
  ASSERT_TRUE(o.fetch(c));
  ASSERT_TRUE(proxy->logged.wait_for(1));
  EXPECT_EQ(proxy->seen.load(), o.body.size());
  std::lock_guard lk(proxy->mu);
  EXPECT_EQ(proxy->spliced.back(), 0u);
}

// Chunked and close-delimited bodies are never spliced (their framing must be read), whatever
// their size; they still arrive whole.
TEST(Splice, BodiesWithoutALengthAreCopied) {
  const std::string body = pattern(600000);
  char size_line[32];
  std::snprintf(size_line, sizeof size_line, "%zx\r\n", body.size());
  const std::string responses[] = {
      "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body,
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + std::string(size_line) + body +
          "\r\n0\r\n\r\n",
  };
  for (const std::string& response : responses) {
    SCOPED_TRACE(response.substr(0, 40));
    RawOrigin origin([&](int fd) {
      std::string extra;
      if (pt::read_head(fd, extra).empty()) return;
      pt::write_all(fd, response);
    });
    auto proxy = std::make_shared<Recording>(origin.addr());
    pt::TestProxy px(proxy, splice_at(1));
    Client c(px.port(), 10s);
    auto r = c.get("/");
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->body == body);
    ASSERT_TRUE(proxy->logged.wait_for(1));
    std::lock_guard lk(proxy->mu);
    EXPECT_EQ(proxy->spliced.back(), 0u);
  }
}

// An upstream that closes before its Content-Length is complete: the client gets the bytes that
// came, then a closed connection (never a response that looks complete), and the error is
// logged as the upstream's.
TEST(Splice, AnUpstreamThatStopsEarlyClosesTheClientConnection) {
  const std::string body = pattern(400000);
  RawOrigin origin([&](int fd) {
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    pt::write_all(fd, head_for(1000000) + body);  // then closes
  });
  auto proxy = std::make_shared<Recording>(origin.addr());
  pt::TestProxy px(proxy, splice_at(1));
  Client c(px.port(), 10s);
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  std::string got;
  ASSERT_TRUE(read_to_eof(c.fd(), got));
  const std::size_t head = head_for(1000000).size();
  ASSERT_GE(got.size(), head);
  EXPECT_TRUE(got.substr(head) == body);
  ASSERT_TRUE(proxy->logged.wait_for(1));
  std::lock_guard lk(proxy->mu);
  ASSERT_TRUE(proxy->last_error);
  EXPECT_EQ(proxy->last_error->source(), ErrorSource::Upstream);
  EXPECT_EQ(proxy->last_error->type(), ErrorType::PrematureBodyEnd);
  EXPECT_EQ(proxy->sent.back(), body.size());
}

// An upstream that stalls mid-body: its read timeout ends the transfer and the client connection.
TEST(Splice, AStalledUpstreamTimesOut) {
  Latch release;
  RawOrigin origin([&](int fd) {
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    if (!pt::write_all(fd, head_for(1000000) + pattern(10))) return;
    release.wait_for(1, 20s);  // holds the connection open, silent
  });
  auto peer = std::make_shared<HttpPeer>(origin.addr(), false);
  peer->options.read_timeout = 300ms;
  auto proxy = std::make_shared<Recording>(HttpPeerPtr(peer));
  pt::TestProxy px(proxy, splice_at(1));
  Client c(px.port(), 10s);
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  std::string got;
  ASSERT_TRUE(read_to_eof(c.fd(), got));
  release.add();
  ASSERT_TRUE(proxy->logged.wait_for(1));
  std::lock_guard lk(proxy->mu);
  ASSERT_TRUE(proxy->last_error);
  EXPECT_EQ(proxy->last_error->type(), ErrorType::ReadTimedout);
  EXPECT_EQ(proxy->sent.back(), 10u);
}

// A client that leaves mid-body: the transfer ends with a downstream error (no hang, no busy
// loop), and the upstream connection, its body unfinished, is not pooled.
TEST(Splice, AClientThatLeavesEndsTheTransfer) {
  constexpr std::size_t kTotal = 64 << 20;
  std::atomic<int> connections{0};
  RawOrigin origin([&](int fd) {
    ++connections;
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    if (!pt::write_all(fd, head_for(kTotal))) return;
    const std::string block = pattern(1 << 16);
    for (std::size_t sent = 0; sent < kTotal; sent += block.size())
      if (!pt::write_all(fd, block)) return;  // fails once the proxy closes its side
  });
  auto proxy = std::make_shared<Recording>(origin.addr());
  pt::TestProxy px(proxy, splice_at(1));
  {
    Client c(px.port(), 10s);
    ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    std::string got;
    ASSERT_TRUE(read_exactly(c.fd(), got, 300000));
  }  // closed with a few MiB still to come
  ASSERT_TRUE(proxy->logged.wait_for(1));
  {
    std::lock_guard lk(proxy->mu);
    ASSERT_TRUE(proxy->last_error);
    EXPECT_EQ(proxy->last_error->source(), ErrorSource::Downstream);
    EXPECT_LT(proxy->sent.back(), kTotal);
  }
  // The next request needs a new upstream connection.
  Client c2(px.port(), 10s);
  ASSERT_TRUE(c2.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  std::string got;
  ASSERT_TRUE(read_exactly(c2.fd(), got, 1000));
  EXPECT_EQ(connections.load(), 2);
}

// A client that stops reading fills its socket: the transfer waits for room, many times, and
// still delivers every byte; other clients of the same worker are served meanwhile.
TEST(Splice, ASlowClientGetsEveryByteAndOthersAreServed) {
  const std::string big = pattern(24 << 20);
  RawOrigin origin([&](int fd) {
    for (;;) {
      std::string extra;
      const std::string h = pt::read_head(fd, extra);
      if (h.empty()) return;
      const bool small = h.find("GET /small") == 0;
      if (!pt::write_all(fd, small ? head_for(5) + "hello" : head_for(big.size()) + big)) return;
    }
  });
  auto proxy = std::make_shared<Recording>(origin.addr());
  pt::TestProxy px(proxy, splice_at(1));
  Client slow(px.port(), 10s);
  ASSERT_TRUE(slow.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n"));
  std::string got;
  const std::size_t head = head_for(big.size()).size();
  ASSERT_TRUE(read_exactly(slow.fd(), got, head + 100000));
  // The big transfer is under way and waiting on the slow client: a small request is answered.
  Client other(px.port(), 10s);
  auto r = other.get("/small");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "hello");
  ASSERT_TRUE(read_exactly(slow.fd(), got, head + big.size()));
  EXPECT_TRUE(got.substr(head) == big);
  ASSERT_TRUE(proxy->logged.wait_for(2));
  std::lock_guard lk(proxy->mu);
  EXPECT_GT(proxy->spliced.front() + proxy->spliced.back(), big.size() / 2);
}

// Spliced bytes are counted in the service's metrics.
TEST(Splice, SplicedBytesAreCounted) {
  TwoPartOrigin o(10, 500000);
  auto registry = std::make_shared<portico::observe::Registry>();
  auto proxy = std::make_shared<Recording>(o.origin.addr());
  auto svc = http_proxy_service(proxy, splice_at(1), "splice_it");
  svc->set_metrics_registry(registry);
  ASSERT_TRUE(svc->add_tcp("127.0.0.1:0"));
  Server server(ServerConf{.threads = 1});
  server.add_service(svc);
  ASSERT_TRUE(server.start());
  {
    Client c(svc->local_endpoints().at(0).port(), 10s);
    ASSERT_TRUE(o.fetch(c));
    ASSERT_TRUE(proxy->logged.wait_for(1));
  }
  auto& spliced =
      registry->counter_family("portico_downstream_spliced_body_bytes_total", "", {"service"})
          .with({"splice_it"});
  // Recorded once the request is over, just after the logging hook.
  EXPECT_TRUE(eventually([&] { return spliced.value() >= 500000u; }));
  EXPECT_EQ(spliced.value(), 500000u);
  server.shutdown(false);
  server.wait();
}
