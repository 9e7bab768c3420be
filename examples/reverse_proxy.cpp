// A plain reverse proxy: round robin over --upstream addresses. Benchmarks and conformance
// tests drive this binary.
//
//   reverse_proxy --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000 [--upstream ...] [--threads N]
//   reverse_proxy --self-test
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <portico/portico.hpp>
#include <portico/testing/client.hpp>
#include <portico/testing/origin.hpp>

using namespace portico;

class ReverseProxy : public ProxyHttp<> {
 public:
  explicit ReverseProxy(std::shared_ptr<LoadBalancer<RoundRobin>> lb) : lb_(std::move(lb)) {}
  task<Result<HttpPeerPtr>> upstream_peer(Session&, NoCtx&) override {
    co_return lb_->select_peer();
  }

 private:
  std::shared_ptr<LoadBalancer<RoundRobin>> lb_;
};

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:8080";
  std::vector<std::string> upstreams;
  std::size_t threads = 1;
  bool self_test = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--listen" && i + 1 < argc) listen = argv[++i];
    else if (a == "--upstream" && i + 1 < argc) upstreams.push_back(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::strtoul(argv[++i], nullptr, 10);
    else if (a == "--self-test") self_test = true;
    else {
      std::fprintf(stderr, "usage: %s --listen ADDR:PORT --upstream ADDR:PORT... [--threads N]\n", argv[0]);
      return 2;
    }
  }
  std::unique_ptr<testing::Origin> origin;
  if (self_test) {
    origin = std::make_unique<testing::Origin>([](const testing::OriginRequest& r) {
      return testing::OriginResponse{200, {}, r.method + " " + r.target + " " + r.body};
    });
    upstreams = {origin->addr().to_string()};
    listen = "127.0.0.1:0";
  }
  if (upstreams.empty()) { std::fprintf(stderr, "at least one --upstream is required\n"); return 2; }
  auto lb = LoadBalancer<RoundRobin>::try_from_iter(upstreams);
  if (!lb) { std::fprintf(stderr, "%s\n", lb.error().to_string().c_str()); return 2; }

  Server server(ServerConf{.threads = threads});
  auto svc = http_proxy_service(std::make_shared<ReverseProxy>(*lb));
  if (auto r = svc->add_tcp(listen); !r) { std::fprintf(stderr, "%s\n", r.error().to_string().c_str()); return 2; }
  server.add_service(svc);
  if (!self_test) {
    // Scripts and tests learn the bound port (e.g. after --listen 127.0.0.1:0) from this line.
    return server.run_forever([&] {
      std::printf("listening on %s\n", svc->local_endpoints().at(0).to_string().c_str());
      std::fflush(stdout);
    });
  }
  if (!server.start()) return 1;
  testing::Client c(svc->local_endpoints()[0].port());
  auto get = c.get("/hello?x=1");
  auto post = c.request("POST", "/submit", {}, "payload");
  bool good = get && get->body == "GET /hello?x=1 " && post && post->body == "POST /submit payload";
  std::printf("%s\n", good ? "ok" : "FAILED");
  return good ? 0 : 1;
}
