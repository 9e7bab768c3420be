// The upstream connection pool: sharing across workers, eviction of idle connections, limits,
// counters, and no descriptor leak under client aborts.
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "integration/helpers.hpp"

namespace itest {
namespace {

using pt::Client;
using pt::Origin;
using pt::RawOrigin;

std::size_t open_fds() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d)) ++n;
    ::closedir(d);
  }
  return n;
}

/// An origin that answers one keep-alive request per connection, then does what the test says
/// once `go` is released (close its side, or send a byte nobody asked for) or nothing at all
/// (Keep), and records when the proxy closes the connection.
struct IdleOrigin {
  enum class Then { Keep, Close, StrayByte };
  explicit IdleOrigin(Then then = Then::Keep)
      : origin([this, then](int fd) {
          std::string extra;
          if (pt::read_head(fd, extra).empty()) return;
          if (!pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) return;
          if (then != Then::Keep) {
            go.wait_for(1);
            if (then == Then::Close) ::shutdown(fd, SHUT_WR);
            if (then == Then::StrayByte) pt::write_all(fd, "X");
          }
          char b[16];
          while (::recv(fd, b, sizeof b, 0) > 0) {
          }
          saw_eof.add();
        }) {}
  ~IdleOrigin() { go.add(); }
  Latch go;
  Latch saw_eof;
  RawOrigin origin;
};

TEST(Pool, RequestOnAnotherWorkerTakesTheIdleConnectionOfTheFirst) {
  // Requests go one at a time, each on a new client connection, which the kernel spreads over
  // the two workers. Whichever worker serves a request, the only idle upstream connection is
  // the one the previous request returned, so a request on the other worker must take it
  // across rather than connect.
  Origin origin;
  auto fwd = std::make_shared<ThreadTagging>(origin.addr());
  pt::TestProxy px(fwd, {}, 2);
  int sent = 0;
  for (int i = 0; i < 64 && fwd->distinct_threads() < 2; ++i) {
    Client c(px.port());
    auto r = c.get("/");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200u);
    ++sent;
    ASSERT_TRUE(fwd->logged.wait_for(sent));
    ASSERT_EQ(px.service().pool_stats().idle, 1u);
  }
  ASSERT_EQ(fwd->distinct_threads(), 2u) << "64 connections all landed on one worker";
  auto st = px.service().pool_stats();
  EXPECT_EQ(origin.connections(), 1u);
  EXPECT_EQ(st.opened, 1u);
  EXPECT_EQ(st.reused, static_cast<std::uint64_t>(sent - 1));
  EXPECT_GE(st.reused_cross_worker, 1u);
  EXPECT_EQ(st.evicted_total(), 0u);
}

TEST(Pool, WithoutCrossWorkerSharingEachWorkerOpensItsOwn) {
  Origin origin;
  auto fwd = std::make_shared<ThreadTagging>(origin.addr());
  HttpServerOptions o;
  o.pool_cross_worker = false;
  pt::TestProxy px(fwd, o, 2);
  int sent = 0;
  for (int i = 0; i < 64 && fwd->distinct_threads() < 2; ++i) {
    Client c(px.port());
    ASSERT_TRUE(c.get("/"));
    ASSERT_TRUE(fwd->logged.wait_for(++sent));
  }
  ASSERT_EQ(fwd->distinct_threads(), 2u);
  EXPECT_EQ(origin.connections(), 2u);
  EXPECT_EQ(px.service().pool_stats().reused_cross_worker, 0u);
}

TEST(Pool, UpstreamCloseEvictsTheIdleConnectionAtOnce) {
  IdleOrigin o(IdleOrigin::Then::Close);
  auto fwd = std::make_shared<Forward>(o.origin.addr());
  pt::TestProxy px(fwd);
  Client c(px.port());
  ASSERT_TRUE(c.get("/"));
  ASSERT_TRUE(fwd->logged.wait_for(1));
  EXPECT_EQ(px.service().pool_stats().idle, 1u);
  // The origin closes its side: the proxy sees EOF while the connection is idle and closes too.
  o.go.add();
  ASSERT_TRUE(o.saw_eof.wait_for(1)) << "the proxy closed its side";
  auto st = px.service().pool_stats();
  EXPECT_EQ(st.idle, 0u);
  EXPECT_EQ(st.evicted_for(PoolEviction::Closed), 1u);
  EXPECT_EQ(st.evicted_total(), 1u);
}

TEST(Pool, StrayByteFromAnIdleUpstreamEvictsIt) {
  IdleOrigin o(IdleOrigin::Then::StrayByte);
  auto fwd = std::make_shared<Forward>(o.origin.addr());
  pt::TestProxy px(fwd);
  Client c(px.port());
  ASSERT_TRUE(c.get("/"));
  ASSERT_TRUE(fwd->logged.wait_for(1));
  o.go.add();
  ASSERT_TRUE(o.saw_eof.wait_for(1)) << "the proxy closed the connection that spoke out of turn";
  auto st = px.service().pool_stats();
  EXPECT_EQ(st.idle, 0u);
  EXPECT_EQ(st.evicted_for(PoolEviction::StrayData), 1u);
  // The next request does not see the stray byte: it gets a fresh connection.
  auto r = c.get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "ok");
  EXPECT_EQ(o.origin.connections(), 2u);
}

TEST(Pool, IdleTimeoutClosesTheConnection) {
  IdleOrigin o;
  auto peer = std::make_shared<HttpPeer>(o.origin.addr(), false);
  peer->options.idle_timeout = 50ms;
  auto fwd = std::make_shared<Forward>(HttpPeerPtr(peer));
  pt::TestProxy px(fwd);
  Client c(px.port());
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(c.get("/"));
  // The origin keeps its side open; only the pool's timer can end the connection.
  ASSERT_TRUE(o.saw_eof.wait_for(1, 5s));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 50ms);
  auto st = px.service().pool_stats();
  EXPECT_EQ(st.idle, 0u);
  EXPECT_EQ(st.evicted_for(PoolEviction::IdleTimeout), 1u);
}

TEST(Pool, MaxIdleTotalAtAndPastTheLimit) {
  // Three peers of different keys, one idle connection each; room for two in total.
  IdleOrigin a, b, c3;
  struct ByPath : Forward {
    ByPath(std::vector<HttpPeerPtr> p) : Forward(p[0]), peers(std::move(p)) {}
    task<Result<HttpPeerPtr>> upstream_peer(Session& s, NoCtx&) override {
      co_return peers.at(static_cast<std::size_t>(s.req_header().path()[1] - '0'));
    }
    std::vector<HttpPeerPtr> peers;
  };
  auto fwd = std::make_shared<ByPath>(std::vector<HttpPeerPtr>{
      make_peer(a.origin.addr()), make_peer(b.origin.addr()), make_peer(c3.origin.addr())});
  HttpServerOptions o;
  o.pool_max_idle_total = 2;
  pt::TestProxy px(fwd, o);
  Client c(px.port());
  ASSERT_TRUE(c.get("/0"));
  ASSERT_TRUE(c.get("/1"));
  ASSERT_TRUE(fwd->logged.wait_for(2));
  auto st = px.service().pool_stats();
  EXPECT_EQ(st.idle, 2u) << "at the limit";
  EXPECT_EQ(st.evicted_total(), 0u);
  ASSERT_TRUE(c.get("/2"));
  ASSERT_TRUE(fwd->logged.wait_for(3));
  st = px.service().pool_stats();
  EXPECT_EQ(st.idle, 2u) << "past the limit";
  EXPECT_EQ(st.evicted_for(PoolEviction::Limit), 1u);
  EXPECT_TRUE(a.saw_eof.wait_for(1)) << "the oldest idle connection went";
  EXPECT_EQ(b.saw_eof.count(), 0);
}

TEST(Pool, CountersPerPeer) {
  Origin one, two;
  struct Two : Forward {
    Two(HttpPeerPtr a, HttpPeerPtr b) : Forward(a), p1(std::move(a)), p2(std::move(b)) {}
    task<Result<HttpPeerPtr>> upstream_peer(Session& s, NoCtx&) override {
      co_return s.req_header().path() == "/two" ? p2 : p1;
    }
    HttpPeerPtr p1, p2;
  };
  auto fwd = std::make_shared<Two>(make_peer(one.addr()), make_peer(two.addr()));
  pt::TestProxy px(fwd);
  Client c(px.port());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(c.get("/one"));
  ASSERT_TRUE(c.get("/two"));
  ASSERT_TRUE(fwd->logged.wait_for(4));
  auto peers = px.service().pool_stats_by_peer();
  ASSERT_EQ(peers.size(), 2u);
  std::map<std::string, UpstreamPoolStats> by;
  for (auto& p : peers) by[p.peer] = p.stats;
  ASSERT_TRUE(by.count(one.addr().to_string())) << peers[0].peer;
  EXPECT_EQ(by[one.addr().to_string()].opened, 1u);
  EXPECT_EQ(by[one.addr().to_string()].reused, 2u);
  EXPECT_EQ(by[two.addr().to_string()].opened, 1u);
  EXPECT_EQ(by[two.addr().to_string()].reused, 0u);
  EXPECT_DOUBLE_EQ(px.service().pool_stats().reuse_ratio(), 0.5);
}

TEST(Pool, GracefulShutdownClosesIdleConnections) {
  IdleOrigin o;
  auto fwd = std::make_shared<Forward>(o.origin.addr());
  pt::TestProxy px(fwd);
  {
    Client c(px.port());
    ASSERT_TRUE(c.get("/"));
  }
  ASSERT_TRUE(fwd->logged.wait_for(1));
  px.server().shutdown(true);
  px.server().wait();
  EXPECT_TRUE(o.saw_eof.wait_for(1));
  auto st = px.service().pool_stats();
  EXPECT_EQ(st.idle, 0u);
  EXPECT_EQ(st.evicted_for(PoolEviction::Shutdown), 1u);
}

TEST(Pool, NoDescriptorLeakAfterTenThousandRequestsWithClientAborts) {
  const std::size_t before = open_fds();
  {
    const std::string big(32 * 1024, 'b');
    Origin origin([&](const pt::OriginRequest& r) {
      return pt::OriginResponse{200, {}, r.target == "/big" ? big : std::string("small")};
    });
    auto fwd = std::make_shared<Forward>(origin.addr());
    pt::TestProxy px(fwd, {}, 2);
    const std::size_t serving = open_fds();
    std::mt19937 rng(12345);
    int requests = 0;
    int full = 0;
    while (requests < 10000) {
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(px.port());
      ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
      timeval tv{10, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      // A few requests per connection; the last one may be abandoned at a random point.
      const int per_conn = 1 + static_cast<int>(rng() % 4);
      for (int k = 0; k < per_conn && requests < 10000; ++k, ++requests) {
        const unsigned fate = rng() % 8;
        const bool is_big = fate >= 5;
        std::string req = std::string("GET ") + (is_big ? "/big" : "/s") +
                          " HTTP/1.1\r\nHost: h\r\n\r\n";
        ASSERT_TRUE(pt::write_all(fd, req));
        if (fate == 0) break;  // gone before the response
        std::string extra;
        std::string head = pt::read_head(fd, extra);
        ASSERT_FALSE(head.empty()) << "request " << requests;
        if (fate == 5) break;  // gone in the middle of a large body
        const std::size_t want = is_big ? big.size() : 5;
        while (extra.size() < want) {
          char b[65536];
          ssize_t n = ::recv(fd, b, sizeof b, 0);
          ASSERT_GT(n, 0) << "request " << requests;
          extra.append(b, static_cast<std::size_t>(n));
        }
        ASSERT_EQ(extra.size(), want);
        ++full;
      }
      ::close(fd);
    }
    EXPECT_GT(full, 5000);
    ASSERT_TRUE(px.server().wait_idle(10s));
    auto st = px.service().pool_stats();
    // Upstream connections cut by an abort are closed, never pooled; the rest are reused.
    EXPECT_GT(st.reuse_ratio(), 0.5);
    EXPECT_LE(st.idle, 128u * 2);
    // Steady state: besides what it had before the first request, the process holds the two
    // ends of each idle pooled connection, nothing else.
    EXPECT_TRUE(eventually([&] {
      return open_fds() == serving + 2 * px.service().pool_stats().idle;
    })) << open_fds() << " vs " << serving << " + 2 x " << px.service().pool_stats().idle;
  }
  // Proxy and origin gone: every descriptor they and the clients opened is closed.
  EXPECT_TRUE(eventually([&] { return open_fds() == before; })) << open_fds() << " vs " << before;
}

}  // namespace
}  // namespace itest
