// TestProxy: a proxy service on 127.0.0.1 port 0 inside the test process.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>

#include <portico/proxy/service.hpp>
#include <portico/server/server.hpp>

namespace portico::testing {

/// Runs `proxy` on its own Server (`threads` workers) listening on 127.0.0.1:0, with TLS when
/// `tls` is given. Stops (not gracefully) when destroyed.
class TestProxy {
 public:
  template <class P>
  explicit TestProxy(std::shared_ptr<P> proxy, HttpServerOptions opts = {}, std::size_t threads = 1,
                     std::optional<TlsSettings> tls = std::nullopt)
      : service_(http_proxy_service(std::move(proxy), opts)),
        server_(std::make_unique<Server>(ServerConf{.threads = threads})) {
    if (tls) {
      if (auto r = service_->add_tls("127.0.0.1:0", std::move(*tls)); !r)
        throw std::runtime_error(r.error().to_string());
    } else if (!service_->add_tcp("127.0.0.1:0")) {
      throw std::runtime_error("add_tcp");
    }
    server_->add_service(service_);
    if (auto r = server_->start(); !r) throw std::runtime_error(r.error().to_string());
  }
  ~TestProxy() {
    server_->shutdown(false);
    server_->wait();
  }

  std::uint16_t port() const { return service_->local_endpoints().at(0).port(); }
  Server& server() { return *server_; }
  HttpProxyService& service() { return *service_; }

 private:
  std::shared_ptr<HttpProxyService> service_;
  std::unique_ptr<Server> server_;
};

}  // namespace portico::testing
