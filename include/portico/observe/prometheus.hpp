// The Prometheus scrape endpoint as a service, and the metrics of a load balancer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <portico/observe/metrics.hpp>

namespace portico {

class HttpProxyService;
class LoadBalancerBase;
class HealthCheckService;

namespace observe {

/// A service answering `GET path` (and HEAD) with `registry.render_prometheus()` as
/// `text/plain; version=0.0.4`; 405 for another method on `path`, 404 for any other path. Its
/// own requests are counted in `registry` under `service="<name>"`. Add a listener and give it
/// to the Server:
///
///     auto prom = portico::observe::prometheus_service();
///     prom->add_tcp("127.0.0.1:9090");
///     server.add_service(prom);
std::shared_ptr<HttpProxyService> prometheus_service(
    std::shared_ptr<Registry> registry = default_registry(), std::string name = "prometheus",
    std::string path = "/metrics");

/// Adds the backends of `lb` (and the counters of its health check service, when given) to the
/// samples of `registry`, labelled `lb="<name>"`: per backend health, enabled flag and
/// in-flight requests, plus health flips and backend set updates. Read at scrape time through
/// weak references: once `lb` is gone its samples disappear. Returns the collector id
/// (Registry::remove_collector).
std::uint64_t register_load_balancer_metrics(Registry& registry, std::string name,
                                             const std::shared_ptr<LoadBalancerBase>& lb,
                                             const std::shared_ptr<HealthCheckService>& checks = nullptr);

}  // namespace observe
}  // namespace portico
