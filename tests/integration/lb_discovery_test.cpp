// Service discovery: DNS names re-resolved (through a resolver hook), keeping the last good
// answer; callbacks and static lists; the discovery service on the Server's control thread.
#include <map>
#include <optional>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "integration/helpers.hpp"

namespace itest {
namespace {

namespace asio = boost::asio;

SocketAddr ip(const char* text) { return *SocketAddr::parse(text); }

/// A DNS server in a map: answers (or failures) per host, changeable at any time.
class FakeDns {
 public:
  void set(const std::string& host, std::vector<SocketAddr> addrs) {
    std::lock_guard lk(mu_);
    answers_[host] = std::move(addrs);
    failing_.erase(host);
  }
  void fail(const std::string& host) {
    std::lock_guard lk(mu_);
    failing_.insert(host);
  }
  DnsResolver resolver() {
    return [this](const std::string& host, std::uint16_t) -> task<Result<std::vector<SocketAddr>>> {
      Result<std::vector<SocketAddr>> r =
          Error::internal(ErrorType::ConnectNoRoute, "NXDOMAIN " + host);
      {
        std::lock_guard lk(mu_);
        auto it = answers_.find(host);
        if (!failing_.count(host) && it != answers_.end()) r = it->second;
      }
      calls.add();
      co_return r;
    };
  }
  Latch calls;

 private:
  std::mutex mu_;
  std::map<std::string, std::vector<SocketAddr>> answers_;
  std::set<std::string> failing_;
};

std::vector<std::string> addrs_of(const LoadBalancerBase& lb) {
  std::vector<std::string> v;
  for (const auto& b : lb.backends()) v.push_back(b.addr.to_string());
  return v;
}

TEST(LbDiscovery, DnsNamesBecomeBackendsNamedHostPort) {
  FakeDns dns;
  // Answers in a rotated order and without ports; A and AAAA together.
  dns.set("api.test", {ip("10.0.0.2:0"), ip("[2001:db8::1]:0"), ip("10.0.0.1:0")});
  dns.set("db.test", {ip("10.0.1.1:0")});
  DnsDiscovery d({{"api.test", 8080, 2}, {"db.test", 5432, 1}}, dns.resolver());
  auto r = run_task(d.discover());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->size(), 4u);
  std::vector<std::string> got;
  for (const auto& b : *r)
    got.push_back(b.addr.to_string() + " " + b.name + " w" + std::to_string(b.weight));
  EXPECT_EQ(got, (std::vector<std::string>{
                     "10.0.0.1:8080 api.test:8080 w2", "10.0.0.2:8080 api.test:8080 w2",
                     "[2001:db8::1]:8080 api.test:8080 w2", "10.0.1.1:5432 db.test:5432 w1"}));
  EXPECT_EQ((*r)[0].metadata.at("dns"), "api.test");
}

TEST(LbDiscovery, DnsChangesArePickedUpAndTheLastGoodAnswerIsKept) {
  FakeDns dns;
  dns.set("api.test", {ip("10.0.0.1:0"), ip("10.0.0.2:0")});
  auto lb = std::make_shared<LoadBalancer<RoundRobin>>();
  DiscoveryService svc(lb, std::make_shared<DnsDiscovery>(std::vector<DnsName>{{"api.test", 80, 1}},
                                                          dns.resolver()));
  auto changed = run_task(svc.run_once());
  ASSERT_TRUE(changed);
  EXPECT_TRUE(*changed);
  EXPECT_EQ(addrs_of(*lb), (std::vector<std::string>{"10.0.0.1:80", "10.0.0.2:80"}));

  // Same addresses in another order: no change.
  dns.set("api.test", {ip("10.0.0.2:0"), ip("10.0.0.1:0")});
  EXPECT_FALSE(*run_task(svc.run_once()));

  // One address replaced: the set follows, and the survivor keeps its health.
  ASSERT_TRUE(lb->set_health(lb->find(ip("10.0.0.2:80")), false, "test"));
  dns.set("api.test", {ip("10.0.0.2:0"), ip("10.0.0.3:0")});
  EXPECT_TRUE(*run_task(svc.run_once()));
  EXPECT_EQ(addrs_of(*lb), (std::vector<std::string>{"10.0.0.2:80", "10.0.0.3:80"}));
  EXPECT_FALSE(lb->find(ip("10.0.0.2:80")).healthy());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(lb->select()->addr.to_string(), "10.0.0.3:80");

  // Resolution fails, then answers nothing: the last good addresses stay.
  dns.fail("api.test");
  auto kept = run_task(svc.run_once());
  ASSERT_TRUE(kept);
  EXPECT_FALSE(*kept);
  dns.set("api.test", {});
  EXPECT_FALSE(*run_task(svc.run_once()));
  EXPECT_EQ(addrs_of(*lb), (std::vector<std::string>{"10.0.0.2:80", "10.0.0.3:80"}));
  EXPECT_EQ(svc.stats().runs, 5u);
  EXPECT_EQ(svc.stats().changes, 2u);
  EXPECT_EQ(svc.stats().failures, 0u);
}

TEST(LbDiscovery, ANameThatNeverResolvedIsAnErrorAndTheSetStays) {
  FakeDns dns;
  auto lb = std::make_shared<LoadBalancer<RoundRobin>>(
      std::vector<Backend>{*Backend::parse("10.0.0.9:80")});
  DiscoveryService svc(lb, std::make_shared<DnsDiscovery>(
                               std::vector<DnsName>{{"nowhere.test", 80, 1}}, dns.resolver()));
  auto r = run_task(svc.run_once());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().to_string().find("NXDOMAIN nowhere.test"), std::string::npos);
  EXPECT_EQ(addrs_of(*lb), (std::vector<std::string>{"10.0.0.9:80"}));
  EXPECT_EQ(svc.stats().failures, 1u);
}

TEST(LbDiscovery, ServiceOnTheControlThreadFollowsDnsWhileTrafficFlows) {
  FakeDns dns;
  pt::Origin first(pt::Origin::text("first")), second(pt::Origin::text("second"));
  dns.set("app.test", {first.addr()});
  auto lb = std::make_shared<LoadBalancer<RoundRobin>>();
  class Proxy : public ProxyHttp<> {
   public:
    explicit Proxy(std::shared_ptr<LoadBalancer<RoundRobin>> l) : lb(std::move(l)) {}
    task<Result<HttpPeerPtr>> upstream_peer(Session&, NoCtx&) override {
      auto p = lb->select_peer();
      if (!p) co_return Error::http_status(503);
      co_return p;
    }
    std::shared_ptr<LoadBalancer<RoundRobin>> lb;
  };
  // The fake answers carry the origins' ports, which win over the name's.
  auto disc = std::make_shared<DiscoveryService>(
      lb, std::make_shared<DnsDiscovery>(std::vector<DnsName>{{"app.test", 80, 1}}, dns.resolver()),
      Millis(20));
  auto svc = http_proxy_service(std::make_shared<Proxy>(lb));
  ASSERT_TRUE(svc->add_tcp("127.0.0.1:0"));
  Server server;
  server.add_service(svc);
  server.add_background(disc);
  ASSERT_TRUE(server.start());
  // Runs are sequential: once the resolver was called twice, the first run's update is done.
  ASSERT_TRUE(dns.calls.wait_for(2));
  pt::Client c(svc->local_endpoints()[0].port());
  EXPECT_EQ(c.get("/")->body, "first");

  // The name now points at the second origin: traffic follows within two runs.
  dns.set("app.test", {second.addr()});
  const int seen = dns.calls.count();
  ASSERT_TRUE(dns.calls.wait_for(seen + 2));
  EXPECT_EQ(addrs_of(*lb), (std::vector<std::string>{second.addr().to_string()}));
  EXPECT_EQ(c.get("/")->body, "second");
  EXPECT_EQ(lb->backends()[0].name, "app.test:80");
  EXPECT_GE(disc->stats().changes, 2u);
  server.shutdown(false);
  server.wait();
}

TEST(LbDiscovery, SystemResolverFindsLocalhost) {
  auto r = run_task(DnsDiscovery::system_resolve("localhost", 8080));
  ASSERT_TRUE(r) << r.error().to_string();
  ASSERT_FALSE(r->empty());
  bool loopback = false;
  for (const auto& a : *r)
    loopback |= a.to_string() == "127.0.0.1:8080" || a.to_string() == "[::1]:8080";
  EXPECT_TRUE(loopback);
}

TEST(LbDiscovery, CallbackAndStatic) {
  auto lb = std::make_shared<LoadBalancer<Random>>();
  int calls = 0;
  auto cb = CallbackDiscovery::from_sync([&]() -> Result<std::vector<Backend>> {
    if (++calls == 2) return Error::internal(ErrorType::InternalError, "registry down");
    return std::vector<Backend>{*Backend::parse("10.0.0.1:80"), *Backend::parse("10.0.0.2:80", 3)};
  });
  DiscoveryService svc(lb, cb);
  EXPECT_TRUE(*run_task(svc.run_once()));
  EXPECT_FALSE(run_task(svc.run_once()));
  EXPECT_EQ(lb->backends().size(), 2u);
  EXPECT_EQ(svc.stats().failures, 1u);

  DiscoveryService fixed(
      lb, std::make_shared<StaticDiscovery>(std::vector<Backend>{*Backend::parse("10.0.0.5:80")}));
  EXPECT_TRUE(*run_task(fixed.run_once()));
  EXPECT_EQ(addrs_of(*lb), (std::vector<std::string>{"10.0.0.5:80"}));
  // A set the balancer refuses (weight 0) is a failure; the set stays.
  DiscoveryService bad(lb, std::make_shared<StaticDiscovery>(
                               std::vector<Backend>{*Backend::parse("10.0.0.6:80", 0)}));
  EXPECT_FALSE(run_task(bad.run_once()));
  EXPECT_EQ(addrs_of(*lb), (std::vector<std::string>{"10.0.0.5:80"}));
}

TEST(LbDiscovery, DnsNameParse) {
  auto a = DnsName::parse("api.example.com:8080", 3);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "api.example.com");
  EXPECT_EQ(a->port, 8080);
  EXPECT_EQ(a->weight, 3u);
  auto v6 = DnsName::parse("[::1]:443");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  for (const char* bad : {"no-port", "host:", ":80", "host:0", "host:70000", "[::1]443"})
    EXPECT_FALSE(DnsName::parse(bad)) << bad;
}

}  // namespace
}  // namespace itest
