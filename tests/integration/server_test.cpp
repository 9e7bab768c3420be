// Server runtime: port 0, workers, graceful and immediate shutdown, embedding.
#include "integration/helpers.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include <portico/observe/metrics.hpp>
#include <portico/server/serve.hpp>

#include "server/worker.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <thread>

using namespace itest;
using portico::testing::Client;
using portico::testing::Origin;
using portico::testing::RawOrigin;

TEST(Server, PortZeroIsResolvedForEveryListener) {
  Origin origin;
  Server server(ServerConf{.threads = 2});
  auto svc = http_proxy_service(std::make_shared<Forward>(origin.addr()));
  ASSERT_TRUE(svc->add_tcp("127.0.0.1:0"));
  ASSERT_TRUE(svc->add_tcp("127.0.0.1:0"));
  EXPECT_FALSE(svc->add_tcp("localhost:80")) << "names are not resolved";
  server.add_service(svc);
  ASSERT_TRUE(server.start());
  auto eps = svc->local_endpoints();
  ASSERT_EQ(eps.size(), 2u);
  EXPECT_NE(eps[0].port(), 0);
  EXPECT_NE(eps[1].port(), 0);
  EXPECT_NE(eps[0].port(), eps[1].port());
  for (auto& ep : eps) {
    Client c(ep.port());
    auto r = c.get("/");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200u);
  }
  server.shutdown(false);
  server.wait();
}

namespace {
/// The TCP_DEFER_ACCEPT of the listening sockets of this process bound to `port` (one per
/// worker), found among its descriptors.
std::vector<int> defer_accept_of_listeners(std::uint16_t port) {
  std::vector<int> out;
  for (int fd = 0; fd < 4096; ++fd) {
    int listening = 0;
    socklen_t l = sizeof listening;
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &l) != 0 || !listening) continue;
    sockaddr_storage ss{};
    socklen_t sl = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl) != 0 || ss.ss_family != AF_INET ||
        ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port) != port)
      continue;
    int secs = -1;
    l = sizeof secs;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, &l) == 0) out.push_back(secs);
  }
  return out;
}
}  // namespace

// ServerConf::defer_accept: every worker's listening socket gets TCP_DEFER_ACCEPT, and a client
// that speaks first (as HTTP clients do) is served as usual, on new connections one after the
// other.
TEST(Server, DeferAcceptIsSetOnEveryListenerAndClientsAreServed) {
  Origin origin;
  Server server(ServerConf{.threads = 2, .defer_accept = std::chrono::seconds(5)});
  auto svc = http_proxy_service(std::make_shared<Forward>(origin.addr()));
  ASSERT_TRUE(svc->add_tcp("127.0.0.1:0"));
  server.add_service(svc);
  ASSERT_TRUE(server.start());
  const std::uint16_t port = svc->local_endpoints().at(0).port();
  const auto secs = defer_accept_of_listeners(port);
  ASSERT_EQ(secs.size(), 2u) << "one listening socket per worker";
  // The kernel keeps it as a count of SYN-ACK retransmissions, which reads back as at least the
  // seconds asked for.
  for (int s : secs) EXPECT_GE(s, 5);
  for (int i = 0; i < 20; ++i) {
    Client c(port);
    auto r = c.get("/n" + std::to_string(i));
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->status, 200u);
  }
  server.shutdown(false);
  server.wait();

  // Off by default.
  Server plain;
  auto svc2 = http_proxy_service(std::make_shared<Forward>(origin.addr()));
  ASSERT_TRUE(svc2->add_tcp("127.0.0.1:0"));
  plain.add_service(svc2);
  ASSERT_TRUE(plain.start());
  const auto off = defer_accept_of_listeners(svc2->local_endpoints().at(0).port());
  ASSERT_EQ(off.size(), 1u);
  EXPECT_EQ(off[0], 0);
  plain.shutdown(false);
  plain.wait();
}

// A connection is accepted bare (accept_raw) and given to the event loop only when it first
// waits: one whose request is in when it is accepted is served and closed without; one that
// sends later, or in parts, or stays for more requests, is served the same; one that leaves
// silently, or that the server drains while it waits, is closed and counted out.
TEST(Server, ConnectionsAreServedWhetherTheirRequestIsInWhenAcceptedOrNot) {
  Origin origin([](const portico::testing::OriginRequest& q) {
    portico::testing::OriginResponse r;
    r.body = q.target;
    return r;
  });
  auto reg = std::make_shared<portico::observe::Registry>();
  Server server;
  auto svc = http_proxy_service(std::make_shared<Forward>(origin.addr()));
  svc->set_metrics_registry(reg);
  ASSERT_TRUE(svc->add_tcp("127.0.0.1:0"));
  server.add_service(svc);
  ASSERT_TRUE(server.start());
  const std::uint16_t port = svc->local_endpoints().at(0).port();
  auto accepted = [&] {
    return reg->counter_family("portico_downstream_connections_total", "", {"service"})
        .with({svc->name()})
        .value();
  };
  auto active = [&] {
    return reg->gauge_family("portico_downstream_connections_active", "", {"service"})
        .with({svc->name()})
        .value();
  };

  // The request goes with the connection: most are read at once, never registered.
  for (int i = 0; i < 20; ++i) {
    Client c(port);
    ASSERT_TRUE(c.send("GET /now" + std::to_string(i) +
                       " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    auto r = c.read_response();
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->status, 200u);
    EXPECT_EQ(r->body, "/now" + std::to_string(i));
    EXPECT_TRUE(c.closed_by_peer());
  }

  // Accepted before it says anything: its first read waits, then the request comes in two parts,
  // and a second one on the same connection.
  {
    const auto before = accepted();
    Client c(port);
    ASSERT_TRUE(eventually([&] { return accepted() == before + 1; }));
    ASSERT_TRUE(c.send("GET /la"));
    ASSERT_TRUE(c.send("ter HTTP/1.1\r\nHost: x\r\n\r\n"));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200u);
    EXPECT_EQ(r->body, "/later");
    auto r2 = c.get("/again");
    ASSERT_TRUE(r2);
    EXPECT_EQ(r2->body, "/again");
  }

  // Accepted, then gone without a word: closed and counted out.
  {
    const auto before = accepted();
    {
      Client c(port);
      ASSERT_TRUE(eventually([&] { return accepted() == before + 1; }));
    }
    ASSERT_TRUE(eventually([&] { return active() == 0; }));
  }

  // Accepted and silent when the server stops gracefully: closed within the grace period.
  const auto before = accepted();
  Client idle(port);
  ASSERT_TRUE(eventually([&] { return accepted() == before + 1; }));
  server.shutdown(true);
  server.wait();
  EXPECT_TRUE(idle.closed_by_peer());
}

namespace {
/// A service of its own, not an HTTP proxy: greets and closes, with Asio's asynchronous write.
class Greeter final : public Service {
 public:
  Greeter() : Service("greeter") {}
  void serve_connection(portico::detail::Worker&, portico::detail::Accepted& a) override {
    auto s = std::make_shared<boost::asio::ip::tcp::socket>(std::move(a.socket));
    boost::asio::async_write(*s, boost::asio::buffer(std::string_view("hello\n")),
                             [s](const boost::system::error_code&, std::size_t) {
                               boost::system::error_code ec;
                               s->shutdown(boost::asio::socket_base::shutdown_both, ec);
                             });
  }
};
}  // namespace

// Services other than the HTTP proxy get their connections as Asio sockets, registered with the
// event loop and ready for asynchronous operations, although connections are accepted bare.
TEST(Server, OtherServicesGetTheirConnectionsAsAsioSockets) {
  Server server;
  auto greeter = std::make_shared<Greeter>();
  ASSERT_TRUE(greeter->add_tcp("127.0.0.1:0"));
  server.add_service(greeter);
  ASSERT_TRUE(server.start());
  for (int i = 0; i < 3; ++i) {
    Client c(greeter->local_endpoints().at(0).port());
    std::string got;
    char buf[64];
    for (int reads = 0; reads < 16; ++reads) {  // bounded: the client's receive timeout
      const ssize_t n = ::recv(c.fd(), buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, static_cast<std::size_t>(n));
    }
    EXPECT_EQ(got, "hello\n") << i;
  }
  server.shutdown(false);
  server.wait();
}

TEST(Server, ListeningOnABusyPortIsAnError) {
  Origin origin;
  Server first;
  auto a = http_proxy_service(std::make_shared<Forward>(origin.addr()));
  ASSERT_TRUE(a->add_tcp("127.0.0.1:0"));
  first.add_service(a);
  ASSERT_TRUE(first.start());
  // SO_REUSEPORT lets processes of the same user share a port, so take one bound without it.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ::listen(fd, 1);
  socklen_t len = sizeof sa;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  Server second;
  auto b = http_proxy_service(std::make_shared<Forward>(origin.addr()));
  ASSERT_TRUE(b->add_tcp("127.0.0.1:" + std::to_string(ntohs(sa.sin_port))));
  second.add_service(b);
  auto r = second.start();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().type(), ErrorType::BindError);
  ::close(fd);
}

TEST(Server, GracefulShutdownFinishesInFlightRequests) {
  Latch origin_got_request;
  Latch release_origin;
  RawOrigin origin([&](int fd) {
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    origin_got_request.add();
    release_origin.wait_for(1, 10s);
    pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow");
  });
  Server server(ServerConf{.threads = 1, .grace_period = std::chrono::milliseconds(10000)});
  auto svc = http_proxy_service(std::make_shared<Forward>(origin.addr()));
  ASSERT_TRUE(svc->add_tcp("127.0.0.1:0"));
  server.add_service(svc);
  ASSERT_TRUE(server.start());
  const auto port = svc->local_endpoints()[0].port();

  Client busy(port);
  Client idle(port);
  ASSERT_TRUE(idle.send(""));  // connected, no request
  ASSERT_TRUE(busy.send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n"));
  ASSERT_TRUE(origin_got_request.wait_for(1));
  server.shutdown(true);
  EXPECT_TRUE(idle.closed_by_peer()) << "a connection that sends no request is closed";
  release_origin.add();
  auto r = busy.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "slow");
  EXPECT_EQ(r->header("Connection"), "close");
  server.wait();
  Client late(port, 1s);
  EXPECT_FALSE(late.connected() && late.get("/")) << "no longer accepting";
}

TEST(Server, GracefulShutdownStillAnswersAFreshConnectionsFirstRequest) {
  // Accepted before the shutdown, its request sent just after: it is answered (and the
  // connection closed), not dropped. A keep-alive connection between requests is closed at once.
  Origin origin(Origin::text("late"));
  Server server(ServerConf{.threads = 1, .grace_period = std::chrono::milliseconds(10000)});
  auto svc = http_proxy_service(std::make_shared<Forward>(origin.addr()));
  ASSERT_TRUE(svc->add_tcp("127.0.0.1:0"));
  server.add_service(svc);
  ASSERT_TRUE(server.start());
  const auto port = svc->local_endpoints()[0].port();
  // One worker, one listening socket: connections are accepted in order, so once `used` got
  // its answer, `fresh` (connected first, nothing sent) is accepted too.
  Client fresh(port);
  ASSERT_TRUE(fresh.send(""));
  Client used(port);
  ASSERT_TRUE(used.get("/"));
  server.shutdown(true);
  EXPECT_TRUE(used.closed_by_peer()) << "idle keep-alive connections close";
  auto r = fresh.get("/first");
  ASSERT_TRUE(r) << "the first request of a fresh connection is served";
  EXPECT_EQ(r->body, "late");
  EXPECT_EQ(r->header("Connection"), "close");
  server.wait();
}

TEST(Server, ImmediateShutdownDropsEverything) {
  Latch got;
  RawOrigin origin([&](int fd) {
    std::string extra;
    pt::read_head(fd, extra);
    got.add();
    char b;
    ::recv(fd, &b, 1, 0);
  });
  Server server;
  auto svc = http_proxy_service(std::make_shared<Forward>(origin.addr()));
  ASSERT_TRUE(svc->add_tcp("127.0.0.1:0"));
  server.add_service(svc);
  ASSERT_TRUE(server.start());
  Client c(svc->local_endpoints()[0].port());
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  ASSERT_TRUE(got.wait_for(1));
  const auto t0 = std::chrono::steady_clock::now();
  server.shutdown(false);
  server.wait();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_TRUE(c.closed_by_peer());
}

/// A request context that counts how many exist, so a test sees whether each one was destroyed.
struct CountedCtx {
  static inline std::atomic<int> live{0};
  static inline std::atomic<int> made{0};
  CountedCtx() {
    ++live;
    ++made;
  }
  CountedCtx(CountedCtx&&) noexcept { ++live; }
  ~CountedCtx() { --live; }
};

class CountingForward : public ProxyHttp<CountedCtx> {
 public:
  explicit CountingForward(SocketAddr up) : peer_(make_peer(up)) {}
  task<Result<HttpPeerPtr>> upstream_peer(Session&, CountedCtx&) override { co_return peer_; }

 private:
  HttpPeerPtr peer_;
};

TEST(Server, ImmediateShutdownStillDestroysTheContextOfARequestInFlight) {
  // A user's context may hold resources (an in-flight count, a handle): a request cut short by
  // shutdown must still destroy it, although `logging` never runs for it.
  Latch got;
  Latch release;
  RawOrigin origin([&](int fd) {
    std::string extra;
    pt::read_head(fd, extra);
    got.add();
    release.wait_for(1, 10s);
  });
  CountedCtx::live = 0;
  CountedCtx::made = 0;
  {
    Server server;
    auto svc = http_proxy_service(std::make_shared<CountingForward>(origin.addr()));
    ASSERT_TRUE(svc->add_tcp("127.0.0.1:0"));
    server.add_service(svc);
    ASSERT_TRUE(server.start());
    Client c(svc->local_endpoints()[0].port());
    ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    ASSERT_TRUE(got.wait_for(1));
    EXPECT_EQ(CountedCtx::live.load(), 1) << "the request waits for its response";
    server.shutdown(false);
    server.wait();
  }
  release.add();
  EXPECT_EQ(CountedCtx::made.load(), 1);
  EXPECT_EQ(CountedCtx::live.load(), 0) << "the cut-short request's context was destroyed";
}

TEST(Server, ServeRunsOnTheApplicationsOwnIoContext) {
  Origin origin(Origin::text("embedded"));
  boost::asio::io_context ioc(1);
  boost::asio::ip::tcp::acceptor acc(ioc, {boost::asio::ip::make_address("127.0.0.1"), 0});
  auto svc = http_proxy_service(std::make_shared<Forward>(origin.addr()));
  bool finished = false;
  boost::asio::co_spawn(ioc, serve(acc, svc), [&](std::exception_ptr) { finished = true; });
  std::thread loop([&] { ioc.run(); });
  {
    Client c(acc.local_endpoint().port());
    for (int i = 0; i < 3; ++i) {
      auto r = c.get("/");
      ASSERT_TRUE(r);
      EXPECT_EQ(r->body, "embedded");
    }
    // Several at once: more coroutines serve them, then wait to accept.
    std::vector<std::unique_ptr<Client>> more;
    for (int i = 0; i < 8; ++i) more.push_back(std::make_unique<Client>(acc.local_endpoint().port()));
    for (auto& m : more) {
      auto r = m->get("/");
      ASSERT_TRUE(r);
      EXPECT_EQ(r->body, "embedded");
    }
  }
  EXPECT_EQ(svc->local_endpoints().at(0).port(), acc.local_endpoint().port());
  boost::asio::post(ioc, [&] { acc.close(); });
  loop.join();  // run() returns: serve() finished and left nothing behind
  EXPECT_TRUE(finished);
}

TEST(Server, ManyShortConnectionsLeakNoDescriptors) {
  Origin origin;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  auto count_fds = [] {
    std::size_t n = 0;
    for (int fd = 0; fd < 4096; ++fd)
      if (::fcntl(fd, F_GETFD) != -1) ++n;
    return n;
  };
  {
    Client warm(px.port());
    ASSERT_TRUE(warm.get("/"));
  }
  const std::size_t before = count_fds();
  for (int i = 0; i < 200; ++i) {
    Client c(px.port());
    if (i % 3 == 0) continue;  // connect and leave
    if (i % 3 == 1) {
      c.send("GET / HTTP/1.1\r\nHo");  // leave mid-header
      continue;
    }
    ASSERT_TRUE(c.get("/"));
  }
  {
    // Connections are accepted in the order they came: once this one is answered, none of the
    // others waits in the listen queue, where idleness could not see it.
    Client last(px.port());
    ASSERT_TRUE(last.get("/"));
  }
  // The proxy notices the last closes on its own thread; wait for it, bounded.
  EXPECT_TRUE(px.server().wait_idle(10s));
  EXPECT_EQ(px.server().active_connections(), 0u);
  EXPECT_LE(count_fds(), before + 1);
}

TEST(Server, ConnectionsArrivingTogetherAndInTurnAreAllServed) {
  // Each connection is served by a coroutine that accepted it; those that end wait to accept
  // the next ones. Bursts of concurrent connections, each answered, then one at a time (the
  // waiting coroutines take them), then a shutdown that leaves nothing behind.
  Origin origin(Origin::text("burst"));
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()));
  for (int round = 0; round < 3; ++round) {
    std::vector<std::unique_ptr<Client>> clients;
    for (int i = 0; i < 100; ++i) clients.push_back(std::make_unique<Client>(px.port()));
    for (auto& c : clients)
      ASSERT_TRUE(c->send("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
    for (auto& c : clients) {
      auto r = c->read_response();
      ASSERT_TRUE(r) << "round " << round;
      EXPECT_EQ(r->status, 200u);
      EXPECT_EQ(r->body, "burst");
    }
  }
  for (int i = 0; i < 150; ++i) {
    Client c(px.port());
    auto r = c.get("/");
    ASSERT_TRUE(r) << "connection " << i;
    EXPECT_EQ(r->body, "burst");
  }
  EXPECT_TRUE(px.server().wait_idle(10s));
  EXPECT_EQ(px.server().active_connections(), 0u);
}
