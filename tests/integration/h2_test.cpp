// HTTP/2 toward clients, end to end over real sockets: h2c with prior knowledge and h2 over TLS
// (ALPN), each stream proxied to an HTTP/1.1 origin through the hook pipeline. The client is
// portico's own h2::Session in client mode (h2_client.hpp); cases a well-behaved session will
// not produce are sent as raw frames.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <mutex>
#include <string>

#include <gtest/gtest.h>

#include <portico/testing/tls.hpp>

#include "integration/h2_client.hpp"
#include "integration/helpers.hpp"

namespace itest {
namespace {

using h2test::H2Client;
using h2test::RawConnection;
using h2test::Request;
using ErrorCode = portico::h2::ErrorCode;
using pt::Origin;
using pt::RawOrigin;

constexpr std::uint32_t code(ErrorCode c) { return static_cast<std::uint32_t>(c); }

enum class Wire { H2c, Tls };
void PrintTo(Wire w, std::ostream* os) { *os << (w == Wire::Tls ? "h2 over TLS" : "h2c"); }

/// One throwaway certificate for the whole program (the directory goes at exit).
const pt::TestPki::Issued& certificate() {
  static pt::TestPki pki;
  static const pt::TestPki::Issued cert = pki.issue({"h2.test", "127.0.0.1"});
  return cert;
}

/// An open/closed gate a slow origin waits at; every wait is bounded.
class Gate {
 public:
  void open() {
    std::lock_guard lk(mu_);
    open_ = true;
    cv_.notify_all();
  }
  bool wait(std::chrono::milliseconds t = 10s) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, t, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

void recv_timeout(int fd, int seconds) {
  timeval tv{seconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

/// The request target of a raw request head.
std::string target_of(const std::string& head) {
  auto sp = head.find(' ');
  if (sp == std::string::npos) return {};
  auto sp2 = head.find(' ', sp + 1);
  return head.substr(sp + 1, sp2 - sp - 1);
}

/// Forward that records what each request looked like to the hooks.
class Recording : public Forward {
 public:
  using Forward::Forward;
  task<Result<bool>> request_filter(Session& s, NoCtx&) override {
    std::lock_guard lk(rmu);
    versions.push_back(s.downstream_version());
    co_return false;
  }
  std::vector<Version> seen() {
    std::lock_guard lk(rmu);
    return versions;
  }
  std::mutex rmu;
  std::vector<Version> versions;
};

class H2Proxy : public ::testing::TestWithParam<Wire> {
 protected:
  bool tls() const { return GetParam() == Wire::Tls; }

  /// The proxy under test: h2c on a plain listener, or TLS whose ALPN offers h2.
  template <class P>
  std::unique_ptr<pt::TestProxy> proxy(std::shared_ptr<P> p, HttpServerOptions o = {}) {
    if (tls()) {
      TlsSettings s;
      s.certificates.push_back({certificate().cert_file, certificate().key_file});
      return std::make_unique<pt::TestProxy>(std::move(p), o, 1, s);
    }
    o.h2c = true;
    return std::make_unique<pt::TestProxy>(std::move(p), o, 1);
  }

  H2Client::Options client_options() const {
    H2Client::Options o;
    o.tls = tls();
    return o;
  }
  h2test::Transport::Options raw_options() const {
    h2test::Transport::Options o;
    o.tls = tls();
    o.sni = "h2.test";
    return o;
  }
  Request get(std::string path) const {
    Request r;
    r.path = std::move(path);
    r.scheme = tls() ? "https" : "http";
    return r;
  }
  /// A raw request head block: GET `path`, names exactly as given in `extra`.
  std::string raw_get(const std::string& path, const h2test::Fields& extra = {}) const {
    h2test::Fields f = {{":method", "GET"},
                        {":scheme", tls() ? "https" : "http"},
                        {":authority", "h2.test"},
                        {":path", path}};
    f.insert(f.end(), extra.begin(), extra.end());
    return h2test::literal_block(f);
  }
};

INSTANTIATE_TEST_SUITE_P(H2, H2Proxy, ::testing::Values(Wire::H2c, Wire::Tls),
                         [](const auto& i) { return i.param == Wire::Tls ? "Tls" : "H2c"; });

// ---- the basic exchange --------------------------------------------------------------------------

TEST_P(H2Proxy, GetIsProxiedToAnHttp11Origin) {
  Origin origin([](const pt::OriginRequest&) {
    return pt::OriginResponse{200, {{"X-Origin", "yes"}, {"Cache-Control", "max-age=5"}}, "hello over h2"};
  });
  auto fwd = std::make_shared<Recording>(origin.addr());
  auto px = proxy(fwd);
  H2Client c(px->port(), client_options());
  ASSERT_TRUE(c.connected()) << c.error();
  Request r = get("/a/b?c=d");
  r.authority = "h2.test:8443";
  r.headers = {{"x-client", "1"}, {"accept", "text/plain"}};
  auto s = c.request(r);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->status, 200u);
  EXPECT_EQ(s->body, "hello over h2");
  EXPECT_EQ(s->header("x-origin"), "yes");
  EXPECT_EQ(s->header("cache-control"), "max-age=5");
  EXPECT_TRUE(s->ended);
  EXPECT_FALSE(s->reset);
  // Connection-specific fields never reach an HTTP/2 client.
  EXPECT_FALSE(s->headers.contains("connection"));
  EXPECT_FALSE(s->headers.contains("keep-alive"));
  EXPECT_FALSE(s->headers.contains("transfer-encoding"));

  ASSERT_TRUE(fwd->logged.wait_for(1));
  ASSERT_EQ(fwd->seen().size(), 1u);
  EXPECT_EQ(fwd->seen()[0], Version::Http2);
  auto got = origin.received();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].method, "GET");
  EXPECT_EQ(got[0].target, "/a/b?c=d");
  EXPECT_EQ(got[0].header("Host"), "h2.test:8443") << ":authority becomes Host";
  EXPECT_EQ(got[0].header("x-client"), "1");
  EXPECT_EQ(got[0].header("accept"), "text/plain");

  // The connection serves the next stream too.
  auto again = c.request(get("/second"));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200u);
  EXPECT_EQ(origin.requests(), 2u);
}

TEST_P(H2Proxy, OneMebibytePostArrivesIntactAndIsEchoedIntact) {
  Origin origin([](const pt::OriginRequest& r) { return pt::OriginResponse{200, {}, r.body}; });
  auto px = proxy(std::make_shared<Forward>(origin.addr()));
  H2Client c(px->port(), client_options());
  ASSERT_TRUE(c.connected()) << c.error();
  const std::string body = pattern(1 << 20);  // 4 x the proxy's stream window (256 KiB)
  for (bool with_length : {true, false}) {
    SCOPED_TRACE(with_length ? "content-length" : "no content-length (chunked upstream)");
    Request r = get("/echo");
    r.method = "POST";
    r.body = body;
    if (with_length) r.headers = {{"content-length", std::to_string(body.size())}};
    auto s = c.request(r, 30s);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->status, 200u);
    EXPECT_EQ(s->body.size(), body.size());
    EXPECT_TRUE(s->body == body) << "the echo differs";
    auto got = origin.received();
    ASSERT_FALSE(got.empty());
    EXPECT_EQ(got.back().body.size(), body.size());
    EXPECT_TRUE(got.back().body == body) << "the origin got a different body";
    if (!with_length) EXPECT_EQ(lower(got.back().header("Transfer-Encoding")), "chunked");
  }
}

TEST_P(H2Proxy, HundredConcurrentStreamsOnOneConnection) {
  Origin origin([](const pt::OriginRequest& r) { return pt::OriginResponse{200, {}, "for " + r.target}; });
  auto px = proxy(std::make_shared<Forward>(origin.addr()));
  H2Client c(px->port(), client_options());
  ASSERT_TRUE(c.connected()) << c.error();
  std::vector<std::int32_t> ids;
  for (int i = 0; i < 100; ++i) {
    auto id = c.start(get("/s/" + std::to_string(i)));
    ASSERT_NE(id, 0) << "stream " << i;
    ids.push_back(id);
  }
  ASSERT_TRUE(c.flush());
  EXPECT_EQ(c.session().open_streams(), 100u) << "all 100 were open at once";
  ASSERT_TRUE(c.wait_for(
      [&] { return std::all_of(ids.begin(), ids.end(), [&](auto id) { return c.stream(id).done(); }); },
      30s));
  for (int i = 0; i < 100; ++i) {
    const auto& s = c.stream(ids[i]);
    EXPECT_EQ(s.status, 200u) << i;
    EXPECT_EQ(s.body, "for /s/" + std::to_string(i));
  }
  EXPECT_EQ(origin.requests(), 100u);
  EXPECT_FALSE(c.closed());
}

// ---- trailers ----------------------------------------------------------------------------------

TEST_P(H2Proxy, ResponseTrailersOfAChunkedOriginArriveAsTrailingHeaders) {
  RawOrigin origin([](int fd) {
    recv_timeout(fd, 10);
    std::string extra;
    pt::read_head(fd, extra);
    pt::write_all(fd,
                  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Grpc-Status\r\n\r\n"
                  "5\r\nhello\r\n6\r\n world\r\n0\r\nGrpc-Status: 0\r\nGrpc-Message: fine\r\n\r\n");
  });
  auto px = proxy(std::make_shared<Forward>(origin.addr()));
  H2Client c(px->port(), client_options());
  ASSERT_TRUE(c.connected()) << c.error();
  Request r = get("/");
  r.headers = {{"te", "trailers"}};
  auto s = c.request(r);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->status, 200u);
  EXPECT_EQ(s->body, "hello world");
  ASSERT_TRUE(s->has_trailers);
  EXPECT_EQ(s->trailers.get("grpc-status").value_or("?"), "0");
  EXPECT_EQ(s->trailers.get("grpc-message").value_or("?"), "fine");
  EXPECT_TRUE(s->ended);
  EXPECT_FALSE(s->reset);
}

TEST_P(H2Proxy, RequestTrailersReachTheOriginOnAChunkedBody) {
  std::mutex mu;
  std::string raw;
  Latch done;
  RawOrigin origin([&](int fd) {
    recv_timeout(fd, 10);
    std::string extra;
    std::string all = pt::read_head(fd, extra);
    all += extra;
    char b[4096];
    // Until the last chunk and the empty line after its trailer section; bounded by the timeout.
    for (int i = 0; i < 1000; ++i) {
      auto last = all.find("\r\n0\r\n");
      if (last != std::string::npos && all.find("\r\n\r\n", last + 2) != std::string::npos) break;
      ssize_t n = ::recv(fd, b, sizeof b, 0);
      if (n <= 0) break;
      all.append(b, static_cast<std::size_t>(n));
    }
    {
      std::lock_guard lk(mu);
      raw = all;
    }
    done.add();
    pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
  });
  auto px = proxy(std::make_shared<Forward>(origin.addr()));
  H2Client c(px->port(), client_options());
  ASSERT_TRUE(c.connected()) << c.error();
  Request r = get("/upload");
  r.method = "POST";
  r.headers = {{"te", "trailers"}};
  r.body = "data";
  r.trailers = {{"x-checksum", "abc"}};
  auto s = c.request(r);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->status, 200u);
  EXPECT_EQ(s->body, "ok");
  ASSERT_TRUE(done.wait_for(1));
  std::lock_guard lk(mu);
  const std::string l = lower(raw);
  EXPECT_NE(l.find("transfer-encoding: chunked\r\n"), std::string::npos) << raw;
  EXPECT_NE(l.find("\r\n\r\n4\r\ndata\r\n0\r\nx-checksum: abc\r\n\r\n"), std::string::npos) << raw;
}

// ---- cancellation ------------------------------------------------------------------------------

TEST_P(H2Proxy, ClientResetStopsTheUpstreamAndOtherStreamsGoOn) {
  Latch big_cut;     // the origin could not finish the big body: the proxy closed on it
  Latch big_started;
  RawOrigin origin([&](int fd) {
    recv_timeout(fd, 10);
    std::string extra;
    std::string head = pt::read_head(fd, extra);
    if (target_of(head) != "/big") {
      pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nsmall");
      return;
    }
    constexpr std::size_t kTotal = 64 << 20, kPiece = 64 << 10;
    if (!pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(kTotal) + "\r\n\r\n")) return;
    big_started.add();
    const std::string piece(kPiece, 'b');
    for (std::size_t sent = 0; sent < kTotal; sent += kPiece) {
      if (!pt::write_all(fd, piece)) {
        big_cut.add();
        return;
      }
    }
  });
  auto px = proxy(std::make_shared<Forward>(origin.addr()));
  H2Client c(px->port(), client_options());
  ASSERT_TRUE(c.connected()) << c.error();
  auto id = c.start(get("/big"));
  ASSERT_NE(id, 0);
  ASSERT_TRUE(c.wait_for([&] { return c.stream(id).body.size() >= (256u << 10); }));
  EXPECT_EQ(c.stream(id).status, 200u);
  c.reset(id, ErrorCode::Cancel);
  EXPECT_TRUE(big_cut.wait_for(1)) << "the origin kept sending: the proxy did not stop the upstream";
  EXPECT_FALSE(c.stream(id).ended);

  auto s = c.request(get("/small"));
  ASSERT_TRUE(s) << "the connection stopped serving after a reset";
  EXPECT_EQ(s->status, 200u);
  EXPECT_EQ(s->body, "small");
  EXPECT_FALSE(c.closed());
  EXPECT_TRUE(c.goaways().empty());
}

// ---- limits ------------------------------------------------------------------------------------

/// An origin that answers only once its gate opens; counts the heads it holds.
struct SlowOrigin {
  Gate gate;
  Latch heads;
  RawOrigin origin{[this](int fd) {
    recv_timeout(fd, 10);
    std::string extra;
    std::string head = pt::read_head(fd, extra);
    if (head.empty()) return;
    heads.add();
    if (!gate.wait()) return;
    pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nslow done");
  }};
  ~SlowOrigin() { gate.open(); }
};

TEST_P(H2Proxy, FifthStreamBeforeSettingsAckIsRefused) {
  SlowOrigin slow;
  HttpServerOptions o;
  o.h2.max_concurrent_streams = 4;
  auto px = proxy(std::make_shared<Forward>(slow.origin.addr()), o);
  H2Client::Options co = client_options();
  co.handshake = false;  // the five HEADERS go out before the client ACKs the server's SETTINGS
  H2Client c(px->port(), co);
  ASSERT_TRUE(c.connected()) << c.error();
  std::vector<std::int32_t> ids;
  for (int i = 0; i < 5; ++i) {
    auto id = c.start(get("/slow/" + std::to_string(i)));
    ASSERT_NE(id, 0);
    ids.push_back(id);
  }
  ASSERT_TRUE(c.flush());
  ASSERT_TRUE(c.wait_for([&] { return c.stream(ids[4]).done(); }));
  EXPECT_TRUE(c.stream(ids[4]).reset);
  EXPECT_EQ(c.stream(ids[4]).reset_code, code(ErrorCode::RefusedStream));
  EXPECT_TRUE(c.stream(ids[4]).retry_safe);
  EXPECT_EQ(c.stream(ids[4]).status, 0u);
  ASSERT_TRUE(slow.heads.wait_for(4));
  slow.gate.open();
  ASSERT_TRUE(c.wait_for([&] {
    return std::all_of(ids.begin(), ids.begin() + 4, [&](auto id) { return c.stream(id).done(); });
  }));
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(c.stream(ids[i]).status, 200u) << i;
    EXPECT_EQ(c.stream(ids[i]).body, "slow done") << i;
  }
  EXPECT_EQ(slow.heads.count(), 4) << "the refused stream never went upstream";
  // The connection goes on, and the client now knows the limit.
  EXPECT_EQ(c.session().available_streams(), 4u);
  auto again = c.request(get("/after"));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200u);
  EXPECT_TRUE(c.goaways().empty());
}

TEST_P(H2Proxy, FifthStreamAfterSettingsAckIsAConnectionError) {
  SlowOrigin slow;
  HttpServerOptions o;
  o.h2.max_concurrent_streams = 4;
  auto px = proxy(std::make_shared<Forward>(slow.origin.addr()), o);
  RawConnection c(px->port(), raw_options());
  ASSERT_TRUE(c.connected()) << c.transport().error();
  ASSERT_TRUE(c.handshake());
  EXPECT_EQ(c.server_settings[0x3], 4u) << "SETTINGS_MAX_CONCURRENT_STREAMS";
  std::string four;
  for (std::uint32_t id : {1u, 3u, 5u, 7u})
    four += h2test::frame(h2test::kHeaders, h2test::kEndHeaders | h2test::kEndStream, id, raw_get("/slow"));
  ASSERT_TRUE(c.send(four));
  ASSERT_TRUE(slow.heads.wait_for(4)) << "four streams in flight";
  ASSERT_TRUE(c.send(h2test::frame(h2test::kHeaders, h2test::kEndHeaders | h2test::kEndStream, 9, raw_get("/slow"))));
  // RFC 9113 §5.1.2 allows a stream error (PROTOCOL_ERROR or REFUSED_STREAM); the SETTINGS were
  // acknowledged, so portico (nghttp2) treats it as a connection error: GOAWAY PROTOCOL_ERROR.
  std::optional<h2test::Frame> answer;
  for (int i = 0; i < 100 && !answer; ++i) {
    auto f = c.next(5s);
    if (!f) break;
    if (f->type == h2test::kGoaway || (f->type == h2test::kRstStream && f->stream == 9)) answer = f;
  }
  ASSERT_TRUE(answer) << "no answer to the fifth stream";
  EXPECT_EQ(answer->type, h2test::kGoaway);
  EXPECT_EQ(answer->error_code(), code(ErrorCode::ProtocolError));
  EXPECT_EQ(answer->last_stream(), 7u);
  // Then the connection closes.
  for (int i = 0; i < 100 && !c.eof(); ++i)
    if (!c.next(5s)) break;
  EXPECT_TRUE(c.eof());
  EXPECT_EQ(slow.heads.count(), 4);
}

/// RFC 7541 §4.1 size of the header list `r` sends.
std::size_t list_size(const Request& r) {
  std::size_t n = 0;
  auto add = [&](std::string_view a, std::string_view b) { n += a.size() + b.size() + 32; };
  add(":method", r.method);
  add(":scheme", r.scheme);
  add(":authority", r.authority);
  add(":path", r.path);
  for (const auto& [k, v] : r.headers) add(k, v);
  return n;
}

TEST_P(H2Proxy, HeaderListAtTheLimitPassesOneByteMoreGets431) {
  Origin origin(Origin::text("fine"));
  HttpServerOptions o;
  o.h2.max_header_list_size = 16 * 1024;
  auto px = proxy(std::make_shared<Forward>(origin.addr()), o);
  H2Client c(px->port(), client_options());
  ASSERT_TRUE(c.connected()) << c.error();
  Request r = get("/");
  r.headers = {{"x-big", ""}};
  r.headers[0].second.assign(16 * 1024 - list_size(r), 'v');
  ASSERT_EQ(list_size(r), 16u * 1024);
  auto at = c.request(r);
  ASSERT_TRUE(at);
  EXPECT_EQ(at->status, 200u) << "exactly max_header_list_size";
  EXPECT_EQ(at->body, "fine");

  r.headers[0].second += 'v';
  auto past = c.request(r);
  ASSERT_TRUE(past);
  EXPECT_EQ(past->status, 431u) << "one byte over";
  EXPECT_TRUE(past->body.empty());
  EXPECT_EQ(origin.requests(), 1u) << "the oversized request never went upstream";

  auto next = c.request(get("/next"));
  ASSERT_TRUE(next) << "the connection keeps working";
  EXPECT_EQ(next->status, 200u);
  EXPECT_TRUE(c.goaways().empty());
}

TEST_P(H2Proxy, RapidResetEndsTheConnectionWithEnhanceYourCalm) {
  SlowOrigin slow;  // no stream ever completes on its own: every reset is an early one
  HttpServerOptions o;
  o.h2.max_resets_per_window = 10;
  auto px = proxy(std::make_shared<Forward>(slow.origin.addr()), o);
  H2Client c(px->port(), client_options());
  ASSERT_TRUE(c.connected()) << c.error();
  int pairs = 0;
  // HEADERS then RST_STREAM, each pair acknowledged by a PING round trip (so the count is the
  // server's, not how far ahead the client ran), until the server has had enough.
  while (pairs < 100 && c.goaways().empty() && !c.closed()) {
    auto id = c.start(get("/r/" + std::to_string(pairs)));
    if (id == 0) break;  // our session saw the GOAWAY
    if (!c.flush()) break;
    c.reset(id, ErrorCode::Cancel);
    ++pairs;
    if (!c.ping(5s)) break;  // no ACK: the GOAWAY came instead
  }
  ASSERT_TRUE(c.wait_for([&] { return !c.goaways().empty(); })) << pairs << " pairs";
  EXPECT_EQ(c.goaways().back().code, code(ErrorCode::EnhanceYourCalm));
  EXPECT_EQ(pairs, 11) << "the 11th early reset crosses max_resets_per_window = 10";
  // The reset streams must not keep the connection (and their upstream connections) open.
  EXPECT_TRUE(c.wait_closed(5s)) << "the proxy closes after its GOAWAY";
}

/// An origin that reads a request head, then waits (10 s at most) for the proxy to close.
struct HangingOrigin {
  Latch heads, closed;
  RawOrigin origin{[this](int fd) {
    recv_timeout(fd, 10);
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    heads.add();
    char b[256];
    for (int i = 0; i < 1000; ++i) {
      ssize_t n = ::recv(fd, b, sizeof b, 0);
      if (n == 0) closed.add();
      if (n <= 0) return;
    }
  }};
};

TEST_P(H2Proxy, ResetWhileTheResponseHeadIsAwaitedClosesTheUpstream) {
  HangingOrigin hang;
  auto fwd = std::make_shared<Forward>(hang.origin.addr());
  auto px = proxy(fwd);
  H2Client c(px->port(), client_options());
  ASSERT_TRUE(c.connected()) << c.error();
  // The origin holds the request when the client resets.
  auto id = c.start(get("/held"));
  ASSERT_NE(id, 0);
  ASSERT_TRUE(c.flush());
  ASSERT_TRUE(hang.heads.wait_for(1));
  c.reset(id, ErrorCode::Cancel);
  EXPECT_TRUE(hang.closed.wait_for(1, 5s)) << "the upstream connection stayed open";
  EXPECT_TRUE(fwd->logged.wait_for(1, 5s)) << "the request did not end";
}

TEST_P(H2Proxy, ResetRightAfterTheHeadersEndsTheRequestPromptly) {
  HangingOrigin hang;
  auto fwd = std::make_shared<Forward>(hang.origin.addr());
  auto px = proxy(fwd);
  H2Client c(px->port(), client_options());
  ASSERT_TRUE(c.connected()) << c.error();
  // HEADERS and RST_STREAM back to back: the reset arrives while the stream is still being set
  // up (hooks, upstream connect), before anything was read from the origin.
  auto id = c.start(get("/early"));
  ASSERT_NE(id, 0);
  ASSERT_TRUE(c.flush());
  c.reset(id, ErrorCode::Cancel);
  ASSERT_TRUE(c.ping());
  // The request ends now, not when the upstream read timeout (60 s) passes.
  EXPECT_TRUE(fwd->logged.wait_for(1, 5s)) << "the reset stream is still waiting for its origin";
  EXPECT_TRUE(eventually([&] { return hang.closed.count() == hang.heads.count(); }, 5s))
      << hang.heads.count() << " request(s) reached the origin, " << hang.closed.count()
      << " upstream connection(s) closed";
  EXPECT_FALSE(c.closed());
}

TEST_P(H2Proxy, DataAfterTheClientsResetIsStreamClosedEvenInTheSameRead) {
  // RFC 9113 §5.1: DATA on a stream the client itself reset is a connection error
  // STREAM_CLOSED (h2spec http2/5.1/8). HEADERS, RST_STREAM and DATA in one write, so the proxy
  // gets them in one read, as h2spec's frames arrive when the machine is busy.
  HangingOrigin hang;
  auto px = proxy(std::make_shared<Forward>(hang.origin.addr()));
  RawConnection c(px->port(), raw_options());
  ASSERT_TRUE(c.connected()) << c.transport().error();
  ASSERT_TRUE(c.handshake());
  ASSERT_TRUE(c.send(h2test::frame(h2test::kHeaders, h2test::kEndHeaders, 1, raw_get("/")) +
                     h2test::frame(h2test::kRstStream, 0, 1, std::string("\0\0\0\x08", 4)) +
                     h2test::frame(h2test::kData, h2test::kEndStream, 1, "test")));
  std::optional<h2test::Frame> goaway;
  for (int i = 0; i < 100 && !goaway; ++i) {
    auto f = c.next(3s);
    if (!f) break;
    if (f->type == h2test::kGoaway) goaway = f;
  }
  ASSERT_TRUE(goaway) << "the DATA was ignored";
  EXPECT_EQ(goaway->error_code(), code(ErrorCode::StreamClosed));
}

TEST_P(H2Proxy, MalformedRequestIsResetWithProtocolErrorAndTheConnectionGoesOn) {
  Origin origin(Origin::text("origin"));
  auto px = proxy(std::make_shared<Forward>(origin.addr()));
  {
    // A connection-specific field (RFC 9113 §8.2.2), sent through the session.
    H2Client c(px->port(), client_options());
    ASSERT_TRUE(c.connected()) << c.error();
    Request bad = get("/bad");
    bad.headers = {{"connection", "keep-alive"}};
    auto id = c.start(bad);
    ASSERT_NE(id, 0);
    ASSERT_TRUE(c.wait_done(id));
    EXPECT_TRUE(c.stream(id).reset);
    EXPECT_EQ(c.stream(id).reset_code, code(ErrorCode::ProtocolError));
    EXPECT_EQ(c.stream(id).status, 0u);
    auto ok = c.request(get("/good"));
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->status, 200u);
    EXPECT_EQ(ok->body, "origin");
    EXPECT_TRUE(c.goaways().empty());
  }
  {
    // An upper-case field name (RFC 9113 §8.2.1), in raw frames: the session lowercases names.
    RawConnection c(px->port(), raw_options());
    ASSERT_TRUE(c.connected()) << c.transport().error();
    ASSERT_TRUE(c.handshake());
    const auto flags = static_cast<std::uint8_t>(h2test::kEndHeaders | h2test::kEndStream);
    ASSERT_TRUE(c.send(h2test::frame(h2test::kHeaders, flags, 1, raw_get("/upper", {{"X-Upper", "1"}})) +
                       h2test::frame(h2test::kHeaders, flags, 3, raw_get("/fine"))));
    std::optional<std::uint32_t> rst1;
    bool headers3 = false, end3 = false, goaway = false;
    std::string body3;
    for (int i = 0; i < 100 && !(rst1 && end3); ++i) {
      auto f = c.next(5s);
      if (!f) break;
      if (f->type == h2test::kRstStream && f->stream == 1) rst1 = f->error_code();
      if (f->type == h2test::kGoaway) goaway = true;
      if (f->stream == 3 && f->type == h2test::kHeaders) headers3 = true;
      if (f->stream == 3 && f->type == h2test::kData) body3 += f->payload;
      if (f->stream == 3 && (f->flags & h2test::kEndStream)) end3 = true;
    }
    ASSERT_TRUE(rst1);
    EXPECT_EQ(*rst1, code(ErrorCode::ProtocolError));
    EXPECT_TRUE(headers3);
    EXPECT_TRUE(end3);
    EXPECT_EQ(body3, "origin");
    EXPECT_FALSE(goaway);
    EXPECT_FALSE(c.eof());
  }
  EXPECT_EQ(origin.requests(), 2u) << "only the well-formed requests went upstream";
}

// ---- errors and bodiless responses ---------------------------------------------------------------

TEST_P(H2Proxy, RefusedUpstreamConnectionGives502) {
  auto px = proxy(std::make_shared<Forward>(SocketAddr::loopback(dead_port())));
  H2Client c(px->port(), client_options());
  ASSERT_TRUE(c.connected()) << c.error();
  for (int i = 0; i < 2; ++i) {
    auto s = c.request(get("/"));
    ASSERT_TRUE(s);
    EXPECT_EQ(s->status, 502u);
    EXPECT_TRUE(s->ended);
    EXPECT_FALSE(s->reset);
  }
  EXPECT_FALSE(c.closed());
}

TEST_P(H2Proxy, HeadGetsTheHeadersAndNoBody) {
  Origin origin(Origin::text("hello world"));
  auto px = proxy(std::make_shared<Forward>(origin.addr()));
  H2Client c(px->port(), client_options());
  ASSERT_TRUE(c.connected()) << c.error();
  Request r = get("/");
  r.method = "HEAD";
  auto s = c.request(r);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->status, 200u);
  EXPECT_EQ(s->header("content-length"), "11");
  EXPECT_TRUE(s->body.empty());
  EXPECT_TRUE(s->ended);
  EXPECT_FALSE(s->reset);
  auto g = c.request(get("/"));
  ASSERT_TRUE(g);
  EXPECT_EQ(g->body, "hello world");
}

// ---- connection lifetime -------------------------------------------------------------------------

TEST_P(H2Proxy, GracefulShutdownLetsTheStreamInFlightFinish) {
  SlowOrigin slow;
  auto px = proxy(std::make_shared<Forward>(slow.origin.addr()));
  H2Client c(px->port(), client_options());
  ASSERT_TRUE(c.connected()) << c.error();
  auto id = c.start(get("/slow"));
  ASSERT_NE(id, 0);
  ASSERT_TRUE(c.flush());
  ASSERT_TRUE(slow.heads.wait_for(1));
  px->server().shutdown(true);
  ASSERT_TRUE(c.wait_for([&] { return !c.goaways().empty(); })) << "no GOAWAY on shutdown";
  EXPECT_EQ(c.goaways().front().code, code(ErrorCode::NoError));
  EXPECT_FALSE(c.stream(id).done());
  slow.gate.open();
  ASSERT_TRUE(c.wait_done(id));
  EXPECT_EQ(c.stream(id).status, 200u);
  EXPECT_EQ(c.stream(id).body, "slow done");
  EXPECT_FALSE(c.stream(id).reset);
  EXPECT_TRUE(c.wait_closed()) << "the drained connection closes";
  ASSERT_FALSE(c.goaways().empty());
  EXPECT_EQ(c.goaways().back().code, code(ErrorCode::NoError));
  EXPECT_GE(c.goaways().back().last_stream_id, id) << "the stream in flight was processed";
}

TEST_P(H2Proxy, IdleConnectionIsClosedAfterKeepaliveTimeoutWithGoaway) {
  enum Case { FromTheStart, AfterARequestAndAPing, AfterARequest };
  Origin origin;
  HttpServerOptions o;
  o.keepalive_timeout = 300ms;
  // Also when the idle connection is trimmed first (keepalive_park_after, h2c): the deadline
  // still counts from the last request.
  for (auto park_after : {o.keepalive_park_after, std::chrono::milliseconds(50)})
    for (Case k : {FromTheStart, AfterARequestAndAPing, AfterARequest}) {
      o.keepalive_park_after = park_after;
      auto px = proxy(std::make_shared<Forward>(origin.addr()), o);
      SCOPED_TRACE(k == FromTheStart    ? "idle from the start"
                   : k == AfterARequest ? "idle after a request"
                                        : "idle after a request and a PING");
      SCOPED_TRACE("keepalive_park_after " + std::to_string(park_after.count()) + " ms");
      H2Client c(px->port(), client_options());
      ASSERT_TRUE(c.connected()) << c.error();
      if (k != FromTheStart) {
        auto s = c.request(get("/"));
        ASSERT_TRUE(s);
        EXPECT_EQ(s->status, 200u);
      }
      if (k == AfterARequestAndAPing) ASSERT_TRUE(c.ping());
      const auto t0 = std::chrono::steady_clock::now();
      EXPECT_TRUE(c.wait_closed(3s)) << "the idle connection stayed open";
      const auto idle = std::chrono::steady_clock::now() - t0;
      ASSERT_FALSE(c.goaways().empty());
      EXPECT_EQ(c.goaways().back().code, code(ErrorCode::NoError));
      EXPECT_GE(idle, 200ms);
    }
}

// ---- HTTP/1.1 next to h2c --------------------------------------------------------------------------

TEST(H2cListener, Http11ClientIsStillServed) {
  Origin origin(Origin::text("plain"));
  HttpServerOptions o;
  o.h2c = true;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), o);
  pt::Client c(px.port());
  for (int i = 0; i < 2; ++i) {  // keep-alive, and a request line starting like "PRI" would not
    auto r = c.request(i ? "PUT" : "GET", "/x", {}, i ? "b" : "");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200u);
    EXPECT_EQ(r->body, "plain");
  }
  // And an h2c client on the same listener.
  H2Client h(px.port());
  ASSERT_TRUE(h.connected()) << h.error();
  Request rq;
  rq.scheme = "http";
  auto s = h.request(rq);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->body, "plain");
  EXPECT_EQ(origin.requests(), 3u);
}

/// Sends `bytes` on a fresh plain connection and reads until the server closes (or 5 s pass).
struct Answer {
  std::string bytes;
  bool closed = false;
};
Answer send_and_read_all(std::uint16_t port, const std::string& bytes) {
  Answer a;
  h2test::Transport t(port, {});
  if (!t.connected() || !t.write(bytes)) return a;
  char b[4096];
  for (int i = 0; i < 1000; ++i) {
    long n = t.read_some(b, sizeof b, 5s);
    if (n < 0) {
      a.closed = true;
      break;
    }
    if (n == 0) break;
    a.bytes.append(b, static_cast<std::size_t>(n));
  }
  return a;
}

TEST(H2cListener, WithoutH2cThePrefaceIsNotHttp2) {
  Origin origin;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));  // h2c off (the default)
  auto a = send_and_read_all(px.port(), std::string(h2test::kClientPreface) + h2test::settings_frame({}));
  EXPECT_TRUE(a.closed) << "the connection stays open";
  // An HTTP/1.1 error response, not a SETTINGS frame.
  EXPECT_EQ(a.bytes.rfind("HTTP/1.1 400", 0), 0u) << a.bytes;
  EXPECT_EQ(origin.requests(), 0u);
}

TEST(H2cListener, AnythingButThePrefaceIsHttp11) {
  // h2spec's http2/3.5/2 ("invalid connection preface") over h2c: not HTTP/2, so HTTP/1.1 with a
  // 400 and a close (run_h2spec.sh allows that case to fail over h2c for this reason).
  Origin origin;
  HttpServerOptions o;
  o.h2c = true;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), o);
  auto a = send_and_read_all(px.port(), "INVALID CONNECTION PREFACE\r\n\r\n");
  EXPECT_TRUE(a.closed);
  EXPECT_EQ(a.bytes.rfind("HTTP/1.1 400", 0), 0u) << a.bytes;
  // A preface that goes wrong after "PRI * HTTP/2.0": not HTTP/2, and no HTTP/1.1 request.
  // The HTTP/1 parser recognises the preface line: 400, with a log line saying so.
  auto b = send_and_read_all(px.port(), "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n");
  EXPECT_TRUE(b.closed);
  EXPECT_EQ(b.bytes.rfind("HTTP/1.1 400", 0), 0u) << b.bytes;
  EXPECT_EQ(origin.requests(), 0u);
}

}  // namespace
}  // namespace itest

