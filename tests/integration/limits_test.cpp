// Each configurable limit, at the limit and one past it.
#include "integration/helpers.hpp"

using namespace itest;
using portico::testing::Client;
using portico::testing::Origin;
using portico::testing::RawOrigin;

TEST(Limits, KeepaliveRequestLimitClosesAfterTheLastAllowedRequest) {
  Origin origin;
  HttpServerOptions o;
  o.keepalive_request_limit = 3;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), o);
  Client c(px.port());
  for (int i = 1; i <= 3; ++i) {
    auto r = c.get("/");
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->keep_alive, i < 3) << i;
  }
  EXPECT_TRUE(c.closed_by_peer());
}

TEST(Limits, RequestHeaderFieldCountAtAndPastTheLimit) {
  Origin origin;
  HttpServerOptions o;
  o.max_header_count = 4;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), o);
  {
    Client c(px.port());
    auto r = c.request("GET", "/", {{"Host", "h"}, {"A", "1"}, {"B", "2"}, {"C", "3"}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200u);
  }
  {
    Client c(px.port());
    auto r = c.request("GET", "/", {{"Host", "h"}, {"A", "1"}, {"B", "2"}, {"C", "3"}, {"D", "4"}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 431u);
  }
  EXPECT_EQ(origin.requests(), 1u);
}

TEST(Limits, RequestTargetAtAndPastTheLimit) {
  Origin origin;
  HttpServerOptions o;
  o.max_request_target_bytes = 64;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), o);
  {
    Client c(px.port());
    auto r = c.get("/" + std::string(63, 'a'));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200u);
  }
  {
    Client c(px.port());
    auto r = c.get("/" + std::string(64, 'a'));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 414u);
  }
}

TEST(Limits, UpstreamResponseHeaderAtAndPastTheLimitGives502) {
  RawOrigin origin([](int fd) {
    std::string extra;
    std::string head = pt::read_head(fd, extra);
    const bool big = head.find("GET /big") != std::string::npos;
    // "HTTP/1.1 200 OK\r\n" (17) + "X: " + pad + "\r\n" + "Content-Length: 0\r\n\r\n" (21)
    const std::size_t pad = 512 - 17 - 5 - 21 + (big ? 1 : 0);
    pt::write_all(fd, "HTTP/1.1 200 OK\r\nX: " + std::string(pad, 'p') + "\r\nContent-Length: 0\r\n\r\n");
  });
  HttpServerOptions o;
  o.max_response_header_bytes = 512;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), o);
  {
    Client c(px.port());
    auto r = c.get("/fits");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200u);
  }
  {
    Client c(px.port());
    auto r = c.get("/big");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 502u);
  }
}

TEST(Limits, StalledUploadIsCutAtTheBodyTimeout) {
  Latch origin_done;
  RawOrigin origin([&](int fd) {
    std::string extra;
    pt::read_head(fd, extra);
    char b[1024];
    while (::recv(fd, b, sizeof b, 0) > 0) {
    }
    origin_done.add();
  });
  HttpServerOptions o;
  o.body_read_timeout = std::chrono::milliseconds(200);
  auto fwd = std::make_shared<Forward>(origin.addr());
  pt::TestProxy px(fwd, o);
  Client c(px.port(), 5s);
  ASSERT_TRUE(c.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nonly part"));
  ASSERT_TRUE(fwd->logged.wait_for(1));
  {
    std::lock_guard lk(fwd->mu);
    ASSERT_TRUE(fwd->last_error);
    EXPECT_EQ(fwd->last_error->type(), ErrorType::ReadTimedout);
    EXPECT_EQ(fwd->last_error->source(), ErrorSource::Downstream);
  }
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_TRUE(origin_done.wait_for(1)) << "the upstream connection was closed, not pooled";
}

TEST(Limits, PoolKeepsAtMostMaxIdlePerKey) {
  // Two clients in flight at once need two upstream connections; with room for one idle
  // connection, the second is closed when both finish, so a third round opens one more.
  Latch both_in;
  std::atomic<int> arrived{0};
  RawOrigin origin([&](int fd) {
    for (;;) {  // keep-alive: one request after another on this connection
      std::string extra;
      if (pt::read_head(fd, extra).empty()) return;
      if (++arrived <= 2) {
        both_in.add();
        both_in.wait_for(2, 5s);
      }
      if (!pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) return;
    }
  });
  HttpServerOptions o;
  o.pool_max_idle_per_key = 1;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), o);
  {
    Client a(px.port()), b(px.port());
    ASSERT_TRUE(a.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    ASSERT_TRUE(b.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    ASSERT_TRUE(a.read_response());
    ASSERT_TRUE(b.read_response());
  }
  EXPECT_EQ(origin.connections(), 2u);
  Client c(px.port());
  ASSERT_TRUE(c.get("/"));
  ASSERT_TRUE(c.get("/"));
  EXPECT_EQ(origin.connections(), 2u) << "the one idle connection is reused";
  EXPECT_EQ(px.service().upstream_connections_reused(), 2u);
}

TEST(Limits, UpstreamRequestLimitRetiresTheConnection) {
  Origin origin;
  HttpServerOptions o;
  o.upstream_request_limit = 2;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), o);
  Client c(px.port());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(c.get("/"));
  EXPECT_EQ(origin.connections(), 2u);
}

TEST(Limits, PeerIdleTimeoutZeroDisablesPooling) {
  Origin origin;
  auto peer = std::make_shared<HttpPeer>(origin.addr(), false);
  peer->options.idle_timeout = std::chrono::milliseconds(0);
  pt::TestProxy px(std::make_shared<Forward>(HttpPeerPtr(peer)));
  Client c(px.port());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(c.get("/"));
  EXPECT_EQ(origin.connections(), 3u);
}

TEST(Limits, ClientThatStopsReadingIsCutAtTheWriteTimeout) {
  RawOrigin origin([](int fd) {
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    const std::size_t total = 64u << 20;
    if (!pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(total) + "\r\n\r\n")) return;
    std::string block(256 * 1024, 'z');
    for (std::size_t sent = 0; sent < total; sent += block.size())
      if (!pt::write_all(fd, block)) return;
  });
  HttpServerOptions o;
  o.write_timeout = std::chrono::milliseconds(300);
  auto fwd = std::make_shared<Forward>(origin.addr());
  pt::TestProxy px(fwd, o);
  Client c(px.port(), 10s);
  ASSERT_TRUE(c.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n"));
  // Read nothing: the proxy's writes stall once the socket buffers are full.
  ASSERT_TRUE(fwd->logged.wait_for(1, 20s));
  std::lock_guard lk(fwd->mu);
  ASSERT_TRUE(fwd->last_error);
  EXPECT_EQ(fwd->last_error->type(), ErrorType::WriteTimedout);
  EXPECT_EQ(fwd->last_error->source(), ErrorSource::Downstream);
}

TEST(Limits, UpstreamThatStopsReadingGives504AtItsWriteTimeout) {
  Latch release;
  RawOrigin origin([&](int fd) {
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    release.wait_for(1, 20s);  // never reads the body
  });
  auto peer = std::make_shared<HttpPeer>(origin.addr(), false);
  peer->options.write_timeout = std::chrono::milliseconds(300);
  auto fwd = std::make_shared<Forward>(HttpPeerPtr(peer));
  pt::TestProxy px(fwd);
  Client c(px.port(), 20s);
  const std::size_t total = 64u << 20;
  ASSERT_TRUE(c.send("POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: " + std::to_string(total) + "\r\n\r\n"));
  std::thread sender([&] {
    std::string block(256 * 1024, 'u');
    for (std::size_t sent = 0; sent < total; sent += block.size())
      if (!pt::write_all(c.fd(), block)) return;  // fails once the proxy gives up
  });
  auto r = c.read_response();
  release.add();
  ::shutdown(c.fd(), SHUT_RDWR);
  sender.join();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504u);
  EXPECT_EQ(r->header("Connection"), "close");
}

TEST(Limits, WholeRequestDeadlineGives504) {
  // The origin trickles its response: each read is quick, the whole is not.
  RawOrigin origin([](int fd) {
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    if (!pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")) return;
    for (int i = 0; i < 100; ++i) {
      if (!pt::write_all(fd, "0123456789")) return;
      std::this_thread::sleep_for(50ms);  // the load being simulated, not synchronisation
    }
  });
  RawOrigin slow_head([](int fd) {
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    char b;
    ::recv(fd, &b, 1, 0);
  });
  HttpServerOptions o;
  o.request_timeout = std::chrono::milliseconds(300);
  {
    pt::TestProxy px(std::make_shared<Forward>(slow_head.addr()), o);
    Client c(px.port());
    auto r = c.get("/");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 504u);
  }
  {
    auto fwd = std::make_shared<Forward>(origin.addr());
    pt::TestProxy px(fwd, o);
    Client c(px.port());
    ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    std::string got = read_until_close(c.fd());
    EXPECT_LT(got.size(), 1000u) << "the response was cut, and the cut is visible";
    ASSERT_TRUE(fwd->logged.wait_for(1));
    std::lock_guard lk(fwd->mu);
    ASSERT_TRUE(fwd->last_error);
    EXPECT_EQ(fwd->last_error->type(), ErrorType::ReadTimedout);
  }
}
