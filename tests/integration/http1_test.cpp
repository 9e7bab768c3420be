// HTTP/1.1 features beyond the basic exchange: replayed retries, upgrades, CONNECT, trailers,
// forwarding fields.
#include "integration/helpers.hpp"

#include <portico/proxy/forwarded.hpp>

using namespace itest;
using portico::testing::Client;
using portico::testing::Origin;
using portico::testing::RawOrigin;

namespace {
/// Reads exactly `n` bytes (or until EOF/timeout); returns what arrived.
std::string read_n(int fd, std::size_t n) {
  std::string out;
  char b[4096];
  while (out.size() < n) {
    ssize_t k = ::recv(fd, b, std::min(sizeof b, n - out.size()), 0);
    if (k <= 0) break;
    out.append(b, static_cast<std::size_t>(k));
  }
  return out;
}

/// Echoes every byte it receives after answering the request head with `head`.
RawOrigin::Fn echo_after(std::string head) {
  return [head](int fd) {
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    if (!pt::write_all(fd, head)) return;
    if (!extra.empty() && !pt::write_all(fd, extra)) return;
    char b[4096];
    for (;;) {
      ssize_t n = ::recv(fd, b, sizeof b, 0);
      if (n <= 0) return;
      if (!pt::write_all(fd, std::string_view(b, static_cast<std::size_t>(n)))) return;
    }
  };
}

/// An origin whose connections die right after one response, and which echoes bodies.
RawOrigin::Fn one_shot_echo(std::atomic<int>& bodies_seen) {
  return [&bodies_seen](int fd) {
    std::string extra;
    std::string head = pt::read_head(fd, extra);
    if (head.empty()) return;
    auto cl = head.find("Content-Length: ");
    std::size_t len = cl == std::string::npos ? 0 : std::stoul(head.substr(cl + 16));
    std::string body = extra + read_n(fd, len - std::min(len, extra.size()));
    if (body.size() != len) return;
    if (len > 0) ++bodies_seen;
    pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  };
}
}  // namespace

TEST(Http1, PostBodyIsReplayedWhenAPooledConnectionTurnsOutDead) {
  std::atomic<int> bodies{0};
  RawOrigin origin(one_shot_echo(bodies));
  auto fwd = std::make_shared<Forward>(origin.addr());
  pt::TestProxy px(fwd);
  Client c(px.port());
  ASSERT_TRUE(c.get("/warm-the-pool") || true);
  const std::string body(20000, 'r');
  for (int i = 0; i < 3; ++i) {
    auto r = c.request("POST", "/p", {}, body);
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->status, 200u) << i;
    EXPECT_TRUE(r->body == body) << i;
  }
  ASSERT_TRUE(fwd->logged.wait_for(4));
  std::lock_guard lk(fwd->mu);
  EXPECT_FALSE(fwd->last_error.has_value());
}

TEST(Http1, BodyLargerThanTheRetryBufferIsNotReplayed) {
  std::atomic<int> bodies{0};
  RawOrigin origin(one_shot_echo(bodies));
  HttpServerOptions o;
  o.retry_buffer_bytes = 1000;
  auto fwd = std::make_shared<Forward>(origin.addr());
  pt::TestProxy px(fwd, o);
  Client c(px.port());
  ASSERT_TRUE(c.get("/warm"));  // leaves a connection the origin already closed in the pool
  ASSERT_TRUE(fwd->logged.wait_for(1));
  auto r = c.request("POST", "/p", {}, std::string(5000, 'x'));
  // Either the dead connection was detected before the body flowed (then a fresh attempt
  // succeeds), or the body was partly sent: then it cannot be replayed and the answer is 502.
  ASSERT_TRUE(r);
  if (r->status == 200) {
    EXPECT_EQ(r->body, std::string(5000, 'x'));
  } else {
    EXPECT_EQ(r->status, 502u);
    EXPECT_EQ(bodies.load(), 0);
  }
}

TEST(Http1, WebsocketUpgradeBecomesATunnel) {
  RawOrigin origin(echo_after(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"));
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  ASSERT_TRUE(c.send("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"));
  std::string extra;
  std::string head = pt::read_head(c.fd(), extra);
  ASSERT_EQ(head.rfind("HTTP/1.1 101", 0), 0u) << head;
  EXPECT_NE(head.find("Upgrade: websocket"), std::string::npos) << head;
  EXPECT_NE(head.find("Connection: upgrade"), std::string::npos) << head;
  for (const std::string& msg : std::vector<std::string>{"first frame", "second", std::string(100000, 'w')}) {
    ASSERT_TRUE(c.send(msg));
    std::string got = extra + read_n(c.fd(), msg.size() - extra.size());
    extra.clear();
    EXPECT_TRUE(got == msg) << msg.size();
  }
  ::shutdown(c.fd(), SHUT_WR);
  EXPECT_TRUE(c.closed_by_peer()) << "the client's close reaches the origin, whose close comes back";
}

TEST(Http1, DeclinedUpgradeIsAnOrdinaryResponse) {
  Origin origin([](const pt::OriginRequest& r) {
    return pt::OriginResponse{200, {}, r.has_header("upgrade") ? "asked" : "plain"};
  });
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  auto r = c.request("GET", "/", {{"Upgrade", "h2c"}, {"Connection", "Upgrade"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(r->body, "asked");
  auto again = c.get("/");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->body, "plain");
}

namespace {
/// Sends CONNECT requests to the host:port they name.
class Tunneler : public ProxyHttp<> {
 public:
  task<Result<HttpPeerPtr>> upstream_peer(Session& s, NoCtx&) override {
    auto a = SocketAddr::parse(s.req_header().uri());
    if (!a) co_return Error::http_status(400, "CONNECT target is not IP:port");
    co_return make_peer(*a);
  }
};
}  // namespace

TEST(Http1, AllowedConnectTunnelsBytes) {
  RawOrigin origin([](int fd) {
    char b[4096];
    for (;;) {
      ssize_t n = ::recv(fd, b, sizeof b, 0);
      if (n <= 0) return;
      if (!pt::write_all(fd, std::string_view(b, static_cast<std::size_t>(n)))) return;
    }
  });
  HttpServerOptions o;
  o.allow_connect_method = true;
  pt::TestProxy px(std::make_shared<Tunneler>(), o);
  Client c(px.port());
  const std::string target = origin.addr().to_string();
  ASSERT_TRUE(c.send("CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\nearly bytes"));
  std::string extra;
  std::string head = pt::read_head(c.fd(), extra);
  EXPECT_EQ(head.rfind("HTTP/1.1 200", 0), 0u) << head;
  std::string got = extra + read_n(c.fd(), 11 - extra.size());
  EXPECT_EQ(got, "early bytes");
  ASSERT_TRUE(c.send("more"));
  EXPECT_EQ(read_n(c.fd(), 4), "more");
}

TEST(Http1, RequestTrailersAreForwardedOnChunkedBodies) {
  std::mutex mu;
  std::string raw;
  Latch done;
  RawOrigin origin([&](int fd) {
    std::string extra;
    std::string head = pt::read_head(fd, extra);
    std::string all = head + extra;
    char b[4096];
    while (all.find("\r\n0\r\n") == std::string::npos || all.rfind("\r\n\r\n") <= all.find("\r\n0\r\n")) {
      ssize_t n = ::recv(fd, b, sizeof b, 0);
      if (n <= 0) break;
      all.append(b, static_cast<std::size_t>(n));
    }
    {
      std::lock_guard lk(mu);
      raw = all;
    }
    done.add();
    pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  });
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  ASSERT_TRUE(c.send("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n"
                     "4\r\ndata\r\n0\r\nX-Checksum: abc\r\n\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  ASSERT_TRUE(done.wait_for(1));
  std::lock_guard lk(mu);
  EXPECT_NE(raw.find("4\r\ndata\r\n0\r\nX-Checksum: abc\r\n\r\n"), std::string::npos) << raw;
  EXPECT_NE(raw.find("TE: trailers"), std::string::npos) << raw;
}

namespace {
/// Forwards; the logging hook of the n-th request waits (blocking its worker, at most 10 s)
/// until the test has released n requests.
class HeldLogging : public Forward {
 public:
  using Forward::Forward;
  task<void> logging(Session& s, const Error* e, NoCtx& c) override {
    {
      std::unique_lock lk(mu_);
      const int me = entered_++;
      cv_.wait_for(lk, 10s, [&] { return released_ > me; });
    }
    co_await Forward::logging(s, e, c);
  }
  void release() {
    std::lock_guard lk(mu_);
    ++released_;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int entered_ = 0;
  int released_ = 0;
};

/// The next read on `fd` finds the end of the stream (not data, not a reset, not the timeout).
bool eof_next(int fd) {
  char c;
  return ::recv(fd, &c, 1, 0) == 0;
}
}  // namespace

// A response after which the connection closes ends with its connection: the half-close follows
// its last bytes at once (the FIN goes in their segment), so the client sees the end while the
// logging hook still runs, not after it. For each way a response can end a connection.
TEST(Http1, AClosingConnectionEndsWithItsResponseNotAfterLogging) {
  Origin origin([](const portico::testing::OriginRequest& q) {
    portico::testing::OriginResponse r;
    r.body = q.target;
    return r;
  });
  auto app = std::make_shared<HeldLogging>(origin.addr());
  pt::TestProxy px(app);
  struct Case {
    const char* what;
    std::string request;
    bool head;
    unsigned status;
    std::string body;
  };
  const Case cases[] = {
      {"Connection: close", "GET /close HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false,
       200, "/close"},
      {"HTTP/1.0", "GET /old HTTP/1.0\r\nHost: x\r\n\r\n", false, 200, "/old"},
      {"HEAD with Connection: close", "HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
       true, 200, ""},
      {"an error answered by the proxy", "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", false, 400,
       "400 Bad Request\n"},
  };
  int n = 0;
  for (const Case& k : cases) {
    SCOPED_TRACE(k.what);
    Client c(px.port(), 3s);
    ASSERT_TRUE(c.send(k.request));
    auto r = c.read_response(k.head);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, k.status);
    EXPECT_EQ(r->body, k.body);
    EXPECT_TRUE(eof_next(c.fd())) << "the end of the response must not wait for logging";
    EXPECT_EQ(app->logged.count(), n) << "logging is still held";
    app->release();
    ASSERT_TRUE(app->logged.wait_for(++n));
  }
  // A keep-alive connection stays open across the held logging of its first request.
  Client c(px.port(), 3s);
  ASSERT_TRUE(c.send("GET /one HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r1 = c.read_response();
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->body, "/one");
  app->release();
  ASSERT_TRUE(app->logged.wait_for(++n));
  app->release();
  auto r2 = c.get("/two");
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->body, "/two");
  ASSERT_TRUE(app->logged.wait_for(++n));
}

TEST(Http1, ResponseTrailersReachChunkedClients) {
  RawOrigin origin([](int fd) {
    std::string extra;
    pt::read_head(fd, extra);
    pt::write_all(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nGrpc-Status: 0\r\n\r\n");
  });
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n"));
  std::string extra;
  std::string head = pt::read_head(c.fd(), extra);
  std::string rest = extra;
  char b[1024];
  while (rest.find("\r\n\r\n") == std::string::npos) {
    ssize_t n = ::recv(c.fd(), b, sizeof b, 0);
    if (n <= 0) break;
    rest.append(b, static_cast<std::size_t>(n));
  }
  EXPECT_EQ(rest, "2\r\nhi\r\n0\r\nGrpc-Status: 0\r\n\r\n");
}

namespace {
class Forwarding : public Forward {
 public:
  using Forward::Forward;
  task<Result<void>> upstream_request_filter(Session& s, RequestHeader& req, NoCtx&) override {
    add_forwarded_headers(s, req);
    add_via(req.headers(), "portico");
    co_return ok();
  }
};
}  // namespace

TEST(Http1, ForwardingFieldsAreAddedOnRequest) {
  Origin origin;
  pt::TestProxy px(std::make_shared<Forwarding>(origin.addr()));
  Client c(px.port());
  auto r = c.request("GET", "/", {{"Host", "site.example"}, {"X-Forwarded-For", "203.0.113.7"},
                                  {"Via", "1.0 edge"}});
  ASSERT_TRUE(r);
  auto seen = origin.received();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].header("X-Forwarded-For"), "203.0.113.7, 127.0.0.1");
  EXPECT_EQ(seen[0].header("X-Forwarded-Proto"), "http");
  EXPECT_EQ(seen[0].header("X-Forwarded-Host"), "site.example");
  EXPECT_EQ(seen[0].header("Via"), "1.0 edge, 1.1 portico");
}
