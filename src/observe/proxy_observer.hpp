// ProxyObserver: the built-in metrics and the access log of one HttpProxyService, recorded by the
// engine at connection open/close and at the end of each request.
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include <portico/core/error.hpp>
#include <portico/observe/access_log.hpp>
#include <portico/observe/metrics.hpp>
#include <portico/proxy/session.hpp>
#include <portico/upstream/pool.hpp>

namespace portico::detail {

inline constexpr std::size_t kErrorTypes = static_cast<std::size_t>(ErrorType::UnknownError) + 1;
inline constexpr std::size_t kErrorSources = 4;

/// The series of one service, looked up once; recording touches only them. Every member may be
/// called from any worker at the same time.
class ProxyObserver {
 public:
  ProxyObserver(std::shared_ptr<observe::Registry> registry, std::string service);
  ~ProxyObserver();
  ProxyObserver(const ProxyObserver&) = delete;
  ProxyObserver& operator=(const ProxyObserver&) = delete;

  void connection_opened() noexcept {
    connections_->inc();
    active_->inc();
  }
  void connection_closed() noexcept { active_->dec(); }
  /// An idle keep-alive connection parked (+1) or woke up / closed while parked (-1).
  void connection_parked(int delta) noexcept { parked_->add(delta); }
  /// An idle connection that cannot be parked (HTTP/2, PROXY protocol, TLS with bytes
  /// buffered) gave back its buffers (+1), or became busy or closed after that (-1).
  void connection_trimmed(int delta) noexcept { trimmed_->add(delta); }
  /// The TLS handshake of a downstream connection: failed, or full / resumed.
  void tls_handshake(bool ok, bool resumed) noexcept {
    (ok ? (resumed ? tls_resumed_ : tls_full_) : tls_failed_)->inc();
  }
  // HTTP/2: client connections and streams, upstream sessions and streams (gauges), streams
  // the client reset, GOAWAYs sent to clients by error code.
  void h2_connection(int delta) noexcept { h2_conns_->add(delta); }
  void h2_stream(int delta) noexcept {
    h2_streams_->add(delta);
    if (delta > 0) h2_streams_total_->inc();
  }
  void h2_client_reset() noexcept { h2_resets_->inc(); }
  void h2_goaway_sent(std::uint32_t code) noexcept {
    h2_goaways_[code < h2_goaways_.size() ? code : h2_goaways_.size() - 1]->inc();
  }
  void h2_upstream_session(int delta) noexcept { h2_up_sessions_->add(delta); }
  void h2_upstream_stream(int delta) noexcept { h2_up_streams_->add(delta); }
  /// A failed upstream attempt that is retried (the final failure is counted by request_done).
  void upstream_attempt_failed(const Error& e) noexcept;
  /// The request is over (after the logging hook): counts, latency, bytes, access log line.
  void request_done(const Session& s, const Error* err) noexcept;

  /// The log written by request_done, or null. Set before the service starts.
  std::shared_ptr<observe::AccessLog> access_log;

  const std::shared_ptr<observe::Registry>& registry() const noexcept { return registry_; }
  const std::string& service() const noexcept { return service_; }

 private:
  observe::Counter& lazy(std::atomic<observe::Counter*>& slot, observe::CounterFamily& f,
                         std::initializer_list<std::string_view> values) noexcept;

  std::shared_ptr<observe::Registry> registry_;
  std::string service_;
  // index: status / 100 (1..5), 0 for no response
  std::array<observe::Counter*, 6> requests_{};
  observe::Histogram* duration_;
  observe::Gauge* active_;
  observe::Gauge* parked_;
  observe::Gauge* trimmed_;
  observe::Counter* connections_;
  observe::Counter *tls_full_, *tls_resumed_, *tls_failed_;
  observe::Counter *bytes_in_, *bytes_out_, *spliced_;
  observe::Counter* retries_;
  observe::Gauge *h2_conns_, *h2_streams_, *h2_up_sessions_, *h2_up_streams_;
  observe::Counter *h2_streams_total_, *h2_resets_;
  // by HTTP/2 error code 0x0..0xd, the last one for anything above
  std::array<observe::Counter*, 15> h2_goaways_{};
  // Error series appear when an error of that kind first happens.
  observe::CounterFamily* upstream_errors_family_;
  observe::CounterFamily* request_errors_family_;
  std::array<std::atomic<observe::Counter*>, kErrorTypes> upstream_errors_{};
  std::array<std::atomic<observe::Counter*>, kErrorTypes * kErrorSources> request_errors_{};
};

/// Registers a collector of a proxy service's pool and upstream TLS counters in `registry`;
/// returns its id. The getters are called at scrape time.
struct PoolSources {
  std::function<UpstreamPoolStats()> total;
  std::function<std::uint64_t()> tls_full;
  std::function<std::uint64_t()> tls_resumed;
};
std::uint64_t register_pool_collector(observe::Registry& registry, std::string service,
                                      PoolSources sources);

}  // namespace portico::detail
