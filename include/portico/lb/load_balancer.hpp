// LoadBalancer<Selection>: picks a healthy backend for each request, lock-free, from a backend set
// that health checks, discovery and the application may change at any time.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <portico/core/error.hpp>
#include <portico/core/result.hpp>
#include <portico/core/socket_addr.hpp>
#include <portico/lb/backend.hpp>
#include <portico/lb/rcu.hpp>
#include <portico/lb/selection.hpp>
#include <portico/proxy/peer.hpp>

namespace portico {

struct LoadBalancerOptions {
  /// Builds the peer handed out for a backend: TLS, SNI, PeerOptions, group key. Called on the
  /// thread that updates the set. Default: plain HTTP to `Backend::addr`.
  std::function<HttpPeerPtr(const Backend&)> peer_factory;
  /// Passive health: this many consecutive failures reported with `report()` mark a backend down;
  /// 0 turns passive health off.
  std::uint32_t passive_failures = 0;
  /// A backend marked down by passive health comes back when an active health check passes. With
  /// no health check running, traffic may try it again after this long (nginx's fail_timeout).
  Millis passive_retry_after{10000};
  /// Called whenever a backend's health flips, on the thread that saw it (the control thread for
  /// health checks, a worker for passive reports). Must not block.
  std::function<void(const Backend&, bool healthy)> on_health_change;
};

/// Counters of a load balancer; any thread may read them.
struct LoadBalancerStats {
  /// Backend sets published (construction and every update that changed something).
  std::uint64_t updates = 0;
  /// Health flips, from active checks and passive reports together.
  std::uint64_t marked_up = 0;
  std::uint64_t marked_down = 0;
  /// Of marked_down, those caused by traffic (passive health).
  std::uint64_t passive_marked_down = 0;
};

/// A backend as the control plane sees it (status pages, tests).
struct BackendStatus {
  Backend backend;
  bool healthy = true;
  bool enabled = true;
  std::int32_t inflight = 0;
};

namespace detail {

/// A non-owning reference to a callable, for the type-erased select.
template <class Sig>
class FunctionRef;
template <class R, class... A>
class FunctionRef<R(A...)> {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F&& f) noexcept  // NOLINT: implicit on purpose, like std::function_ref
      : obj_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* o, A... a) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<A>(a)...);
        }) {}
  R operator()(A... a) const { return call_(obj_, std::forward<A>(a)...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};

/// The state of each node, in order.
std::vector<BackendState*> states_of(const std::vector<BackendRef>& nodes);
/// (address hash, index) pairs of `nodes`, sorted by hash.
std::vector<std::pair<std::uint64_t, std::uint32_t>> address_index(
    const std::vector<BackendRef>& nodes);

struct AcceptAll {
  bool operator()(const Backend&) const noexcept { return true; }
};

/// Tracks which backends a selection already offered: 256 bits inline, more on the heap only when
/// a set that large actually needs them.
class SeenSet {
 public:
  explicit SeenSet(std::size_t n) noexcept : n_(n) {}
  bool test(std::size_t i) const noexcept {
    if (i < kInline) return (inline_[i / 64] >> (i % 64)) & 1u;
    return heap_ && ((heap_[(i - kInline) / 64] >> (i % 64)) & 1u);
  }
  void set(std::size_t i) {
    if (i < kInline) {
      inline_[i / 64] |= std::uint64_t{1} << (i % 64);
      return;
    }
    if (!heap_) heap_ = std::make_unique<std::uint64_t[]>((n_ - kInline) / 64 + 1);
    heap_[(i - kInline) / 64] |= std::uint64_t{1} << (i % 64);
  }

 private:
  static constexpr std::size_t kInline = 256;
  std::uint64_t inline_[kInline / 64] = {};
  std::unique_ptr<std::uint64_t[]> heap_;
  std::size_t n_;
};

/// The selection's view of one select() call (see selection.hpp).
template <class Accept>
class Picker {
 public:
  /// `states[i]` is `nodes[i]`'s state, kept in one array so that scans touch fewer cache lines.
  Picker(std::span<const BackendRef> nodes, std::span<BackendState* const> states,
         std::size_t max_iterations, Accept& accept) noexcept
      : nodes_(nodes),
        states_(states),
        budget_(std::min(max_iterations, nodes.size())),
        accept_(accept),
        seen_(nodes.size()) {}

  std::size_t size() const noexcept { return nodes_.size(); }
  /// Healthy, enabled and not offered yet.
  bool usable(std::size_t i) const noexcept { return !seen_.test(i) && states_[i]->usable(); }
  std::int32_t inflight(std::size_t i) const noexcept {
    return states_[i]->inflight.load(std::memory_order_relaxed);
  }
  /// True when the search is over: `i` was taken, or the budget is spent.
  bool offer(std::size_t i) {
    if (seen_.test(i)) return false;
    seen_.set(i);
    const BackendRef& b = nodes_[i];
    if (states_[i]->usable() && accept_(b.backend())) {
      chosen_ = i;
      return true;
    }
    return ++tried_ >= budget_;
  }
  BackendRef chosen() const { return chosen_ < nodes_.size() ? nodes_[chosen_] : BackendRef{}; }

 private:
  std::span<const BackendRef> nodes_;
  std::span<BackendState* const> states_;
  std::size_t budget_;
  std::size_t tried_ = 0;
  std::size_t chosen_ = static_cast<std::size_t>(-1);
  Accept& accept_;
  SeenSet seen_;
};

}  // namespace detail

class HealthCheckService;

/// What every LoadBalancer<S> shares, whatever its selection: the backend set, health, passive
/// reports, statistics, and a type-erased select for code that picks the algorithm at run time.
///
/// Threads: select*, report, find, set_enabled, set_health, stats and the BackendRef accessors
/// are lock-free and may run on any thread at any time. update, backends, status and refs take a
/// control-plane mutex that select never takes.
class LoadBalancerBase {
 public:
  explicit LoadBalancerBase(LoadBalancerOptions opts = {});
  virtual ~LoadBalancerBase();
  LoadBalancerBase(const LoadBalancerBase&) = delete;
  LoadBalancerBase& operator=(const LoadBalancerBase&) = delete;

  /// Replaces the backend set. Backends are identified by address: one that stays keeps its
  /// health and in-flight count; a new one starts healthy; duplicates after the first are
  /// dropped. The new set is published atomically: a select() sees the old set or the new one.
  /// Returns true when the set changed (the order of an unchanged set is not a change), an error
  /// (and no change) when an address is empty or a weight is outside 1..65535.
  Result<bool> update(std::vector<Backend> backends);

  /// The current backends, in set order.
  std::vector<Backend> backends() const;
  /// The current backends with their health and in-flight counts.
  std::vector<BackendStatus> status() const;
  /// The current backends as handles (health checks iterate these).
  std::vector<BackendRef> refs() const;
  /// The backend with this address in the current set, or an empty ref.
  BackendRef find(const SocketAddr& addr) const;

  /// Takes a backend out of selection (drain) or puts it back. False when no such backend.
  bool set_enabled(const SocketAddr& addr, bool enabled);

  /// Passive health: the outcome of a real request to `b` (a failed connect or a broken exchange
  /// is a failure). `passive_failures` consecutive failures mark the backend down; a success
  /// resets the count. No effect when passive health is off.
  void report(const BackendRef& b, bool ok) noexcept;
  /// The same for the backend with this address (e.g. `peer.address` in fail_to_connect).
  void report(const SocketAddr& addr, bool ok) noexcept;

  /// Sets the health verdict; logs and counts a flip and calls on_health_change. Returns true when
  /// the verdict changed. Health checks call it; applications may too.
  bool set_health(const BackendRef& b, bool healthy, std::string_view why);

  /// Picks a usable backend accepted by `accept`, trying at most `max_iterations` distinct
  /// backends; empty when none. The type-erased form of LoadBalancer<S>::select.
  virtual BackendRef select_any(std::string_view key, std::size_t max_iterations,
                                detail::FunctionRef<bool(const Backend&)> accept) const = 0;
  BackendRef select_any(std::string_view key = {}, std::size_t max_iterations = 256) const {
    return select_any(key, max_iterations, detail::AcceptAll{});
  }
  /// The selection's name: "round_robin", "random", "hash", "ketama", "least_conn", "p2c", or
  /// "custom".
  virtual std::string_view selection_name() const noexcept = 0;

  LoadBalancerStats stats() const noexcept;
  const LoadBalancerOptions& options() const noexcept { return opts_; }

 protected:
  /// Publishes `nodes` to the data path (LoadBalancer<S> builds its selection for them).
  virtual void publish(const std::vector<BackendRef>& nodes) = 0;
  /// The node for `addr` in the published set (lock-free).
  virtual BackendRef find_published(const SocketAddr& addr) const = 0;

 private:
  friend class HealthCheckService;
  void passive_failure(const BackendRef& b) noexcept;

  LoadBalancerOptions opts_;
  mutable std::mutex mu_;            // control plane: update, backends, status, refs
  std::vector<BackendRef> current_;  // what was last published, under mu_
  std::atomic<int> active_checks_{0};
  std::atomic<std::uint64_t> updates_{0}, marked_up_{0}, marked_down_{0}, passive_down_{0};
};

/// A load balancer with selection algorithm S (RoundRobin, Random, FNVHash, KetamaHashing,
/// LeastConnections, PowerOfTwoChoices, or your own; see selection.hpp).
template <class S>
class LoadBalancer final : public LoadBalancerBase {
 public:
  explicit LoadBalancer(std::vector<Backend> backends = {}, LoadBalancerOptions opts = {})
      : LoadBalancerBase(std::move(opts)) {
    // A bad entry leaves the balancer empty; try_from_iter and update() report such errors.
    (void)update(std::move(backends));
  }
  ~LoadBalancer() override = default;

  /// Builds a balancer from literal "IP:port" strings (weight 1); an error names the first bad
  /// one.
  template <class Range>
  static Result<std::shared_ptr<LoadBalancer>> try_from_iter(const Range& addrs,
                                                             LoadBalancerOptions opts = {}) {
    std::vector<Backend> bs;
    for (const auto& a : addrs) {
      auto b = Backend::parse(std::string_view(a));
      if (!b)
        return Error::internal(ErrorType::InternalError,
                               "not a backend address: " + std::string(std::string_view(a)));
      bs.push_back(std::move(*b));
    }
    auto lb = std::make_shared<LoadBalancer>(std::vector<Backend>{}, std::move(opts));
    if (auto r = lb->update(std::move(bs)); !r) return r.error();
    return lb;
  }
  static Result<std::shared_ptr<LoadBalancer>> try_from_iter(
      std::initializer_list<std::string_view> addrs, LoadBalancerOptions opts = {}) {
    return try_from_iter(std::vector<std::string_view>(addrs), std::move(opts));
  }

  /// Picks a backend for `key` (hashing selections use it; others ignore it): healthy, enabled,
  /// and accepted by `accept(const Backend&) -> bool` (e.g. not one that already failed for this
  /// request). At most `max_iterations` distinct backends are considered. Empty when none fits.
  /// Lock-free; no allocation for sets up to 256 backends.
  template <class Accept>
  BackendRef select(std::string_view key, std::size_t max_iterations, Accept&& accept) const {
    detail::rcu::ReadGuard guard;
    const Snapshot* s = current_.load();
    if (!s || s->nodes.empty() || max_iterations == 0) return {};
    detail::Picker<std::remove_reference_t<Accept>> p(s->nodes, s->states, max_iterations, accept);
    s->selection.pick(key, p);
    return p.chosen();
  }
  BackendRef select(std::string_view key = {}, std::size_t max_iterations = 256) const {
    detail::AcceptAll all;
    return select(key, max_iterations, all);
  }
  /// Like select(), returning the backend's peer (shared, no allocation); null when none.
  HttpPeerPtr select_peer(std::string_view key = {}) const {
    auto b = select(key);
    return b ? b.peer() : nullptr;
  }

  BackendRef select_any(std::string_view key, std::size_t max_iterations,
                        detail::FunctionRef<bool(const Backend&)> accept) const override {
    return select(key, max_iterations, accept);
  }
  using LoadBalancerBase::select_any;
  std::string_view selection_name() const noexcept override;

 protected:
  void publish(const std::vector<BackendRef>& nodes) override {
    current_.store(std::make_unique<const Snapshot>(nodes));
  }
  BackendRef find_published(const SocketAddr& addr) const override {
    detail::rcu::ReadGuard guard;
    const Snapshot* s = current_.load();
    if (!s) return {};
    const std::uint64_t h = addr.hash();
    auto it = std::lower_bound(s->by_addr.begin(), s->by_addr.end(), h,
                               [](const auto& e, std::uint64_t v) { return e.first < v; });
    for (; it != s->by_addr.end() && it->first == h; ++it)
      if (s->nodes[it->second]->addr == addr) return s->nodes[it->second];
    return {};
  }

 private:
  struct Snapshot {
    explicit Snapshot(const std::vector<BackendRef>& n)
        : nodes(n),
          states(detail::states_of(nodes)),
          by_addr(detail::address_index(nodes)),
          selection(std::span(nodes)) {}
    std::vector<BackendRef> nodes;
    std::vector<detail::BackendState*> states;
    /// (address hash, index into nodes), sorted: find() in O(log n).
    std::vector<std::pair<std::uint64_t, std::uint32_t>> by_addr;
    S selection;
  };
  detail::rcu::Cell<Snapshot> current_;
};

template <class S>
std::string_view LoadBalancer<S>::selection_name() const noexcept {
  if constexpr (std::is_same_v<S, RoundRobin>)
    return "round_robin";
  else if constexpr (std::is_same_v<S, Random>)
    return "random";
  else if constexpr (std::is_same_v<S, FNVHash>)
    return "hash";
  else if constexpr (std::is_same_v<S, KetamaHashing>)
    return "ketama";
  else if constexpr (std::is_same_v<S, LeastConnections>)
    return "least_conn";
  else if constexpr (std::is_same_v<S, PowerOfTwoChoices>)
    return "p2c";
  else
    return "custom";
}

/// A balancer whose algorithm is named at run time: "round_robin", "random", "hash", "ketama",
/// "least_conn" or "p2c". An error for another name or a bad backend.
Result<std::shared_ptr<LoadBalancerBase>> make_load_balancer(std::string_view selection,
                                                             std::vector<Backend> backends,
                                                             LoadBalancerOptions opts = {});

// Compiled once in the library.
extern template class LoadBalancer<RoundRobin>;
extern template class LoadBalancer<Random>;
extern template class LoadBalancer<FNVHash>;
extern template class LoadBalancer<KetamaHashing>;
extern template class LoadBalancer<LeastConnections>;
extern template class LoadBalancer<PowerOfTwoChoices>;

}  // namespace portico
