// A listener that expects the PROXY protocol: the client address the hooks see is the one the
// header carries; a bad, missing or late header closes the connection without a response.
#include "integration/h2_client.hpp"
#include "integration/helpers.hpp"

namespace itest {
namespace {

using pt::Client;
using pt::Origin;

/// Forwards to the origin and records the addresses each request's Session reported.
class AddressRecorder : public ProxyHttp<> {
 public:
  explicit AddressRecorder(SocketAddr up) : peer_(make_peer(up)) {}
  task<Result<HttpPeerPtr>> upstream_peer(Session&, NoCtx&) override { co_return peer_; }
  task<void> logging(Session& s, const Error*, NoCtx&) override {
    std::lock_guard lk(mu);
    clients.push_back(s.client_addr().to_string());
    servers.push_back(s.server_addr().to_string());
    co_return;
  }
  /// The logging hook runs after the response went out: wait for `n` records.
  bool wait_for(std::size_t n) {
    return eventually([&] {
      std::lock_guard lk(mu);
      return clients.size() >= n;
    });
  }
  std::mutex mu;
  std::vector<std::string> clients, servers;

 private:
  HttpPeerPtr peer_;
};

struct ProxyProtocolProxy {
  explicit ProxyProtocolProxy(std::chrono::milliseconds header_timeout = 10s,
                              std::chrono::milliseconds park_after = 1s,
                              std::shared_ptr<observe::Registry> reg = nullptr, bool h2c = false)
      : origin(Origin::text("behind a balancer")),
        app(std::make_shared<AddressRecorder>(origin.addr())),
        svc(http_proxy_service(
            app,
            [&] {
              HttpServerOptions o;
              o.header_read_timeout = header_timeout;
              o.keepalive_park_after = park_after;
              return o;
            }(),
            "pp")) {
    if (reg) svc->set_metrics_registry(std::move(reg));
    ListenerOptions lo;
    lo.proxy_protocol = true;
    lo.h2c = h2c;
    EXPECT_TRUE(svc->add_tcp("127.0.0.1:0", lo));
    server.add_service(svc);
    EXPECT_TRUE(server.start());
  }
  std::uint16_t port() { return svc->local_endpoints().at(0).port(); }
  Origin origin;
  std::shared_ptr<AddressRecorder> app;
  std::shared_ptr<HttpProxyService> svc;
  Server server;
};

const std::string kGet = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";

std::string v2_tcp4(const char src[4], const char dst[4], std::uint16_t sport, std::uint16_t dport) {
  std::string h("\r\n\r\n\0\r\nQUIT\n", 12);
  h += std::string("\x21\x11\x00\x0c", 4);
  h.append(src, 4);
  h.append(dst, 4);
  h += static_cast<char>(sport >> 8);
  h += static_cast<char>(sport & 0xff);
  h += static_cast<char>(dport >> 8);
  h += static_cast<char>(dport & 0xff);
  return h;
}

TEST(ProxyProtocolListener, V1AndV2AddressesReachTheHooks) {
  ProxyProtocolProxy px;
  {
    Client c(px.port());
    ASSERT_TRUE(c.send("PROXY TCP4 203.0.113.7 192.0.2.10 56324 443\r\n" + kGet));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200u);
    EXPECT_EQ(r->body, "behind a balancer");
    // Keep-alive: the next request on the connection has the same client.
    auto again = c.get("/again");
    ASSERT_TRUE(again);
    EXPECT_EQ(again->status, 200u);
  }
  {
    Client c(px.port());
    ASSERT_TRUE(c.send(v2_tcp4("\xc6\x33\x64\x05", "\xc0\x00\x02\x0a", 40000, 8443) + kGet));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200u);
  }
  {
    Client c(px.port());
    ASSERT_TRUE(c.send("PROXY TCP6 2001:db8::7 2001:db8::1 1234 80\r\n" + kGet));
    auto r = c.read_response();
    ASSERT_TRUE(r);
  }
  ASSERT_TRUE(px.app->wait_for(4));
  std::lock_guard lk(px.app->mu);
  EXPECT_EQ(px.app->clients, (std::vector<std::string>{"203.0.113.7:56324", "203.0.113.7:56324",
                                                       "198.51.100.5:40000", "[2001:db8::7]:1234"}));
  EXPECT_EQ(px.app->servers, (std::vector<std::string>{"192.0.2.10:443", "192.0.2.10:443",
                                                       "192.0.2.10:8443", "[2001:db8::1]:80"}));
}

// An idle connection of a PROXY protocol listener is not parked (its client address came from
// the header) but trimmed: its next request is served on it, with the header's address.
TEST(ProxyProtocolListener, IdleConnectionIsTrimmedAndKeepsTheHeadersAddress) {
  auto reg = std::make_shared<observe::Registry>();
  ProxyProtocolProxy px(10s, 20ms, reg);
  auto gauge = [&](const char* name) {
    return reg->gauge_family(name, "", {"service"}).with({"pp"}).value();
  };
  Client c(px.port());
  ASSERT_TRUE(c.send("PROXY TCP4 203.0.113.7 192.0.2.10 56324 443\r\n" + kGet));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(eventually([&] { return gauge("portico_downstream_connections_trimmed") == 1; }))
        << "round " << round;
    EXPECT_EQ(gauge("portico_downstream_connections_parked"), 0);
    auto again = c.get("/again");
    ASSERT_TRUE(again);
    EXPECT_EQ(again->status, 200u);
    EXPECT_EQ(again->body, "behind a balancer");
  }
  ASSERT_TRUE(px.app->wait_for(3));
  std::lock_guard lk(px.app->mu);
  EXPECT_EQ(px.app->clients, (std::vector<std::string>(3, "203.0.113.7:56324")));
}

// The same over h2c: the idle HTTP/2 connection is trimmed, not parked (its client address
// came from the header), and goes on with its session and the header's address.
TEST(ProxyProtocolListener, IdleH2cConnectionIsTrimmedAndKeepsTheHeadersAddress) {
  auto reg = std::make_shared<observe::Registry>();
  ProxyProtocolProxy px(10s, 20ms, reg, true);
  auto gauge = [&](const char* name) {
    return reg->gauge_family(name, "", {"service"}).with({"pp"}).value();
  };
  h2test::H2Client::Options o;
  o.preamble = "PROXY TCP4 203.0.113.8 192.0.2.10 56325 443\r\n";
  h2test::H2Client c(px.port(), o);
  ASSERT_TRUE(c.connected()) << c.error();
  h2test::Request get;
  get.path = "/";
  for (int round = 0; round < 3; ++round) {
    auto r = c.request(get);
    ASSERT_TRUE(r) << "round " << round;
    EXPECT_EQ(r->status, 200u);
    EXPECT_EQ(r->body, "behind a balancer");
    ASSERT_TRUE(eventually([&] { return gauge("portico_downstream_connections_trimmed") == 1; }))
        << "round " << round;
    EXPECT_EQ(gauge("portico_downstream_connections_parked"), 0);
    EXPECT_EQ(gauge("portico_downstream_h2_connections_active"), 1);
  }
  ASSERT_TRUE(px.app->wait_for(3));
  {
    std::lock_guard lk(px.app->mu);
    EXPECT_EQ(px.app->clients, (std::vector<std::string>(3, "203.0.113.8:56325")));
  }
}

TEST(ProxyProtocolListener, AHeaderSentInPiecesIsReassembled) {
  ProxyProtocolProxy px;
  Client c(px.port());
  const std::string header = "PROXY TCP4 203.0.113.9 192.0.2.10 1000 80\r\n";
  ASSERT_TRUE(c.send(header.substr(0, 9)));
  ASSERT_TRUE(c.send(header.substr(9, 20)));
  ASSERT_TRUE(c.send(header.substr(29) + kGet));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
  ASSERT_TRUE(px.app->wait_for(1));
  std::lock_guard lk(px.app->mu);
  EXPECT_EQ(px.app->clients, std::vector<std::string>{"203.0.113.9:1000"});
}

TEST(ProxyProtocolListener, LocalKeepsTheRealPeer) {
  ProxyProtocolProxy px;
  Client c(px.port());
  ASSERT_TRUE(c.send(std::string("\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00", 16) + kGet));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  ASSERT_TRUE(px.app->wait_for(1));
  std::lock_guard lk(px.app->mu);
  ASSERT_EQ(px.app->clients.size(), 1u);
  EXPECT_EQ(px.app->clients[0].rfind("127.0.0.1:", 0), 0u) << px.app->clients[0];
}

TEST(ProxyProtocolListener, BadOrMissingHeaderClosesWithoutAnswer) {
  ProxyProtocolProxy px;
  for (const std::string& bytes :
       {kGet, std::string("PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n") + kGet,
        std::string("PROXY TCP4 1.2.3.4 5.6.7.8 1 80\n") + kGet,
        std::string("\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x0c", 16) + std::string(12, 'x') + kGet}) {
    Client c(px.port());
    ASSERT_TRUE(c.send(bytes));
    EXPECT_FALSE(c.read_response()) << "no response to " << bytes.substr(0, 20);
    EXPECT_TRUE(c.closed_by_peer());
  }
  EXPECT_EQ(px.origin.requests(), 0u);
}

TEST(ProxyProtocolListener, HeaderThatNeverCompletesIsCutAtTheHeaderTimeout) {
  ProxyProtocolProxy px(300ms);
  Client c(px.port());
  ASSERT_TRUE(c.send("PROXY TCP4 1.2.3.4"));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(c.closed_by_peer());
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 5s);
}

}  // namespace
}  // namespace itest
