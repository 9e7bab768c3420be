// Round-robin load balancer: Pingora's first example in portico.
//
//   load_balancer                          two embedded origins, listening on 127.0.0.1:6188
//   load_balancer --backend 10.0.0.1:80 --backend 10.0.0.2:80 [--listen ADDR:PORT]
//   load_balancer --self-test              start, check the alternation, exit (used by ctest)
#include <cstdio>
#include <string>
#include <vector>

#include <portico/portico.hpp>
#include <portico/testing/client.hpp>
#include <portico/testing/origin.hpp>

using namespace portico;

class LB : public ProxyHttp<> {
 public:
  explicit LB(std::shared_ptr<LoadBalancer<RoundRobin>> lb) : lb_(std::move(lb)) {}

  task<Result<HttpPeerPtr>> upstream_peer(Session&, NoCtx&) override {
    co_return lb_->select_peer();
  }

  task<Result<void>> upstream_request_filter(Session&, RequestHeader& req, NoCtx&) override {
    req.insert_header("Host", "one.one.one.one");
    co_return ok();
  }

 private:
  std::shared_ptr<LoadBalancer<RoundRobin>> lb_;
};

int main(int argc, char** argv) {
  std::vector<std::string> backends;
  std::string listen = "127.0.0.1:6188";
  bool self_test = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--backend" && i + 1 < argc) backends.push_back(argv[++i]);
    else if (a == "--listen" && i + 1 < argc) listen = argv[++i];
    else if (a == "--self-test") self_test = true, listen = "127.0.0.1:0";
    else { std::fprintf(stderr, "usage: %s [--backend ADDR:PORT]... [--listen ADDR:PORT]\n", argv[0]); return 2; }
  }

  // With no --backend, two origins run inside this process so the demo needs no network.
  std::vector<std::unique_ptr<testing::Origin>> origins;
  if (backends.empty()) {
    for (int n = 1; n <= 2; ++n) {
      origins.push_back(std::make_unique<testing::Origin>(
          testing::Origin::text("origin " + std::to_string(n) + "\n")));
      backends.push_back(origins.back()->addr().to_string());
    }
  }
  auto upstreams = LoadBalancer<RoundRobin>::try_from_iter(backends);
  if (!upstreams) { std::fprintf(stderr, "%s\n", upstreams.error().to_string().c_str()); return 2; }

  Server server;
  auto lb = http_proxy_service(std::make_shared<LB>(*upstreams));
  if (auto r = lb->add_tcp(listen); !r) { std::fprintf(stderr, "%s\n", r.error().to_string().c_str()); return 2; }
  server.add_service(lb);

  if (!self_test) {
    std::printf("load balancer on %s over %zu backend(s); try: curl %s\n", listen.c_str(),
                backends.size(), listen.c_str());
    std::fflush(stdout);
    return server.run_forever();
  }
  if (!server.start()) return 1;
  testing::Client client(lb->local_endpoints()[0].port());
  std::string seen;
  for (int i = 0; i < 4; ++i) {
    auto r = client.get("/");
    if (!r || r->status != 200) return 1;
    seen += r->body;
  }
  std::printf("%s", seen.c_str());
  const bool alternates = seen == "origin 1\norigin 2\norigin 1\norigin 2\n" ||
                          seen == "origin 2\norigin 1\norigin 2\norigin 1\n";
  return alternates ? 0 : 1;
}
