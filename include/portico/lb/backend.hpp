// Backend: one upstream server a load balancer can pick, and the handles selection hands out.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <portico/proxy/peer.hpp>

namespace portico {

/// One upstream server: where it is, how much traffic it should get, and what else the
/// application wants to know about it. Its identity is its address: two backends with the same
/// address are the same backend (health and in-flight counts follow the address across updates).
struct Backend {
  SocketAddr addr;
  /// Relative share of traffic, 1..65535.
  std::uint32_t weight = 1;
  /// The name consistent hashing (KetamaHashing) hashes: nginx's `server` string as written in
  /// the upstream block, e.g. "10.0.0.1:80", "[::1]:8080", "app.internal:80" or "unix:/run/a.sock".
  /// Empty means `addr.to_string()`.
  std::string name;
  /// Free-form data for the application (zone, version, ...); not part of the identity.
  std::map<std::string, std::string, std::less<>> metadata;

  /// A weight-1 backend from a literal address ("10.0.0.1:80", "[::1]:80", "unix:/path").
  static std::optional<Backend> parse(std::string_view addr, std::uint32_t weight = 1);
  /// `name`, or the address when `name` is empty.
  std::string hash_name() const { return name.empty() ? addr.to_string() : name; }

  friend bool operator==(const Backend&, const Backend&) = default;
};

namespace detail {

inline std::int64_t steady_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// What the proxy learns about a backend at run time. Shared by every version of the backend set
/// the backend appears in, so health and in-flight counts survive updates. One cache line of its
/// own: a least-connections scan reads one line per backend, and no two backends share one.
struct alignas(64) BackendState {
  /// The health verdict: active checks and passive reports set it; all backends start healthy.
  std::atomic<bool> healthy{true};
  /// Manual switch (drain): a disabled backend is never selected.
  std::atomic<bool> enabled{true};
  /// When a backend marked down by passive health may be tried again by traffic (steady-clock
  /// nanoseconds); 0 = only a health check brings it back.
  std::atomic<std::int64_t> retry_at_ns{0};
  /// Consecutive failed requests reported by traffic.
  std::atomic<std::uint32_t> passive_failures{0};
  /// Consecutive active check results (the health check service only).
  std::atomic<std::uint32_t> check_successes{0};
  std::atomic<std::uint32_t> check_failures{0};
  /// Requests in flight (tracked with BackendRef::track).
  std::atomic<std::int32_t> inflight{0};

  bool usable() const noexcept {
    if (!enabled.load(std::memory_order_relaxed)) return false;
    if (healthy.load(std::memory_order_relaxed)) return true;
    const std::int64_t r = retry_at_ns.load(std::memory_order_relaxed);
    return r != 0 && steady_now_ns() >= r;
  }
};

/// An immutable backend plus its peer and its shared state.
struct BackendNode {
  Backend backend;
  HttpPeerPtr peer;
  std::shared_ptr<BackendState> state;
};

}  // namespace detail

class InFlight;

/// A selected backend: cheap to copy (one reference count), valid after the backend set changes.
/// Empty when nothing could be selected.
class BackendRef {
 public:
  BackendRef() = default;
  explicit BackendRef(std::shared_ptr<const detail::BackendNode> n) noexcept
      : node_(std::move(n)) {}

  explicit operator bool() const noexcept { return node_ != nullptr; }
  const Backend& backend() const noexcept { return node_->backend; }
  const Backend& operator*() const noexcept { return node_->backend; }
  const Backend* operator->() const noexcept { return &node_->backend; }
  /// The peer to return from `upstream_peer` (shared, not copied).
  const HttpPeerPtr& peer() const noexcept { return node_->peer; }
  /// The current health verdict (active checks and passive reports).
  bool healthy() const noexcept { return node_->state->healthy.load(std::memory_order_relaxed); }
  bool enabled() const noexcept { return node_->state->enabled.load(std::memory_order_relaxed); }
  /// Whether selection may pick it now: enabled and healthy (or due for a passive retry).
  bool usable() const noexcept { return node_->state->usable(); }
  /// Requests currently tracked in flight to this backend, on all threads.
  std::int32_t inflight() const noexcept {
    return node_->state->inflight.load(std::memory_order_relaxed);
  }
  /// Counts one request in flight to this backend until the returned guard is destroyed or
  /// reset. LeastConnections and PowerOfTwoChoices read these counts. Keep the guard in the
  /// request context (it is destroyed after `logging`).
  InFlight track() const noexcept;

  const std::shared_ptr<const detail::BackendNode>& node() const noexcept { return node_; }
  detail::BackendState& state() const noexcept { return *node_->state; }

  friend bool operator==(const BackendRef& a, const BackendRef& b) noexcept {
    return a.node_ == b.node_;
  }

 private:
  std::shared_ptr<const detail::BackendNode> node_;
};

/// One request in flight to a backend; move-only. Assigning a new guard (e.g. on a retry that
/// picked another backend) releases the previous one.
class InFlight {
 public:
  InFlight() = default;
  explicit InFlight(BackendRef b) noexcept : b_(std::move(b)) {
    if (b_) b_.state().inflight.fetch_add(1, std::memory_order_relaxed);
  }
  InFlight(InFlight&& o) noexcept : b_(std::exchange(o.b_, BackendRef{})) {}
  InFlight& operator=(InFlight&& o) noexcept {
    if (this != &o) {
      reset();
      b_ = std::exchange(o.b_, BackendRef{});
    }
    return *this;
  }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;
  ~InFlight() { reset(); }

  void reset() noexcept {
    if (b_) b_.state().inflight.fetch_sub(1, std::memory_order_relaxed);
    b_ = BackendRef{};
  }
  const BackendRef& backend() const noexcept { return b_; }

 private:
  BackendRef b_;
};

inline InFlight BackendRef::track() const noexcept { return InFlight(*this); }

}  // namespace portico
