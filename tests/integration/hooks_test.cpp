// The exact hook sequence in each of the lifecycle's main paths.
#include "integration/helpers.hpp"

#include <portico/testing/fake_session.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

using namespace itest;
using portico::testing::Client;
using portico::testing::Origin;

namespace {

struct Ctx {
  int attempts = 0;
};

/// Records every hook it sees; behaviour is switched by flags.
class Recorder : public ProxyHttp<Ctx> {
 public:
  std::vector<HttpPeerPtr> peers;  // the peer for attempt i (the last one repeats)
  bool answer_in_request_filter = false;
  bool fail_in_response_filter = false;

  Ctx new_ctx() override {
    rec("new_ctx");
    return {};
  }
  task<Result<void>> early_request_filter(Session&, Ctx&) override {
    rec("early_request_filter");
    co_return ok();
  }
  task<Result<bool>> request_filter(Session& s, Ctx&) override {
    rec("request_filter");
    if (answer_in_request_filter) {
      co_await s.respond(403, "denied by request_filter");
      co_return true;
    }
    co_return false;
  }
  task<Result<HttpPeerPtr>> upstream_peer(Session& s, Ctx& c) override {
    rec("upstream_peer");
    ++c.attempts;
    co_return peers[std::min<std::size_t>(s.retries(), peers.size() - 1)];
  }
  Error fail_to_connect(Session&, const HttpPeer&, Ctx&, Error e) override {
    rec("fail_to_connect");
    return e;
  }
  task<Result<void>> connected_to_upstream(Session&, const ConnectionInfo&, Ctx&) override {
    rec("connected_to_upstream");
    co_return ok();
  }
  task<Result<void>> upstream_request_filter(Session&, RequestHeader&, Ctx&) override {
    rec("upstream_request_filter");
    co_return ok();
  }
  Result<void> request_body_filter(Session&, BodyChunk&, bool end, Ctx&) override {
    if (end) rec("request_body_filter(end)");
    return ok();
  }
  Result<void> upstream_response_filter(Session&, ResponseHeader&, Ctx&) override {
    rec("upstream_response_filter");
    return ok();
  }
  task<Result<void>> response_filter(Session&, ResponseHeader&, Ctx&) override {
    rec("response_filter");
    if (fail_in_response_filter) co_return Error::http_status(418, "teapot");
    co_return ok();
  }
  Result<void> response_body_filter(Session&, BodyChunk&, bool end, Ctx&) override {
    if (end) rec("response_body_filter(end)");
    return ok();
  }
  Error error_while_proxy(const HttpPeer& p, Session& s, Error e, Ctx& c, bool reused) override {
    rec("error_while_proxy");
    return ProxyHttp<Ctx>::error_while_proxy(p, s, std::move(e), c, reused);
  }
  task<FailToProxy> fail_to_proxy(Session& s, const Error& e, Ctx& c) override {
    rec("fail_to_proxy");
    return ProxyHttp<Ctx>::fail_to_proxy(s, e, c);
  }
  task<void> logging(Session& s, const Error* e, Ctx& c) override {
    {
      std::lock_guard lk(mu);
      events.push_back(e ? "logging(" + std::string(to_string(e->type())) + ")" : "logging");
      attempts = c.attempts;
      status = s.response_status();
    }
    done.add();
    co_return;
  }

  std::vector<std::string> take() {
    std::lock_guard lk(mu);
    return std::exchange(events, {});
  }

  std::mutex mu;
  std::vector<std::string> events;
  int attempts = 0;
  std::uint16_t status = 0;
  Latch done;

 private:
  void rec(std::string s) {
    std::lock_guard lk(mu);
    events.push_back(std::move(s));
  }
};

using V = std::vector<std::string>;

}  // namespace

TEST(HookOrder, NormalRequest) {
  Origin origin(Origin::text("fine"));
  auto p = std::make_shared<Recorder>();
  p->peers = {make_peer(origin.addr())};
  pt::TestProxy px(p);
  Client c(px.port());
  auto r = c.get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "fine");
  ASSERT_TRUE(p->done.wait_for(1));
  EXPECT_EQ(p->take(), (V{"new_ctx", "early_request_filter", "request_filter", "upstream_peer",
                          "connected_to_upstream", "upstream_request_filter",
                          "request_body_filter(end)", "upstream_response_filter", "response_filter",
                          "response_body_filter(end)", "logging"}));
}

TEST(HookOrder, RequestFilterAnswersItself) {
  auto p = std::make_shared<Recorder>();
  p->peers = {make_peer(SocketAddr::loopback(dead_port()))};
  p->answer_in_request_filter = true;
  pt::TestProxy px(p);
  Client c(px.port());
  auto r = c.get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403u);
  EXPECT_EQ(r->body, "denied by request_filter");
  ASSERT_TRUE(p->done.wait_for(1));
  EXPECT_EQ(p->take(), (V{"new_ctx", "early_request_filter", "request_filter", "logging"}));
  // The exchange was framed, so the connection serves the next request.
  auto again = c.get("/");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 403u);
}

TEST(HookOrder, ConnectFailureThenSuccessfulRetry) {
  Origin origin(Origin::text("second try"));
  auto p = std::make_shared<Recorder>();
  p->peers = {make_peer(SocketAddr::loopback(dead_port())), make_peer(origin.addr())};
  pt::TestProxy px(p);
  Client c(px.port());
  auto r = c.get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(r->body, "second try");
  ASSERT_TRUE(p->done.wait_for(1));
  EXPECT_EQ(p->take(),
            (V{"new_ctx", "early_request_filter", "request_filter", "upstream_peer",
               "fail_to_connect", "upstream_peer", "connected_to_upstream",
               "upstream_request_filter", "request_body_filter(end)", "upstream_response_filter",
               "response_filter", "response_body_filter(end)", "logging"}));
  EXPECT_EQ(p->attempts, 2);
}

TEST(HookOrder, ConnectFailuresExhaustRetriesThen502) {
  auto p = std::make_shared<Recorder>();
  p->peers = {make_peer(SocketAddr::loopback(dead_port()))};
  HttpServerOptions o;
  o.max_retries = 2;
  pt::TestProxy px(p, o);
  Client c(px.port());
  auto r = c.get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 502u);
  EXPECT_EQ(r->body, "502 Bad Gateway\n");
  ASSERT_TRUE(p->done.wait_for(1));
  EXPECT_EQ(p->take(), (V{"new_ctx", "early_request_filter", "request_filter", "upstream_peer",
                          "fail_to_connect", "upstream_peer", "fail_to_connect", "upstream_peer",
                          "fail_to_connect", "fail_to_proxy", "logging(ConnectRefused)"}));
  EXPECT_EQ(p->attempts, 3);
}

TEST(HookOrder, UpstreamErrorAfterConnect) {
  pt::RawOrigin origin([](int fd) {
    std::string extra;
    pt::read_head(fd, extra);
    pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n");
  });
  auto p = std::make_shared<Recorder>();
  p->peers = {make_peer(origin.addr())};
  pt::TestProxy px(p);
  Client c(px.port());
  auto r = c.get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 502u);
  ASSERT_TRUE(p->done.wait_for(1));
  EXPECT_EQ(p->take(), (V{"new_ctx", "early_request_filter", "request_filter", "upstream_peer",
                          "connected_to_upstream", "upstream_request_filter",
                          "request_body_filter(end)", "error_while_proxy", "fail_to_proxy",
                          "logging(InvalidHTTPHeader)"}));
}

TEST(HookOrder, HookErrorAfterResponseHeaderArrived) {
  Origin origin(Origin::text("never seen"));
  auto p = std::make_shared<Recorder>();
  p->peers = {make_peer(origin.addr())};
  p->fail_in_response_filter = true;
  pt::TestProxy px(p);
  Client c(px.port());
  auto r = c.get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 418u);
  ASSERT_TRUE(p->done.wait_for(1));
  EXPECT_EQ(p->take(), (V{"new_ctx", "early_request_filter", "request_filter", "upstream_peer",
                          "connected_to_upstream", "upstream_request_filter",
                          "request_body_filter(end)", "upstream_response_filter",
                          "response_filter", "error_while_proxy", "fail_to_proxy",
                          "logging(HTTPStatus)"}));
}

TEST(HookOrder, ClientDisconnectsMidResponse) {
  std::atomic<bool> origin_saw_failure{false};
  pt::RawOrigin origin([&](int fd) {
    std::string extra;
    pt::read_head(fd, extra);
    const std::size_t total = 256u << 20;
    if (!pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(total) + "\r\n\r\n"))
      return;
    std::string block(64 * 1024, 'b');
    for (std::size_t sent = 0; sent < total; sent += block.size())
      if (!pt::write_all(fd, block)) {
        origin_saw_failure = true;
        return;
      }
  });
  auto p = std::make_shared<Recorder>();
  p->peers = {make_peer(origin.addr())};
  pt::TestProxy px(p);
  {
    Client c(px.port());
    ASSERT_TRUE(c.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n"));
    char buf[1024];
    ASSERT_GT(::recv(c.fd(), buf, sizeof buf, 0), 0);
    ::shutdown(c.fd(), SHUT_RDWR);
  }
  ASSERT_TRUE(p->done.wait_for(1, 30s));
  auto ev = p->take();
  ASSERT_GE(ev.size(), 4u);
  EXPECT_EQ(ev[ev.size() - 3], "error_while_proxy");
  EXPECT_EQ(ev[ev.size() - 2], "fail_to_proxy");
  EXPECT_TRUE(ev.back() == "logging(ConnectionClosed)" || ev.back() == "logging(WriteError)")
      << ev.back();
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "response_filter"), 1);
  // The upstream connection was closed, not pooled: the origin's writes fail.
  EXPECT_EQ(px.service().upstream_connections_reused(), 0u);
}

TEST(HookOrder, ParseErrorStillReachesLogging) {
  auto p = std::make_shared<Recorder>();
  p->peers = {make_peer(SocketAddr::loopback(dead_port()))};
  pt::TestProxy px(p);
  Client c(px.port());
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400u);
  ASSERT_TRUE(p->done.wait_for(1));
  EXPECT_EQ(p->take(), (V{"new_ctx", "logging(InvalidHTTPHeader)"}));
  EXPECT_TRUE(c.closed_by_peer());
}

TEST(HookOrder, HooksAreTestableWithoutSockets) {
  // A hook under test, driven through FakeSession on a local io_context.
  class Auth : public ProxyHttp<> {
   public:
    task<Result<HttpPeerPtr>> upstream_peer(Session&, NoCtx&) override { co_return nullptr; }
    task<Result<bool>> request_filter(Session& s, NoCtx&) override {
      if (!s.req_header().headers().contains("authorization")) {
        co_await s.respond(401, "who are you?");
        co_return true;
      }
      co_return false;
    }
  };
  Auth auth;
  NoCtx ctx;
  boost::asio::io_context io;
  pt::FakeSession anon;
  auto req = RequestHeader::build("GET", "/");
  req.append_header("Authorization", "Bearer x");
  pt::FakeSession known(std::move(req));
  bool anon_done = false, known_done = true;
  boost::asio::co_spawn(io, auth.request_filter(anon, ctx), [&](std::exception_ptr, Result<bool> r) {
    anon_done = r && *r;
  });
  boost::asio::co_spawn(io, auth.request_filter(known, ctx), [&](std::exception_ptr, Result<bool> r) {
    known_done = r && *r;
  });
  io.run();
  EXPECT_TRUE(anon_done);
  EXPECT_EQ(anon.response.status(), 401);
  EXPECT_EQ(anon.body, "who are you?");
  EXPECT_FALSE(known_done);
  EXPECT_FALSE(known.response_written());
}

TEST(HookOrder, DefaultCoroutineHooksAreKnownAtCompileTime) {
  // The engine skips coroutine hooks a proxy does not override (a frame each per request), and
  // splices bodies when response_body_filter is not overridden.
  class OnlyPeer : public ProxyHttp<> {
   public:
    task<Result<HttpPeerPtr>> upstream_peer(Session&, NoCtx&) override { co_return nullptr; }
  };
  class Mid : public OnlyPeer {
   public:
    task<Result<void>> response_filter(Session&, ResponseHeader&, NoCtx&) override { co_return ok(); }
  };
  class Leaf : public Mid {};
  EXPECT_EQ(detail::overridden_hooks<OnlyPeer>(), 0u);
  EXPECT_EQ(detail::overridden_hooks<Leaf>(), std::uint32_t{detail::kResponseFilter});
  EXPECT_EQ(detail::overridden_hooks<Recorder>(),
            0xffu & ~std::uint32_t{detail::kProxyUpstreamFilter});
  EXPECT_EQ(detail::overridden_hooks<Forward>(), std::uint32_t{detail::kLogging});
}
