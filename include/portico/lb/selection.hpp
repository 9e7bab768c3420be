// Selection algorithms: which backend a request goes to.
//
// A selection is built once per backend set (on the control thread, when the set changes) and then
// shared, immutable, by every worker. Each one provides
//
//   explicit S(std::span<const BackendRef> backends);
//   template <class Picker> void pick(std::string_view key, Picker& p) const;
//
// `pick` offers backend indexes in its order of preference, calling `p.offer(i)` until it returns
// true (the picker took that backend, or its budget is spent). Offering the same index twice is
// harmless. Scanning algorithms may ask `p.usable(i)` (healthy, enabled, not offered yet) and
// `p.inflight(i)` first. Every `pick` is bounded: it offers each backend at most once per pass and
// makes at most `size()` passes.
//
// Weights are respected by the first choice of every algorithm. When the first choice is
// unhealthy or rejected, round robin moves on to the next turns of its cycle; the others start at
// a (weighted) random or key-derived backend and walk the list, so a down backend's share is
// spread instead of landing on its neighbour.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string_view>
#include <vector>

#include <portico/lb/backend.hpp>

namespace portico {

namespace detail {

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as zlib and nginx's ngx_crc32_long.
std::uint32_t crc32(std::string_view data) noexcept;

/// 64-bit FNV-1a.
constexpr std::uint64_t fnv1a64(std::string_view data) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

/// SplitMix64's finaliser: spreads the bits of `x`.
constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::uint64_t random_seed() noexcept;
inline thread_local std::uint64_t t_random_state = 0;

/// A fast per-thread pseudo-random number (SplitMix64); not for cryptography.
inline std::uint64_t thread_random() noexcept {
  std::uint64_t& s = t_random_state;
  if (s == 0) s = random_seed() | 1;
  s += 0x9e3779b97f4a7c15ull;
  return mix64(s);
}

/// Maps positions on a line of total weight to backends: backend i owns weight(i) positions.
class WeightedIndex {
 public:
  WeightedIndex() = default;
  explicit WeightedIndex(std::span<const BackendRef> backends);

  std::size_t size() const noexcept { return n_; }
  std::uint64_t total() const noexcept { return total_; }
  /// The backend owning position `r % total()`.
  std::size_t at(std::uint64_t r) const noexcept {
    r %= total_;
    if (cumulative_.empty()) return static_cast<std::size_t>(r / unit_);
    return static_cast<std::size_t>(std::upper_bound(cumulative_.begin(), cumulative_.end(), r) -
                                    cumulative_.begin());
  }

 private:
  std::size_t n_ = 0;
  std::uint64_t total_ = 1;
  std::uint64_t unit_ = 1;                 // the common weight when all weights are equal
  std::vector<std::uint64_t> cumulative_;  // end positions, when weights differ
};

/// First the weighted choice for `r`, then every backend once from a position derived from `r`.
template <class P>
void pick_weighted_then_scan(P& p, const WeightedIndex& w, std::uint64_t r) {
  const std::size_t n = p.size();
  if (p.offer(w.at(r))) return;
  const std::size_t start = static_cast<std::size_t>(mix64(r) % n);
  for (std::size_t k = 0, i = start; k < n; ++k, i = i + 1 == n ? 0 : i + 1)
    if (p.offer(i)) return;
}

/// Smooth weighted round robin order for one cycle (see RoundRobin); empty when every weight is
/// the same (plain rotation).
std::vector<std::uint32_t> smooth_wrr_sequence(std::span<const std::uint32_t> weights);

}  // namespace detail

/// Smooth weighted round robin, nginx's algorithm: with weights {5, 1, 1} one cycle is
/// a a b a c a a, never a a a a a b c. The order of a whole cycle is computed when the set
/// changes (exact while the total weight, divided by the weights' gcd, is at most 2^20; beyond,
/// weights are scaled down to fit) and a shared atomic counter walks it, so selection is
/// lock-free. With equal weights it is a plain rotation.
class RoundRobin {
 public:
  /// `n` backends of weight 1, for standalone use with next().
  explicit RoundRobin(std::size_t n) noexcept : n_(n) {}
  explicit RoundRobin(std::span<const BackendRef> backends);
  RoundRobin(const RoundRobin&) = delete;
  RoundRobin& operator=(const RoundRobin&) = delete;

  /// The index of the next backend in the cycle (ignores health).
  std::size_t next(std::string_view /*key*/ = {}) const noexcept {
    if (n_ == 0) return 0;
    const std::uint64_t c = counter_.fetch_add(1, std::memory_order_relaxed);
    return seq_.empty() ? static_cast<std::size_t>(c % n_) : seq_[c % seq_.size()];
  }

  template <class P>
  void pick(std::string_view key, P& p) const {
    if (n_ == 0) return;
    // A backend that cannot take the request passes its turn to the next one of the cycle, so
    // the usable backends keep their weighted order (what nginx does); then anything usable.
    for (std::size_t k = 0; k < n_; ++k)
      if (p.offer(next(key))) return;
    detail::pick_weighted_then_scan(p, weights_, detail::thread_random());
  }

 private:
  std::size_t n_;
  std::vector<std::uint32_t> seq_;
  detail::WeightedIndex weights_;
  mutable std::atomic<std::uint64_t> counter_{0};
};

/// Weighted random.
class Random {
 public:
  explicit Random(std::span<const BackendRef> backends) : w_(backends) {}

  template <class P>
  void pick(std::string_view, P& p) const {
    if (w_.size() == 0) return;
    detail::pick_weighted_then_scan(p, w_, detail::thread_random());
  }

 private:
  detail::WeightedIndex w_;
};

/// Weighted hashing of the key with 64-bit FNV-1a: the same key goes to the same backend while
/// the set does not change (any change remaps most keys; see KetamaHashing for the alternative).
/// Fallbacks depend only on the key too.
class FNVHash {
 public:
  explicit FNVHash(std::span<const BackendRef> backends) : w_(backends) {}

  template <class P>
  void pick(std::string_view key, P& p) const {
    if (w_.size() == 0) return;
    detail::pick_weighted_then_scan(p, w_, detail::fnv1a64(key));
  }

 private:
  detail::WeightedIndex w_;
};
using FnvHash = FNVHash;

/// Consistent hashing that maps keys exactly as nginx's `hash $key consistent`: each backend
/// name (Backend::hash_name, nginx's `server` string) gets 160 points per weight unit on a ring
/// of CRC-32 values, point j = crc32(HOST '\0' PORT prev_hash) with prev_hash the previous
/// point's value as 4 little-endian bytes (0 for the first); the ring is sorted (the first of
/// equal points kept, in backend order) and a key goes to the first point >= crc32(key), wrapping
/// to the first. Adding one backend to N moves about 1/(N+1) of the keys.
///
/// Fallbacks walk the ring to the next distinct backend. Backends sharing a name (a DNS name with
/// several addresses) share its points; among them the key's hash picks. An empty key rotates
/// over the backends, as nginx does.
class KetamaHashing {
 public:
  static constexpr std::uint32_t kPointsPerWeight = 160;
  explicit KetamaHashing(std::span<const BackendRef> backends);

  template <class P>
  void pick(std::string_view key, P& p) const {
    const std::size_t n = p.size();
    if (n == 0 || points_.empty()) return;
    if (key.empty()) {
      const std::size_t start =
          static_cast<std::size_t>(counter_.fetch_add(1, std::memory_order_relaxed) % n);
      for (std::size_t k = 0, i = start; k < n; ++k, i = i + 1 == n ? 0 : i + 1)
        if (p.offer(i)) return;
      return;
    }
    const std::uint32_t h = detail::crc32(key);
    const std::size_t np = points_.size();
    std::size_t at = static_cast<std::size_t>(
        std::lower_bound(points_.begin(), points_.end(), h,
                         [](const Point& pt, std::uint32_t v) { return pt.hash < v; }) -
        points_.begin());
    for (std::size_t step = 0; step < np; ++step, ++at) {
      if (at == np) at = 0;
      const std::uint32_t g = points_[at].group;
      const std::uint32_t b = group_begin_[g], e = group_begin_[g + 1];
      if (e - b == 1) {
        if (p.offer(members_[b])) return;
        continue;
      }
      const std::uint32_t cnt = e - b;
      const std::uint32_t first = static_cast<std::uint32_t>(detail::mix64(h) % cnt);
      for (std::uint32_t k = 0; k < cnt; ++k)
        if (p.offer(members_[b + (first + k) % cnt])) return;
    }
  }

  /// Ring size after removing duplicate points (tests, diagnostics).
  std::size_t points() const noexcept { return points_.size(); }

 private:
  struct Point {
    std::uint32_t hash;
    std::uint32_t group;
  };
  std::vector<Point> points_;
  std::vector<std::uint32_t> group_begin_;  // group g's members are members_[begin[g], begin[g+1])
  std::vector<std::uint32_t> members_;
  mutable std::atomic<std::uint64_t> counter_{0};
};
using Consistent = KetamaHashing;

/// Weighted least connections: the usable backend with the fewest requests in flight per unit of
/// weight (in-flight counts come from BackendRef::track, summed over all workers); ties are
/// broken at random in proportion to weight. A scan of the whole set per selection.
class LeastConnections {
 public:
  explicit LeastConnections(std::span<const BackendRef> backends);

  template <class P>
  void pick(std::string_view, P& p) const {
    const std::size_t n = p.size();
    for (std::size_t pass = 0; pass < n; ++pass) {
      std::size_t best = n;
      std::int64_t best_load = 0;
      std::uint64_t best_w = 1, tie_w = 0;
      std::uint64_t r = detail::thread_random() | 1;
      for (std::size_t i = 0; i < n; ++i) {
        if (!p.usable(i)) continue;
        const std::int64_t load = p.inflight(i);
        const std::uint64_t w = weights_[i];
        // load/w < best_load/best_w, compared without division.
        const std::int64_t lhs = load * static_cast<std::int64_t>(best_w);
        const std::int64_t rhs = best_load * static_cast<std::int64_t>(w);
        if (best == n || lhs < rhs) {
          best = i, best_load = load, best_w = w, tie_w = w;
        } else if (lhs == rhs) {
          // Weighted reservoir sampling: replace with probability w / (weight of the ties so
          // far), drawn as a 32-bit fraction times the total (no division; ties are common).
          tie_w += w;
          r ^= r << 13, r ^= r >> 7, r ^= r << 17;  // xorshift64
          if (((r >> 32) * tie_w) >> 32 < w) best = i, best_load = load, best_w = w;
        }
      }
      if (best == n) return;
      if (p.offer(best)) return;
    }
  }

 private:
  std::vector<std::uint32_t> weights_;
};

/// Power of two choices: two backends drawn at random in proportion to weight, the one with
/// fewer requests in flight per unit of weight wins. Nearly as good as least connections at a
/// constant cost.
class PowerOfTwoChoices {
 public:
  explicit PowerOfTwoChoices(std::span<const BackendRef> backends);

  template <class P>
  void pick(std::string_view, P& p) const {
    const std::size_t n = p.size();
    if (n == 0) return;
    const std::uint64_t r = detail::thread_random();
    if (n > 1) {
      std::size_t a = w_.at(r);
      std::size_t b = w_.at(detail::mix64(r));
      if (b == a) b = (a + 1 + detail::mix64(r ^ 0x5bd1e995u) % (n - 1)) % n;
      const bool ua = p.usable(a), ub = p.usable(b);
      if (ua && ub) {
        const std::int64_t la = p.inflight(a) * static_cast<std::int64_t>(weights_[b]);
        const std::int64_t lb = p.inflight(b) * static_cast<std::int64_t>(weights_[a]);
        if (lb < la) std::swap(a, b);
      } else if (ub) {
        std::swap(a, b);
      }
      if (p.offer(a) || p.offer(b)) return;
    }
    detail::pick_weighted_then_scan(p, w_, detail::mix64(r + 1));
  }

 private:
  detail::WeightedIndex w_;
  std::vector<std::uint32_t> weights_;
};

}  // namespace portico
