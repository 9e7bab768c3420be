// Counters of the upstream connection pool, as HttpProxyService::pool_stats() reports them.
#pragma once

#include <cstdint>
#include <string>

namespace portico {

/// Why an idle upstream connection left the pool without serving another request.
enum class PoolEviction : std::uint8_t {
  Closed,       ///< the upstream closed it (EOF or error) while it was idle
  StrayData,    ///< the upstream sent bytes nobody asked for
  IdleTimeout,  ///< idle longer than PeerOptions::idle_timeout
  Limit,        ///< pushed out by pool_max_idle_per_key or pool_max_idle_total
  Shutdown,     ///< the server drained or stopped
};
inline constexpr std::size_t kPoolEvictionKinds = 5;

/// Pool counters, for one peer or summed over all. Counters only grow; `idle` is a gauge.
/// Each worker writes its own counters, so a snapshot taken under load is close, not exact.
struct UpstreamPoolStats {
  /// Connections established to the upstream.
  std::uint64_t opened = 0;
  /// Requests sent on an idle connection instead of a new one (local plus cross-worker).
  std::uint64_t reused = 0;
  /// Of `reused`: connections taken from another worker's pool and moved to this one.
  std::uint64_t reused_cross_worker = 0;
  /// Idle connections dropped, by PoolEviction.
  std::uint64_t evicted[kPoolEvictionKinds] = {};
  /// Idle connections held now.
  std::uint64_t idle = 0;

  std::uint64_t evicted_for(PoolEviction why) const noexcept {
    return evicted[static_cast<std::size_t>(why)];
  }
  std::uint64_t evicted_total() const noexcept {
    std::uint64_t n = 0;
    for (auto v : evicted) n += v;
    return n;
  }
  /// Share of upstream requests that did not need a new connection, in [0, 1].
  double reuse_ratio() const noexcept {
    const std::uint64_t all = opened + reused;
    return all == 0 ? 0.0 : static_cast<double>(reused) / static_cast<double>(all);
  }
  UpstreamPoolStats& operator+=(const UpstreamPoolStats& o) noexcept {
    opened += o.opened;
    reused += o.reused;
    reused_cross_worker += o.reused_cross_worker;
    for (std::size_t i = 0; i < kPoolEvictionKinds; ++i) evicted[i] += o.evicted[i];
    idle += o.idle;
    return *this;
  }
};

/// The counters of one pool key (one kind of interchangeable connection).
struct PeerPoolStats {
  /// HttpPeer::to_string() of the first peer seen with this key.
  std::string peer;
  UpstreamPoolStats stats;
};

/// Name of an eviction reason as used in metrics ("closed", "stray_data", ...).
const char* to_string(PoolEviction why) noexcept;

}  // namespace portico
