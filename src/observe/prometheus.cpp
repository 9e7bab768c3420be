#include <portico/lb/health_check.hpp>
#include <portico/lb/load_balancer.hpp>
#include <portico/observe/prometheus.hpp>
#include <portico/proxy/service.hpp>

namespace portico::observe {

namespace {

class MetricsEndpoint final : public ProxyHttp<> {
 public:
  MetricsEndpoint(std::shared_ptr<Registry> r, std::string path)
      : registry_(std::move(r)), path_(std::move(path)) {}

  task<Result<bool>> request_filter(Session& s, NoCtx&) override {
    const auto& req = s.req_header();
    if (req.path() != path_) {
      co_await s.respond(404, "not found\n");
      co_return true;
    }
    if (req.method() != "GET" && req.method() != "HEAD") {
      co_await s.respond(405, "method not allowed\n");
      co_return true;
    }
    const std::string body = registry_->render_prometheus();
    co_await s.respond(200, body, "text/plain; version=0.0.4; charset=utf-8");
    co_return true;
  }

  task<Result<HttpPeerPtr>> upstream_peer(Session&, NoCtx&) override {
    co_return Error::internal(ErrorType::InternalError, "the metrics service has no upstream");
  }

 private:
  std::shared_ptr<Registry> registry_;
  std::string path_;
};

}  // namespace

std::shared_ptr<HttpProxyService> prometheus_service(std::shared_ptr<Registry> registry,
                                                     std::string name, std::string path) {
  if (!registry) registry = default_registry();
  auto svc = http_proxy_service(std::make_shared<MetricsEndpoint>(registry, std::move(path)), {},
                                std::move(name));
  svc->set_metrics_registry(std::move(registry));
  return svc;
}

std::uint64_t register_load_balancer_metrics(Registry& registry, std::string name,
                                             const std::shared_ptr<LoadBalancerBase>& lb,
                                             const std::shared_ptr<HealthCheckService>& checks) {
  return registry.add_collector([name = std::move(name), weak_lb = std::weak_ptr(lb),
                                 weak_checks = std::weak_ptr(checks)](Collection& c) {
    using T = MetricType;
    const Label l{"lb", name};
    if (auto b = weak_lb.lock()) {
      for (const BackendStatus& st : b->status()) {
        const std::string addr = st.backend.addr.to_string();
        const Label be{"backend", addr};
        c.add("portico_lb_backend_healthy", T::Gauge,
              "1 when the backend passes its health checks (or has none), else 0.", {l, be},
              st.healthy ? 1 : 0);
        c.add("portico_lb_backend_enabled", T::Gauge,
              "1 when the backend may be selected, 0 when it was taken out (drain).", {l, be},
              st.enabled ? 1 : 0);
        c.add("portico_lb_backend_inflight", T::Gauge,
              "Requests in flight to the backend (tracked by least-connection selections).",
              {l, be}, st.inflight);
      }
      const LoadBalancerStats s = b->stats();
      c.add("portico_lb_updates_total", T::Counter, "Backend sets published.", {l},
            static_cast<double>(s.updates));
      c.add("portico_lb_health_changes_total", T::Counter,
            "Backend health flips (active checks and passive reports), by direction.",
            {l, Label{"direction", "up"}}, static_cast<double>(s.marked_up));
      c.add("portico_lb_health_changes_total", T::Counter,
            "Backend health flips (active checks and passive reports), by direction.",
            {l, Label{"direction", "down"}}, static_cast<double>(s.marked_down));
      c.add("portico_lb_passive_marked_down_total", T::Counter,
            "Of the flips down, those caused by failed requests (passive health).", {l},
            static_cast<double>(s.passive_marked_down));
    }
    if (auto h = weak_checks.lock()) {
      const HealthCheckStats s = h->stats();
      c.add("portico_health_check_rounds_total", T::Counter, "Health check rounds run.", {l},
            static_cast<double>(s.rounds));
      c.add("portico_health_checks_total", T::Counter, "Health checks run, by result.",
            {l, Label{"result", "ok"}}, static_cast<double>(s.checks > s.failed_checks ? s.checks - s.failed_checks : 0));
      c.add("portico_health_checks_total", T::Counter, "Health checks run, by result.",
            {l, Label{"result", "failed"}}, static_cast<double>(s.failed_checks));
    }
  });
}

}  // namespace portico::observe
