// Building the selection structures (control plane: once per backend set).
#include <portico/lb/selection.hpp>

#include <portico/lb/load_balancer.hpp>

#include <array>
#include <cctype>
#include <numeric>
#include <queue>
#include <string>
#include <unordered_map>

namespace portico {

namespace detail {

namespace {
constexpr std::array<std::uint32_t, 256> make_crc_table() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr auto kCrcTable = make_crc_table();

/// nginx's ngx_crc32_update on an unfinalised value.
std::uint32_t crc32_update(std::uint32_t crc, std::string_view data) noexcept {
  for (unsigned char c : data) crc = kCrcTable[(crc ^ c) & 0xff] ^ (crc >> 8);
  return crc;
}

std::vector<std::uint32_t> weights_of(std::span<const BackendRef> backends) {
  std::vector<std::uint32_t> w;
  w.reserve(backends.size());
  for (const auto& b : backends) w.push_back(b->weight ? b->weight : 1);
  return w;
}
}  // namespace

std::uint32_t crc32(std::string_view data) noexcept {
  return crc32_update(0xffffffffu, data) ^ 0xffffffffu;
}

std::uint64_t random_seed() noexcept {
  std::random_device rd;
  return (std::uint64_t{rd()} << 32) ^ rd() ^
         reinterpret_cast<std::uintptr_t>(&t_random_state);  // distinct per thread
}

WeightedIndex::WeightedIndex(std::span<const BackendRef> backends) : n_(backends.size()) {
  if (n_ == 0) return;
  const auto w = weights_of(backends);
  const bool uniform = std::all_of(w.begin(), w.end(), [&](std::uint32_t x) { return x == w[0]; });
  if (uniform) {
    unit_ = w[0];
    total_ = unit_ * n_;
    return;
  }
  cumulative_.reserve(n_);
  std::uint64_t sum = 0;
  for (auto x : w) cumulative_.push_back(sum += x);
  total_ = sum;
}

std::vector<std::uint32_t> smooth_wrr_sequence(std::span<const std::uint32_t> weights) {
  const std::size_t n = weights.size();
  if (n == 0 ||
      std::all_of(weights.begin(), weights.end(), [&](std::uint32_t x) { return x == weights[0]; }))
    return {};
  std::vector<std::uint64_t> w(weights.begin(), weights.end());
  std::uint64_t g = 0;
  for (auto x : w) g = std::gcd(g, x);
  std::uint64_t total = 0;
  for (auto& x : w) total += (x /= g);
  // Bound the cycle (4 MiB of indexes): scale larger totals down, keeping every backend.
  constexpr std::uint64_t kMaxCycle = std::uint64_t{1} << 20;
  if (total > kMaxCycle) {
    std::uint64_t t = 0;
    for (auto& x : w) t += (x = std::max<std::uint64_t>(1, x * kMaxCycle / total));
    total = t;
  }
  std::vector<std::uint32_t> seq;
  seq.reserve(total);
  if (n * total <= (std::uint64_t{1} << 24)) {
    // nginx's smooth weighted round robin (ngx_http_upstream_get_peer), verbatim: every step adds
    // each weight to its current value, picks the largest (first on ties) and subtracts the total.
    std::vector<std::int64_t> cur(n, 0);
    for (std::uint64_t step = 0; step < total; ++step) {
      std::size_t best = 0;
      for (std::size_t i = 0; i < n; ++i) {
        cur[i] += static_cast<std::int64_t>(w[i]);
        if (cur[i] > cur[best]) best = i;
      }
      cur[best] -= static_cast<std::int64_t>(total);
      seq.push_back(static_cast<std::uint32_t>(best));
    }
    return seq;
  }
  // Large sets: the same spreading by earliest virtual deadline, O(total log n). Backend i's k-th
  // turn is due at (k + 1/2) / w_i; ties go to the lower index.
  struct Turn {
    std::uint64_t num, den;  // due time num/den, den = 2 w_i
    std::uint32_t i;
    bool operator>(const Turn& o) const {
      // num < 2^22 and den <= 2^17 (scaled weights), so the products fit in 64 bits.
      const std::uint64_t l = num * o.den;
      const std::uint64_t r = o.num * den;
      return l != r ? l > r : i > o.i;
    }
  };
  std::priority_queue<Turn, std::vector<Turn>, std::greater<>> q;
  for (std::size_t i = 0; i < n; ++i) q.push(Turn{1, 2 * w[i], static_cast<std::uint32_t>(i)});
  for (std::uint64_t step = 0; step < total; ++step) {
    Turn t = q.top();
    q.pop();
    seq.push_back(t.i);
    t.num += 2;
    q.push(t);
  }
  return seq;
}

std::vector<BackendState*> states_of(const std::vector<BackendRef>& nodes) {
  std::vector<BackendState*> v;
  v.reserve(nodes.size());
  for (const auto& n : nodes) v.push_back(&n.state());
  return v;
}

std::vector<std::pair<std::uint64_t, std::uint32_t>> address_index(
    const std::vector<BackendRef>& nodes) {
  std::vector<std::pair<std::uint64_t, std::uint32_t>> v;
  v.reserve(nodes.size());
  for (std::size_t i = 0; i < nodes.size(); ++i)
    v.emplace_back(nodes[i]->addr.hash(), static_cast<std::uint32_t>(i));
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace detail

RoundRobin::RoundRobin(std::span<const BackendRef> backends)
    : n_(backends.size()),
      seq_(detail::smooth_wrr_sequence(detail::weights_of(backends))),
      weights_(backends) {}

KetamaHashing::KetamaHashing(std::span<const BackendRef> backends) {
  // Groups: distinct hash names in order of first appearance. nginx adds weight*160 points for
  // every peer; peers sharing a name produce the same points, which the dedup below collapses, so
  // a group owns the points of its heaviest member.
  std::unordered_map<std::string, std::uint32_t> group_of;
  std::vector<std::string> names;
  std::vector<std::uint32_t> group_weight;
  std::vector<std::vector<std::uint32_t>> members;
  for (std::size_t i = 0; i < backends.size(); ++i) {
    std::string name = backends[i]->hash_name();
    auto [it, added] = group_of.emplace(name, static_cast<std::uint32_t>(names.size()));
    if (added) {
      names.push_back(std::move(name));
      group_weight.push_back(0);
      members.emplace_back();
    }
    group_weight[it->second] = std::max(group_weight[it->second], backends[i]->weight);
    members[it->second].push_back(static_cast<std::uint32_t>(i));
  }
  group_begin_.push_back(0);
  for (auto& m : members) {
    members_.insert(members_.end(), m.begin(), m.end());
    group_begin_.push_back(static_cast<std::uint32_t>(members_.size()));
  }

  std::size_t total = 0;
  for (auto w : group_weight) total += std::size_t{w} * kPointsPerWeight;
  points_.reserve(total);
  for (std::uint32_t g = 0; g < names.size(); ++g) {
    // ngx_http_upstream_update_chash: split "HOST:PORT" at the last ':' followed only by digits;
    // "unix:" names have no port; crc32(HOST '\0' PORT PREV_HASH).
    std::string_view server = names[g], host = server, port;
    auto is_unix = [](std::string_view s) {
      if (s.size() < 5) return false;
      for (std::size_t k = 0; k < 5; ++k)
        if (std::tolower(static_cast<unsigned char>(s[k])) != "unix:"[k]) return false;
      return true;
    };
    if (is_unix(server)) {
      host = server.substr(5);
    } else {
      for (std::size_t j = 0; j < server.size(); ++j) {
        const char c = server[server.size() - j - 1];
        if (c == ':') {
          host = server.substr(0, server.size() - j - 1);
          port = server.substr(server.size() - j);
          break;
        }
        if (c < '0' || c > '9') break;
      }
    }
    std::uint32_t base = detail::crc32_update(0xffffffffu, host);
    base = detail::crc32_update(base, std::string_view("\0", 1));
    base = detail::crc32_update(base, port);
    std::uint32_t prev = 0;
    for (std::uint32_t j = 0; j < group_weight[g] * kPointsPerWeight; ++j) {
      const char le[4] = {static_cast<char>(prev & 0xff), static_cast<char>((prev >> 8) & 0xff),
                          static_cast<char>((prev >> 16) & 0xff),
                          static_cast<char>((prev >> 24) & 0xff)};
      const std::uint32_t h = detail::crc32_update(base, std::string_view(le, 4)) ^ 0xffffffffu;
      points_.push_back(Point{h, g});
      prev = h;
    }
  }
  // nginx sorts with the C library's qsort, which in glibc is a (stable) merge sort for arrays of
  // this size, then keeps the first of equal points: stable_sort reproduces that.
  std::stable_sort(points_.begin(), points_.end(),
                   [](const Point& a, const Point& b) { return a.hash < b.hash; });
  points_.erase(std::unique(points_.begin(), points_.end(),
                            [](const Point& a, const Point& b) { return a.hash == b.hash; }),
                points_.end());
}

LeastConnections::LeastConnections(std::span<const BackendRef> backends)
    : weights_(detail::weights_of(backends)) {}

PowerOfTwoChoices::PowerOfTwoChoices(std::span<const BackendRef> backends)
    : w_(backends), weights_(detail::weights_of(backends)) {}

}  // namespace portico
