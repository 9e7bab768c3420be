// Service discovery: where the backend set comes from (a static list, DNS names re-resolved on an
// interval, or a callback), kept current by a background service.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <portico/core/result.hpp>
#include <portico/core/task.hpp>
#include <portico/lb/backend.hpp>
#include <portico/lb/load_balancer.hpp>
#include <portico/server/background.hpp>

namespace portico {

/// Produces the current backend set.
class ServiceDiscovery {
 public:
  virtual ~ServiceDiscovery() = default;
  /// The backends now. An error keeps the balancer's current set.
  virtual task<Result<std::vector<Backend>>> discover() = 0;
};

/// A fixed list.
class StaticDiscovery final : public ServiceDiscovery {
 public:
  explicit StaticDiscovery(std::vector<Backend> backends) : backends_(std::move(backends)) {}
  task<Result<std::vector<Backend>>> discover() override;

 private:
  std::vector<Backend> backends_;
};

/// One DNS name to resolve.
struct DnsName {
  std::string host;
  std::uint16_t port = 80;
  std::uint32_t weight = 1;
  /// "host:port" (or "[v6]:port"), or an error.
  static Result<DnsName> parse(std::string_view text, std::uint32_t weight = 1);
};

/// Resolves a host to addresses. An address with port 0 gets the name's port; a hook may return
/// other ports (e.g. from SRV records or a registry). The default uses the system resolver
/// (getaddrinfo, A and AAAA, the name's port) off the event loop; tests inject their own.
using DnsResolver = std::function<task<Result<std::vector<SocketAddr>>>(const std::string& host,
                                                                        std::uint16_t port)>;

/// Backends from DNS names, re-resolved each time discover() runs. Every address of a name
/// becomes a backend with the name's weight, named "host:port" (so KetamaHashing maps keys as
/// nginx does for `server host:port`); addresses are sorted so that a resolver rotating its
/// answers does not look like a change. When resolving a name fails or returns nothing, its last
/// good addresses are kept; discover() fails only when no name has any address.
class DnsDiscovery final : public ServiceDiscovery {
 public:
  explicit DnsDiscovery(std::vector<DnsName> names, DnsResolver resolver = {});
  task<Result<std::vector<Backend>>> discover() override;
  /// The system resolver used by default.
  static task<Result<std::vector<SocketAddr>>> system_resolve(const std::string& host,
                                                              std::uint16_t port);

 private:
  std::vector<DnsName> names_;
  DnsResolver resolve_;
  std::map<std::string, std::vector<SocketAddr>> last_good_;  // by "host:port"
};

/// Backends from an application callback (a config store, a service registry...).
class CallbackDiscovery final : public ServiceDiscovery {
 public:
  using AsyncFn = std::function<task<Result<std::vector<Backend>>>()>;
  using SyncFn = std::function<Result<std::vector<Backend>>()>;
  explicit CallbackDiscovery(AsyncFn fn) : fn_(std::move(fn)) {}
  /// Wraps a plain (non-coroutine) callback; it runs on the control thread, so keep it quick.
  static std::shared_ptr<CallbackDiscovery> from_sync(SyncFn fn);
  task<Result<std::vector<Backend>>> discover() override;

 private:
  AsyncFn fn_;
};

struct DiscoveryStats {
  std::uint64_t runs = 0;
  std::uint64_t failures = 0;
  /// Runs that changed the balancer's set.
  std::uint64_t changes = 0;
};

/// Runs `discovery` now and then every `interval`, and updates `lb` when the set changed. A
/// failure is logged and counted; the current set stays. A Server runs it on its control thread
/// (`server.add_background`); embedded, co_spawn `start(watch)` like HealthCheckService.
class DiscoveryService final : public BackgroundService {
 public:
  DiscoveryService(std::shared_ptr<LoadBalancerBase> lb,
                   std::shared_ptr<ServiceDiscovery> discovery, Millis interval = Millis(30000));
  std::string_view name() const noexcept override { return "service discovery"; }
  task<void> start(ShutdownWatch shutdown) override;
  /// One discovery run; true when the set changed.
  task<Result<bool>> run_once();
  DiscoveryStats stats() const noexcept;

 private:
  std::shared_ptr<LoadBalancerBase> lb_;
  std::shared_ptr<ServiceDiscovery> discovery_;
  Millis interval_;
  std::atomic<std::uint64_t> runs_{0}, failures_{0}, changes_{0};
};

}  // namespace portico
