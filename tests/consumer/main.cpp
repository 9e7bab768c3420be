// Builds a proxy against the installed headers and library, starts it on port 0, stops it.
#include <cstdio>

#include <portico/portico.hpp>

class Hello : public portico::ProxyHttp<> {
 public:
  portico::task<portico::Result<portico::HttpPeerPtr>> upstream_peer(portico::Session&,
                                                                     portico::NoCtx&) override {
    co_return portico::make_peer(portico::SocketAddr::loopback(9));
  }
};

int main() {
  portico::Server server;
  auto svc = portico::http_proxy_service(std::make_shared<Hello>());
  if (!svc->add_tcp("127.0.0.1:0")) return 1;
  server.add_service(svc);
  if (!server.start()) return 1;
  const bool bound = !svc->local_endpoints().empty() && svc->local_endpoints()[0].port() != 0;
  server.shutdown(false);
  server.wait();
  std::printf("consumer %s\n", bound ? "ok" : "FAILED");
  return bound ? 0 : 1;
}
