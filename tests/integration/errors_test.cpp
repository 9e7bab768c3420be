// What the client gets when something fails, and that the worker keeps serving.
#include "integration/helpers.hpp"

using namespace itest;
using portico::testing::Client;
using portico::testing::Origin;
using portico::testing::RawOrigin;

namespace {
/// A proxy whose hooks fail in configurable ways.
/// Forward, with hooks that fail according to the request path; logging is Forward's.
class Faulty : public Forward {
 public:
  using Forward::Forward;

  task<Result<bool>> request_filter(Session& s, NoCtx&) override {
    if (s.req_header().path() == "/throw") throw std::runtime_error("boom from request_filter");
    if (s.req_header().path() == "/status") co_return Error::http_status(403, "forbidden path");
    if (s.req_header().path() == "/plain")
      co_return Error(ErrorType::InternalError, ErrorSource::Unset);
    co_return false;
  }
  task<Result<HttpPeerPtr>> upstream_peer(Session& s, NoCtx& ctx) override {
    if (s.req_header().path() == "/nopeer") co_return nullptr;
    if (s.req_header().path() == "/peererror")
      co_return Error::upstream(ErrorType::ConnectNoRoute, "no backend is healthy");
    co_return co_await Forward::upstream_peer(s, ctx);
  }
};
}  // namespace

TEST(Errors, ConnectionRefusedGives502WithShortBody) {
  pt::TestProxy px(std::make_shared<Forward>(SocketAddr::loopback(dead_port())));
  Client c(px.port());
  auto r = c.get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 502u);
  EXPECT_EQ(r->body, "502 Bad Gateway\n");
  EXPECT_EQ(r->header("Connection"), "close");
}

TEST(Errors, NoPeerGives502) {
  Origin origin;
  auto f = std::make_shared<Faulty>(origin.addr());
  pt::TestProxy px(f);
  for (auto path : {"/nopeer", "/peererror"}) {
    Client c(px.port());
    auto r = c.get(path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 502u) << path;
  }
}

TEST(Errors, HookErrorUsesItsStatusElse500) {
  Origin origin;
  auto f = std::make_shared<Faulty>(origin.addr());
  pt::TestProxy px(f);
  {
    Client c(px.port());
    auto r = c.get("/status");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403u);
  }
  {
    Client c(px.port());
    auto r = c.get("/plain");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 500u);
  }
  EXPECT_EQ(origin.requests(), 0u);
}

TEST(Errors, ThrowingHookGives500AndTheWorkerLivesOn) {
  Origin origin(Origin::text("still alive"));
  auto f = std::make_shared<Faulty>(origin.addr());
  pt::TestProxy px(f);
  for (int i = 0; i < 3; ++i) {
    Client c(px.port());
    auto r = c.get("/throw");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 500u);
  }
  ASSERT_TRUE(f->logged.wait_for(3));
  {
    std::lock_guard lk(f->mu);
    ASSERT_TRUE(f->last_error);
    EXPECT_EQ(f->last_error->type(), ErrorType::HookPanic);
    EXPECT_NE(f->last_error->context().find("boom from request_filter"), std::string_view::npos);
  }
  Client c(px.port());
  auto r = c.get("/fine");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "still alive");
}

TEST(Errors, UpstreamClosingMidBodyClosesTheClientConnection) {
  RawOrigin origin([](int fd) {
    std::string extra;
    pt::read_head(fd, extra);
    pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + std::string(30000, 'x'));
  });
  auto fwd = std::make_shared<Forward>(origin.addr());
  pt::TestProxy px(fwd);
  Client c(px.port());
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  std::string got = read_until_close(c.fd());
  auto body_at = got.find("\r\n\r\n");
  ASSERT_NE(body_at, std::string::npos);
  EXPECT_NE(got.find("Content-Length: 100000"), std::string::npos);
  EXPECT_EQ(got.size() - body_at - 4, 30000u) << "the truncation is visible: fewer bytes, then close";
  ASSERT_TRUE(fwd->logged.wait_for(1));
  std::lock_guard lk(fwd->mu);
  ASSERT_TRUE(fwd->last_error);
  EXPECT_EQ(fwd->last_error->source(), ErrorSource::Upstream);
}

TEST(Errors, UpstreamClosingMidChunkedBodyNeverSendsTheLastChunk) {
  RawOrigin origin([](int fd) {
    std::string extra;
    pt::read_head(fd, extra);
    pt::write_all(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
  });
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  std::string got = read_until_close(c.fd());
  EXPECT_NE(got.find("hello"), std::string::npos);
  EXPECT_EQ(got.find("0\r\n\r\n"), std::string::npos) << got;
}

TEST(Errors, UpstreamReadTimeoutGives504) {
  RawOrigin origin([](int fd) {
    std::string extra;
    pt::read_head(fd, extra);
    char b;
    ::recv(fd, &b, 1, 0);  // never answers; returns when the proxy gives up
  });
  auto peer = std::make_shared<HttpPeer>(origin.addr(), false);
  peer->options.read_timeout = std::chrono::milliseconds(200);
  pt::TestProxy px(std::make_shared<Forward>(HttpPeerPtr(peer)));
  Client c(px.port());
  const auto t0 = std::chrono::steady_clock::now();
  auto r = c.get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
}

TEST(Errors, ConnectTimeoutGives502) {
  // A listener whose backlog is full never completes new handshakes.
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::listen(lfd, 0);
  socklen_t len = sizeof a;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  std::vector<int> fillers;
  for (int i = 0; i < 8; ++i) {
    int f = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ::connect(f, reinterpret_cast<sockaddr*>(&a), sizeof a);
    fillers.push_back(f);
  }
  auto peer = std::make_shared<HttpPeer>(SocketAddr::loopback(ntohs(a.sin_port)), false);
  peer->options.connection_timeout = std::chrono::milliseconds(150);
  HttpServerOptions o;
  o.max_retries = 1;
  auto fwd = std::make_shared<Forward>(HttpPeerPtr(peer));
  pt::TestProxy px(fwd, o);
  Client c(px.port());
  auto r = c.get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 502u);
  ASSERT_TRUE(fwd->logged.wait_for(1));
  {
    std::lock_guard lk(fwd->mu);
    ASSERT_TRUE(fwd->last_error);
    EXPECT_EQ(fwd->last_error->type(), ErrorType::ConnectTimedout);
  }
  for (int f : fillers) ::close(f);
  ::close(lfd);
}

TEST(Errors, IdleKeepAliveClientIsClosedAfterTheTimeout) {
  Origin origin;
  HttpServerOptions o;
  o.keepalive_timeout = std::chrono::milliseconds(200);
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), o);
  Client c(px.port(), 5s);
  ASSERT_TRUE(c.get("/"));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s);
}

TEST(Errors, SlowHeaderIsCutAtTheHeaderTimeout) {
  Origin origin;
  HttpServerOptions o;
  o.header_read_timeout = std::chrono::milliseconds(200);
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), o);
  Client c(px.port(), 5s);
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHo"));
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_EQ(origin.requests(), 0u);
}

TEST(Errors, OversizedHeaderGets431AtTheLimitItPasses) {
  Origin origin;
  HttpServerOptions o;
  o.max_header_bytes = 1024;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), o);
  const std::string head = "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ";
  {
    Client c(px.port());
    ASSERT_TRUE(c.send(head + std::string(1024 - head.size() - 4, 'p') + "\r\n\r\n"));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200u);
  }
  {
    Client c(px.port());
    ASSERT_TRUE(c.send(head + std::string(1024 - head.size() - 3, 'p') + "\r\n\r\n"));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 431u);
  }
  EXPECT_EQ(origin.requests(), 1u);
}

TEST(Errors, SmuggledRequestBehindConflictingFramingNeverReachesTheOrigin) {
  Origin origin;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  ASSERT_TRUE(c.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400u);
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_EQ(origin.requests(), 0u);
}

TEST(Errors, ConnectMethodIsRefusedWith405) {
  Origin origin;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  Client c(px.port());
  ASSERT_TRUE(c.send("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405u);
  EXPECT_EQ(origin.requests(), 0u);
}

TEST(Errors, ClientGoneMidUploadClosesUpstreamAndLogs) {
  std::atomic<bool> origin_eof{false};
  RawOrigin origin([&](int fd) {
    std::string extra;
    pt::read_head(fd, extra);
    char b[4096];
    while (::recv(fd, b, sizeof b, 0) > 0) {
    }
    origin_eof = true;
  });
  auto fwd = std::make_shared<Forward>(origin.addr());
  pt::TestProxy px(fwd);
  {
    Client c(px.port());
    ASSERT_TRUE(c.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n" + std::string(5000, 'u')));
  }
  ASSERT_TRUE(fwd->logged.wait_for(1));
  std::lock_guard lk(fwd->mu);
  ASSERT_TRUE(fwd->last_error);
  EXPECT_EQ(fwd->last_error->source(), ErrorSource::Downstream);
  EXPECT_EQ(fwd->last_error->type(), ErrorType::PrematureBodyEnd);
}

// A client that leaves while the upstream is still thinking: the exchange is cancelled at
// once (not at the upstream read timeout), the upstream connection is closed, logging runs.
class ClientGoneBeforeResponse : public ::testing::TestWithParam<bool> {};

TEST_P(ClientGoneBeforeResponse, CancelsTheUpstreamExchange) {
  const bool with_body = GetParam();
  Latch got_request, origin_eof;
  RawOrigin origin([&](int fd) {
    std::string extra;
    pt::read_head(fd, extra);
    got_request.add();
    char b[4096];
    while (::recv(fd, b, sizeof b, 0) > 0) {  // never answers; waits for the proxy to close
    }
    origin_eof.add();
  });
  auto peer = std::make_shared<HttpPeer>(origin.addr(), false);
  peer->options.read_timeout = 30s;
  auto fwd = std::make_shared<Forward>(HttpPeerPtr(peer));
  pt::TestProxy px(fwd);
  const auto t0 = std::chrono::steady_clock::now();
  {
    Client c(px.port());
    ASSERT_TRUE(c.send(with_body ? "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                                 : "GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    // The request reached the origin before the client leaves.
    ASSERT_TRUE(got_request.wait_for(1));
  }
  ASSERT_TRUE(origin_eof.wait_for(1, 10s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s) << "cancelled, not timed out";
  ASSERT_TRUE(fwd->logged.wait_for(1));
  std::lock_guard lk(fwd->mu);
  ASSERT_TRUE(fwd->last_error);
  EXPECT_EQ(fwd->last_error->source(), ErrorSource::Downstream);
  EXPECT_EQ(fwd->last_error->type(), ErrorType::ConnectionClosed);
  EXPECT_EQ(fwd->last_retries, 0u);
}

INSTANTIATE_TEST_SUITE_P(Errors, ClientGoneBeforeResponse, ::testing::Bool(),
                         [](const auto& i) { return i.param ? "WithBody" : "WithoutBody"; });

// The client watch covers the wait for the response head only: a client that leaves in the
// middle of the body is a failed write to the client, never an upstream read error.
TEST(Errors, ClientGoneMidBodyIsADownstreamError) {
  for (int round = 0; round < 20; ++round) {
    RawOrigin origin([](int fd) {
      std::string extra;
      pt::read_head(fd, extra);
      const std::size_t total = 64u << 20;
      if (!pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(total) + "\r\n\r\n"))
        return;
      std::string block(64 * 1024, 'b');
      for (std::size_t sent = 0; sent < total; sent += block.size())
        if (!pt::write_all(fd, block)) return;
    });
    auto fwd = std::make_shared<Forward>(origin.addr());
    pt::TestProxy px(fwd);
    {
      Client c(px.port());
      ASSERT_TRUE(c.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n"));
      char buf[1024];
      ASSERT_GT(::recv(c.fd(), buf, sizeof buf, 0), 0);
      ::shutdown(c.fd(), SHUT_RDWR);
    }
    ASSERT_TRUE(fwd->logged.wait_for(1, 30s));
    std::lock_guard lk(fwd->mu);
    ASSERT_TRUE(fwd->last_error);
    EXPECT_EQ(fwd->last_error->source(), ErrorSource::Downstream) << "round " << round << ": "
                                                                  << fwd->last_error->to_string();
  }
}
