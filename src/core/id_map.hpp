// IdMap: the open HTTP/2 streams of a connection by id, in a vector sorted by id.
//
// Stream ids only grow on each side of a connection (RFC 9113 §5.1.1), so a new stream goes at
// the end; a connection has a bounded number open (SETTINGS_MAX_CONCURRENT_STREAMS), so a
// binary search finds one and an erase moves at most that many entries. Unlike a node-based
// hash map, opening and closing a stream allocates nothing once the vector has grown to the
// connection's concurrency.
//
// Iterators, and references to values, are invalidated by any insertion or erasure.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace portico::detail {

template <class T>
class IdMap {
 public:
  using value_type = std::pair<std::int32_t, T>;
  using iterator = typename std::vector<value_type>::iterator;
  using const_iterator = typename std::vector<value_type>::const_iterator;

  iterator begin() noexcept { return v_.begin(); }
  iterator end() noexcept { return v_.end(); }
  const_iterator begin() const noexcept { return v_.begin(); }
  const_iterator end() const noexcept { return v_.end(); }
  bool empty() const noexcept { return v_.empty(); }
  std::size_t size() const noexcept { return v_.size(); }

  iterator find(std::int32_t id) noexcept {
    auto it = lower(id);
    return it != v_.end() && it->first == id ? it : v_.end();
  }
  const_iterator find(std::int32_t id) const noexcept { return const_cast<IdMap*>(this)->find(id); }

  /// The value of `id`, inserted (value-initialized) when absent.
  T& operator[](std::int32_t id) {
    if (v_.empty() || v_.back().first < id) return v_.emplace_back(id, T{}).second;
    auto it = lower(id);
    if (it != v_.end() && it->first == id) return it->second;
    return v_.emplace(it, id, T{})->second;
  }

  iterator erase(iterator it) { return v_.erase(it); }
  std::size_t erase(std::int32_t id) {
    auto it = find(id);
    if (it == v_.end()) return 0;
    v_.erase(it);
    return 1;
  }
  void clear() noexcept { v_.clear(); }
  /// Gives the vector's memory back (an idle connection).
  void release() noexcept { std::vector<value_type>().swap(v_); }

 private:
  iterator lower(std::int32_t id) noexcept {
    // Most lookups are of a recent stream: try the newest first.
    if (!v_.empty() && v_.back().first == id) return v_.end() - 1;
    return std::lower_bound(v_.begin(), v_.end(), id,
                            [](const value_type& e, std::int32_t k) { return e.first < k; });
  }

  std::vector<value_type> v_;
};

}  // namespace portico::detail
