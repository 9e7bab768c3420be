#include <portico/lb/load_balancer.hpp>

#include <algorithm>
#include <unordered_map>

#include "core/log.hpp"

namespace portico {

template class LoadBalancer<RoundRobin>;
template class LoadBalancer<Random>;
template class LoadBalancer<FNVHash>;
template class LoadBalancer<KetamaHashing>;
template class LoadBalancer<LeastConnections>;
template class LoadBalancer<PowerOfTwoChoices>;

std::optional<Backend> Backend::parse(std::string_view addr, std::uint32_t weight) {
  auto a = SocketAddr::parse(addr);
  if (!a) return std::nullopt;
  Backend b;
  b.addr = *a;
  b.weight = weight;
  return b;
}

LoadBalancerBase::LoadBalancerBase(LoadBalancerOptions opts) : opts_(std::move(opts)) {}

LoadBalancerBase::~LoadBalancerBase() = default;

namespace {
/// Same backends regardless of order.
bool same_set(const std::vector<BackendRef>& cur, const std::vector<Backend>& next) {
  if (cur.size() != next.size()) return false;
  std::unordered_map<std::uint64_t, std::vector<const Backend*>> by_hash;
  for (const auto& b : cur) by_hash[b->addr.hash()].push_back(&b.backend());
  for (const auto& b : next) {
    auto it = by_hash.find(b.addr.hash());
    if (it == by_hash.end()) return false;
    auto& v = it->second;
    auto m = std::find_if(v.begin(), v.end(), [&](const Backend* x) { return *x == b; });
    if (m == v.end()) return false;
    v.erase(m);
  }
  return true;
}
}  // namespace

Result<bool> LoadBalancerBase::update(std::vector<Backend> backends) {
  for (const auto& b : backends) {
    if (b.addr.empty())
      return Error::internal(ErrorType::InternalError, "backend without an address");
    if (b.weight < 1 || b.weight > 65535)
      return Error::internal(ErrorType::InternalError, "backend " + b.addr.to_string() +
                                                           ": weight " + std::to_string(b.weight) +
                                                           " is not in 1..65535");
  }
  // Drop duplicate addresses, keeping the first.
  {
    std::vector<Backend> unique;
    unique.reserve(backends.size());
    std::unordered_map<std::uint64_t, std::vector<std::size_t>> seen;
    for (auto& b : backends) {
      auto& v = seen[b.addr.hash()];
      if (std::any_of(v.begin(), v.end(), [&](std::size_t i) { return unique[i].addr == b.addr; }))
        continue;
      v.push_back(unique.size());
      unique.push_back(std::move(b));
    }
    backends = std::move(unique);
  }

  std::lock_guard lk(mu_);
  if (updates_.load(std::memory_order_relaxed) > 0 && same_set(current_, backends)) return false;
  std::unordered_map<std::uint64_t, std::vector<const BackendRef*>> old;
  for (const auto& r : current_) old[r->addr.hash()].push_back(&r);
  std::vector<BackendRef> next;
  next.reserve(backends.size());
  for (auto& b : backends) {
    const BackendRef* prev = nullptr;
    if (auto it = old.find(b.addr.hash()); it != old.end())
      for (const BackendRef* r : it->second)
        if ((*r)->addr == b.addr) prev = r;
    if (prev && prev->backend() == b) {
      next.push_back(*prev);  // unchanged: same node, same peer
      continue;
    }
    auto node = std::make_shared<detail::BackendNode>();
    node->peer = opts_.peer_factory ? opts_.peer_factory(b) : make_peer(b.addr);
    node->state = prev ? prev->node()->state : std::make_shared<detail::BackendState>();
    node->backend = std::move(b);
    next.emplace_back(std::move(node));
  }
  publish(next);
  updates_.fetch_add(1, std::memory_order_relaxed);
  current_ = std::move(next);
  return true;
}

std::vector<Backend> LoadBalancerBase::backends() const {
  std::lock_guard lk(mu_);
  std::vector<Backend> out;
  out.reserve(current_.size());
  for (const auto& r : current_) out.push_back(r.backend());
  return out;
}

std::vector<BackendStatus> LoadBalancerBase::status() const {
  std::lock_guard lk(mu_);
  std::vector<BackendStatus> out;
  out.reserve(current_.size());
  for (const auto& r : current_)
    out.push_back(BackendStatus{r.backend(), r.healthy(), r.enabled(), r.inflight()});
  return out;
}

std::vector<BackendRef> LoadBalancerBase::refs() const {
  std::lock_guard lk(mu_);
  return current_;
}

BackendRef LoadBalancerBase::find(const SocketAddr& addr) const { return find_published(addr); }

bool LoadBalancerBase::set_enabled(const SocketAddr& addr, bool enabled) {
  BackendRef b = find(addr);
  if (!b) return false;
  if (b.state().enabled.exchange(enabled, std::memory_order_relaxed) != enabled)
    log::error_log().info("load balancer: backend {} {}", addr.to_string(),
                          enabled ? "enabled" : "disabled");
  return true;
}

bool LoadBalancerBase::set_health(const BackendRef& b, bool healthy, std::string_view why) {
  if (!b) return false;
  auto& st = b.state();
  if (healthy) st.retry_at_ns.store(0, std::memory_order_relaxed);
  if (st.healthy.exchange(healthy, std::memory_order_relaxed) == healthy) return false;
  if (healthy) {
    st.passive_failures.store(0, std::memory_order_relaxed);
    marked_up_.fetch_add(1, std::memory_order_relaxed);
    log::error_log().info("load balancer: backend {} is up{}{}", b->addr.to_string(),
                          why.empty() ? "" : ": ", why);
  } else {
    marked_down_.fetch_add(1, std::memory_order_relaxed);
    log::error_log().warn("load balancer: backend {} is down{}{}", b->addr.to_string(),
                          why.empty() ? "" : ": ", why);
  }
  if (opts_.on_health_change) opts_.on_health_change(b.backend(), healthy);
  return true;
}

void LoadBalancerBase::report(const SocketAddr& addr, bool ok) noexcept {
  if (opts_.passive_failures == 0) return;
  report(find(addr), ok);
}

void LoadBalancerBase::report(const BackendRef& b, bool ok) noexcept {
  if (!b || opts_.passive_failures == 0) return;
  auto& st = b.state();
  if (ok) {
    if (st.passive_failures.load(std::memory_order_relaxed) != 0)
      st.passive_failures.store(0, std::memory_order_relaxed);
    // A backend traffic was allowed to retry (no active check) answered: it is back.
    if (st.retry_at_ns.load(std::memory_order_relaxed) != 0 &&
        !st.healthy.load(std::memory_order_relaxed)) {
      try {
        set_health(b, true, "a request succeeded");
      } catch (...) {
      }
    }
    return;
  }
  const std::uint32_t n = st.passive_failures.fetch_add(1, std::memory_order_relaxed) + 1;
  if (n >= opts_.passive_failures) passive_failure(b);
}

void LoadBalancerBase::passive_failure(const BackendRef& b) noexcept {
  auto& st = b.state();
  st.passive_failures.store(0, std::memory_order_relaxed);
  // An active check will bring it back; without one, traffic may try again later.
  const bool checked = active_checks_.load(std::memory_order_relaxed) > 0;
  st.retry_at_ns.store(
      checked ? 0
              : detail::steady_now_ns() +
                    std::chrono::duration_cast<std::chrono::nanoseconds>(opts_.passive_retry_after)
                        .count(),
      std::memory_order_relaxed);
  st.check_successes.store(0, std::memory_order_relaxed);
  try {
    if (set_health(b, false, "consecutive request failures (passive health)"))
      passive_down_.fetch_add(1, std::memory_order_relaxed);
  } catch (...) {
    // A throwing on_health_change or logger must not escape into the request path.
  }
}

LoadBalancerStats LoadBalancerBase::stats() const noexcept {
  return LoadBalancerStats{
      updates_.load(std::memory_order_relaxed), marked_up_.load(std::memory_order_relaxed),
      marked_down_.load(std::memory_order_relaxed), passive_down_.load(std::memory_order_relaxed)};
}

Result<std::shared_ptr<LoadBalancerBase>> make_load_balancer(std::string_view selection,
                                                             std::vector<Backend> backends,
                                                             LoadBalancerOptions opts) {
  std::shared_ptr<LoadBalancerBase> lb;
  if (selection == "round_robin")
    lb = std::make_shared<LoadBalancer<RoundRobin>>(std::vector<Backend>{}, std::move(opts));
  else if (selection == "random")
    lb = std::make_shared<LoadBalancer<Random>>(std::vector<Backend>{}, std::move(opts));
  else if (selection == "hash")
    lb = std::make_shared<LoadBalancer<FNVHash>>(std::vector<Backend>{}, std::move(opts));
  else if (selection == "ketama")
    lb = std::make_shared<LoadBalancer<KetamaHashing>>(std::vector<Backend>{}, std::move(opts));
  else if (selection == "least_conn")
    lb = std::make_shared<LoadBalancer<LeastConnections>>(std::vector<Backend>{}, std::move(opts));
  else if (selection == "p2c")
    lb = std::make_shared<LoadBalancer<PowerOfTwoChoices>>(std::vector<Backend>{}, std::move(opts));
  else
    return Error::internal(ErrorType::InternalError,
                           "unknown selection \"" + std::string(selection) +
                               "\" (round_robin, random, hash, ketama, least_conn, p2c)");
  if (auto r = lb->update(std::move(backends)); !r) return r.error();
  return lb;
}

}  // namespace portico
