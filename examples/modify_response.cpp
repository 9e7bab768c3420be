// Rewrites the request path on its way upstream and adds a header to every response.
//
//   modify_response --upstream ADDR:PORT [--listen ADDR:PORT]
//   modify_response --self-test
#include <cstdio>
#include <string>

#include <portico/portico.hpp>
#include <portico/testing/client.hpp>
#include <portico/testing/origin.hpp>

using namespace portico;

struct Ctx {
  std::string original_path;
};

class Rewriter : public ProxyHttp<Ctx> {
 public:
  explicit Rewriter(HttpPeerPtr upstream) : upstream_(std::move(upstream)) {}

  task<Result<HttpPeerPtr>> upstream_peer(Session&, Ctx&) override { co_return upstream_; }

  // "/old/x" reaches the origin as "/new/x".
  task<Result<void>> upstream_request_filter(Session&, RequestHeader& req, Ctx& ctx) override {
    ctx.original_path = std::string(req.path());
    if (req.uri().starts_with("/old/")) req.set_uri("/new/" + std::string(req.uri().substr(5)));
    co_return ok();
  }

  task<Result<void>> response_filter(Session&, ResponseHeader& resp, Ctx& ctx) override {
    resp.insert_header("X-Proxied-By", "portico");
    resp.insert_header("X-Original-Path", ctx.original_path);
    co_return ok();
  }

 private:
  HttpPeerPtr upstream_;
};

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:6190", upstream;
  bool self_test = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--listen" && i + 1 < argc) listen = argv[++i];
    else if (a == "--upstream" && i + 1 < argc) upstream = argv[++i];
    else if (a == "--self-test") self_test = true;
    else { std::fprintf(stderr, "usage: %s --upstream ADDR:PORT [--listen ADDR:PORT]\n", argv[0]); return 2; }
  }
  std::unique_ptr<testing::Origin> origin;
  if (self_test) {
    origin = std::make_unique<testing::Origin>([](const testing::OriginRequest& r) {
      return testing::OriginResponse{200, {}, "path=" + r.target};
    });
    upstream = origin->addr().to_string();
    listen = "127.0.0.1:0";
  }
  auto addr = SocketAddr::parse(upstream);
  if (!addr) { std::fprintf(stderr, "--upstream ADDR:PORT is required\n"); return 2; }

  Server server;
  auto svc = http_proxy_service(std::make_shared<Rewriter>(make_peer(*addr)));
  if (auto r = svc->add_tcp(listen); !r) return 2;
  server.add_service(svc);
  if (!self_test) return server.run_forever();

  if (!server.start()) return 1;
  testing::Client c(svc->local_endpoints()[0].port());
  auto r = c.get("/old/page");
  bool good = r && r->body == "path=/new/page" && r->header("X-Proxied-By") == "portico" &&
              r->header("X-Original-Path") == "/old/page";
  std::printf("%s\n", good ? "ok" : "FAILED");
  return good ? 0 : 1;
}
