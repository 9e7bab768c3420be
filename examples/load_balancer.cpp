// Load balancer: Pingora's first example in portico, with health checks and a choice of algorithm.
//
//   load_balancer                          two embedded origins, listening on 127.0.0.1:6188
//   load_balancer --backend 10.0.0.1:80 --backend 10.0.0.2:80 [--listen ADDR:PORT]
//                 [--selection round_robin|random|hash|ketama|least_conn|p2c]
//                 [--health-check none|tcp|http] [--health-interval-ms N]
//   load_balancer --self-test              start, check balancing and health checks, exit (ctest)
//   load_balancer -c conf.yaml [-t] ...    threads, limits, timeouts and listeners from a file
//                                          (docs/configuration.md); flags override it
//
// Hashing selections use the request path as the key. A request that fails to connect is retried
// on another backend; three failures in a row mark a backend down (passive health) until the
// active health check passes again.
#include <chrono>
#include <cstdio>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <portico/portico.hpp>
#include <portico/server/cli.hpp>
#include <portico/testing/client.hpp>
#include <portico/testing/origin.hpp>

using namespace portico;

struct Ctx {
  InFlight in_flight;  // least_conn and p2c count requests in flight per backend
};

class LB : public ProxyHttp<Ctx> {
 public:
  explicit LB(std::shared_ptr<LoadBalancerBase> lb) : lb_(std::move(lb)) {}

  task<Result<HttpPeerPtr>> upstream_peer(Session& s, Ctx& ctx) override {
    // On a retry, skip the backends that already failed for this request.
    auto not_failed = [&](const Backend& b) {
      for (const auto& p : s.failed_peers())
        if (p->address == b.addr) return false;
      return true;
    };
    BackendRef b = lb_->select_any(s.req_header().path(), 256, not_failed);
    if (!b) co_return Error::http_status(503, "no healthy backend");
    ctx.in_flight = b.track();
    co_return b.peer();
  }

  Error fail_to_connect(Session&, const HttpPeer& peer, Ctx&, Error e) override {
    lb_->report(peer.address, false);
    return e;  // connect errors are retried
  }

  task<void> logging(Session&, const Error* e, Ctx& ctx) override {
    if (!e) lb_->report(ctx.in_flight.backend(), true);  // resets the passive failure count
    co_return;
  }

 private:
  std::shared_ptr<LoadBalancerBase> lb_;
};

int main(int argc, char** argv) {
  Cli cli("load_balancer", "Load balancer over --backend addresses, with health checks.");
  std::vector<std::string> addrs;
  std::string listen, selection = "round_robin", check = "none";
  Millis interval{1000};
  bool self_test = false;
  cli.add_option("--backend", addrs, "ADDR:PORT of a backend (repeatable; none: embedded origins)")
      .add_option("--listen", listen, "ADDR:PORT to listen on (default 127.0.0.1:6188)")
      .add_option("--selection", selection, "round_robin|random|hash|ketama|least_conn|p2c")
      .add_option("--health-check", check, "none|tcp|http")
      .add_option("--health-interval-ms", interval, "Health check interval")
      .add_option("--threads", cli.config().threads, "Worker threads", true)
      .add_flag("--self-test", self_test, "Start, check balancing and health checks, exit");
  if (auto outcome = cli.parse(argc, argv); !outcome.run) return outcome.exit_code;
  ServerConfig& cfg = cli.config();
  if (self_test) listen = "127.0.0.1:0";
  if (check != "none" && check != "tcp" && check != "http") {
    std::fprintf(stderr, "--health-check is none, tcp or http\n");
    return 2;
  }

  // With no --backend, two origins (three in the self-test) run inside this process so the demo
  // needs no network. The self-test adds a backend where nothing listens: the health check must
  // take it out.
  std::vector<std::unique_ptr<testing::Origin>> origins;
  if (addrs.empty() && cfg.daemon && !self_test) {
    // They run on threads, which do not survive the daemon's fork.
    std::fprintf(stderr, "daemon mode needs --backend (the embedded origins cannot run)\n");
    return 2;
  }
  if (addrs.empty()) {
    for (int n = 1; n <= (self_test ? 3 : 2); ++n) {
      origins.push_back(std::make_unique<testing::Origin>(
          testing::Origin::text("origin " + std::to_string(n) + "\n")));
      addrs.push_back(origins.back()->addr().to_string());
    }
  }
  if (self_test) {
    testing::Origin probe;  // bound then closed: its port refuses connections
    addrs.push_back(SocketAddr::loopback(probe.port()).to_string());
    check = "http";
    interval = Millis(100);
  }

  std::vector<Backend> backends;
  for (const auto& a : addrs) {
    auto b = Backend::parse(a);
    if (!b) {
      std::fprintf(stderr, "not a backend address: %s\n", a.c_str());
      return 2;
    }
    backends.push_back(*b);
  }
  LoadBalancerOptions lb_opts;
  lb_opts.passive_failures = 3;
  std::promise<void> first_down;
  std::once_flag once;
  lb_opts.on_health_change = [&](const Backend&, bool healthy) {
    if (!healthy) std::call_once(once, [&] { first_down.set_value(); });
  };
  auto lb = make_load_balancer(selection, backends, lb_opts);
  if (!lb) {
    std::fprintf(stderr, "%s\n", lb.error().to_string().c_str());
    return 2;
  }

  // --listen replaces the configuration's listeners; with neither, 127.0.0.1:6188. Applied
  // again when SIGHUP reloads the configuration file.
  auto flags_over_file = [&](ServerConfig& c) {
    if (listen.empty() && !c.listeners.empty()) return;
    ListenerConfig l;
    l.address = listen.empty() ? "127.0.0.1:6188" : listen;
    l.origin = "--listen";
    c.listeners = {std::move(l)};
  };
  flags_over_file(cfg);
  Server server(cli.server_conf(flags_over_file));
  auto proxy = http_proxy_service(std::make_shared<LB>(*lb), to_http_server_options(cfg));
  if (auto r = configure_service(*proxy, cfg); !r) {
    std::fprintf(stderr, "%s\n", std::string(r.error().context()).c_str());
    return 2;
  }
  server.add_service(proxy);

  std::shared_ptr<HealthCheckService> health;
  if (check != "none") {
    std::shared_ptr<HealthCheck> hc = std::make_shared<TcpHealthCheck>();
    if (check == "http") {
      HttpHealthCheckOptions o;
      o.path = "/";
      hc = HttpHealthCheck::create(o).value();
    }
    health = std::make_shared<HealthCheckService>(
        *lb, hc, HealthCheckConfig{.interval = interval});
    server.add_background(health);
  }

  if (!self_test) {
    // Scripts and tests learn the bound port (e.g. after --listen 127.0.0.1:0) from this line.
    return server.run_forever([&] {
      std::printf("listening on %s: %s over %zu backend(s), health check %s\n",
                  proxy->local_endpoints().at(0).to_string().c_str(), selection.c_str(),
                  addrs.size(), check.c_str());
      std::fflush(stdout);
    });
  }

  // Self-test: the first health check round takes the dead backend out; then 30 requests all
  // succeed, 10 on each origin (round robin skips the dead backend's turn).
  if (!server.start()) return 1;
  const bool dead_is_down =
      first_down.get_future().wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  std::printf("dead backend marked down: %s\n", dead_is_down ? "yes" : "no");
  testing::Client client(proxy->local_endpoints()[0].port());
  std::map<std::string, int> seen;
  for (int i = 0; i < 30; ++i) {
    auto r = client.get("/");
    if (!r || r->status != 200) return 1;
    ++seen[r->body];
  }
  for (auto& [body, n] : seen) std::printf("%d x %s", n, body.c_str());
  const bool even = selection != "round_robin" ||
                    (seen.size() == 3 && seen.begin()->second == 10 && seen.rbegin()->second == 10);
  return dead_is_down && seen.size() == 3 && even ? 0 : 1;
}
