// Active health checks: probe every backend on an interval, in parallel, and flip its health after
// consecutive successes or failures.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <portico/core/result.hpp>
#include <portico/core/task.hpp>
#include <portico/lb/backend.hpp>
#include <portico/lb/load_balancer.hpp>
#include <portico/server/background.hpp>

namespace portico {

/// How to probe one backend. Implementations must finish in bounded time (use timeouts).
class HealthCheck {
 public:
  virtual ~HealthCheck() = default;
  /// ok() when `backend` is healthy; the error says why not (it is logged on a flip).
  virtual task<Result<void>> check(const Backend& backend) = 0;
};

struct TcpHealthCheckOptions {
  Millis connect_timeout{1000};
  /// Probe this port instead of the backend's.
  std::optional<std::uint16_t> port;
};

/// Healthy when a TCP (or Unix socket) connection opens within the timeout; it is closed at once.
class TcpHealthCheck final : public HealthCheck {
 public:
  explicit TcpHealthCheck(TcpHealthCheckOptions opts = {}) : opts_(opts) {}
  task<Result<void>> check(const Backend& backend) override;

 private:
  TcpHealthCheckOptions opts_;
};

/// The response a HTTP health check got, for a custom validator.
struct HealthCheckResponse {
  std::uint16_t status = 0;
  /// The status line and header fields, as received.
  std::string head;
  /// The first value of header `name` (case-insensitive), or empty.
  std::string_view header(std::string_view name) const;
};

struct HttpHealthCheckOptions {
  std::string method = "GET";
  std::string path = "/";
  /// Host header; empty = the backend's address.
  std::string host;
  /// Extra request header fields.
  std::vector<std::pair<std::string, std::string>> headers;
  /// The status a healthy backend answers with, unless `validator` is set.
  std::uint16_t expected_status = 200;
  /// Decides health from the response instead of `expected_status`.
  std::function<bool(const HealthCheckResponse&)> validator;
  Millis connect_timeout{1000};
  /// From the request being sent to the end of the response header.
  Millis read_timeout{1000};
  /// Probe this port instead of the backend's.
  std::optional<std::uint16_t> port;
  /// HTTPS: the probe runs a TLS handshake first. The certificate is verified like an upstream
  /// peer's (on by default, see `tls_options`), so a backend with a bad certificate is down.
  bool tls = false;
  /// SNI and the name the certificate must carry; empty = `host` without its port, or no SNI
  /// and the backend's IP address when `host` is empty too.
  std::string sni;
  /// Verification and client certificate for `tls`: verify_cert, verify_hostname, ca_file,
  /// client_cert_file and client_key_file are used (connect_timeout above replaces
  /// connection_timeout; the handshake shares it). TLS sessions are resumed between probes.
  PeerOptions tls_options;
};

namespace detail {
class ClientTls;
}

/// Sends one HTTP/1.1 request (`Connection: close`), over TLS when `tls` is set, and checks the
/// response status (or the validator). The body is not read.
class HttpHealthCheck final : public HealthCheck {
 public:
  /// An error for options that cannot work (an empty method, a path not starting with '/', a
  /// header field with a line break).
  static Result<std::shared_ptr<HttpHealthCheck>> create(HttpHealthCheckOptions opts);
  task<Result<void>> check(const Backend& backend) override;
  const HttpHealthCheckOptions& options() const noexcept { return opts_; }
  /// TLS handshakes so far that resumed a session / that were full (HTTPS checks only).
  std::uint64_t tls_resumed() const noexcept;
  std::uint64_t tls_full_handshakes() const noexcept;

  explicit HttpHealthCheck(HttpHealthCheckOptions opts);

 private:
  HttpHealthCheckOptions opts_;
  std::shared_ptr<detail::ClientTls> tls_;  // contexts and sessions of HTTPS checks
};

struct HealthCheckConfig {
  /// Time from the start of one round to the start of the next (a slow round delays the next).
  Millis interval{1000};
  /// Consecutive passing checks that bring a down backend up.
  std::uint32_t consecutive_success = 1;
  /// Consecutive failing checks that take an up backend down.
  std::uint32_t consecutive_failure = 1;
};

/// Counters of a health check service; any thread may read them.
struct HealthCheckStats {
  std::uint64_t rounds = 0;
  std::uint64_t checks = 0;
  std::uint64_t failed_checks = 0;
  /// Flips this service caused.
  std::uint64_t marked_up = 0;
  std::uint64_t marked_down = 0;
};

/// Checks every backend of `lb` each interval, all in parallel, and flips their health after the
/// configured number of consecutive results; flips are logged, counted here and in the balancer,
/// and reported to LoadBalancerOptions::on_health_change. A backend marked down by passive health
/// is brought back by this service (consecutive_success passing checks).
///
/// Add it to a Server with `server.add_background(svc)`; or, embedded, co_spawn
/// `svc->start(watch)` on a single-threaded io_context (or a strand) and `watch.trigger()` to stop.
class HealthCheckService final : public BackgroundService {
 public:
  HealthCheckService(std::shared_ptr<LoadBalancerBase> lb, std::shared_ptr<HealthCheck> check,
                     HealthCheckConfig config = {});
  std::string_view name() const noexcept override { return "health check"; }
  task<void> start(ShutdownWatch shutdown) override;
  /// One round: checks every current backend once, in parallel; completes when all did.
  task<void> run_once();
  HealthCheckStats stats() const noexcept;

 private:
  task<void> round(ShutdownWatch watch);
  task<void> check_one(BackendRef b, ShutdownWatch watch);

  std::shared_ptr<LoadBalancerBase> lb_;
  std::shared_ptr<HealthCheck> check_;
  HealthCheckConfig cfg_;
  std::atomic<std::uint64_t> rounds_{0}, checks_{0}, failed_{0}, up_{0}, down_{0};
};

}  // namespace portico
