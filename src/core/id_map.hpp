// IdMap: the open HTTP/2 streams of a connection by id, in a vector sorted by id.
//
// Stream ids only grow on each side of a connection (RFC 9113 §5.1.1), so a new stream goes at
// the end; a connection has a bounded number open (SETTINGS_MAX_CONCURRENT_STREAMS), so a
// binary search finds one. An erased entry becomes a hole (its value emptied), skipped by
// lookups and iteration, and the holes are squeezed out once they are half the vector: streams
// end roughly in the order they began, and moving every later entry at each end would cost as
// much as the rest of a request on a connection with 100 streams. Unlike a node-based hash map,
// opening and closing a stream allocates nothing once the vector has grown to the connection's
// concurrency.
//
// Values are pointers (raw or owning): an empty value marks a hole, so a present entry's value
// must not be left empty. Iterators, and references to values, are invalidated by any insertion
// or erasure.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <utility>
#include <vector>

namespace portico::detail {

template <class T>
class IdMap {
 public:
  using value_type = std::pair<std::int32_t, T>;

  /// Walks the entries in id order, skipping holes.
  template <class V>
  class iter {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = std::remove_const_t<V>;
    using difference_type = std::ptrdiff_t;
    using pointer = V*;
    using reference = V&;
    iter() = default;
    iter(V* p, V* end) noexcept : p_(p), end_(end) { skip(); }
    V& operator*() const noexcept { return *p_; }
    V* operator->() const noexcept { return p_; }
    iter& operator++() noexcept {
      ++p_;
      skip();
      return *this;
    }
    bool operator==(const iter& o) const noexcept { return p_ == o.p_; }

   private:
    friend class IdMap;
    void skip() noexcept {
      while (p_ != end_ && !p_->second) ++p_;
    }
    V* p_ = nullptr;
    V* end_ = nullptr;
  };
  using iterator = iter<value_type>;
  using const_iterator = iter<const value_type>;

  iterator begin() noexcept { return {v_.data(), v_.data() + v_.size()}; }
  iterator end() noexcept { return {v_.data() + v_.size(), v_.data() + v_.size()}; }
  const_iterator begin() const noexcept { return {v_.data(), v_.data() + v_.size()}; }
  const_iterator end() const noexcept { return {v_.data() + v_.size(), v_.data() + v_.size()}; }
  bool empty() const noexcept { return v_.size() == holes_; }
  std::size_t size() const noexcept { return v_.size() - holes_; }

  iterator find(std::int32_t id) noexcept {
    value_type* e = lower(id);
    if (e == v_.data() + v_.size() || e->first != id || !e->second) return end();
    return {e, v_.data() + v_.size()};
  }
  const_iterator find(std::int32_t id) const noexcept {
    auto it = const_cast<IdMap*>(this)->find(id);
    return {it.p_, v_.data() + v_.size()};
  }

  /// Sets the value of `id` (not empty), inserting it when absent.
  void insert(std::int32_t id, T value) {
    if (v_.empty() || v_.back().first < id) {
      v_.emplace_back(id, std::move(value));
      return;
    }
    value_type* e = lower(id);
    if (e != v_.data() + v_.size() && e->first == id) {
      if (!e->second) --holes_;  // a hole filled again
      e->second = std::move(value);
      return;
    }
    v_.emplace(v_.begin() + (e - v_.data()), id, std::move(value));
  }

  void erase(iterator it) {
    it.p_->second = T{};
    ++holes_;
    while (!v_.empty() && !v_.back().second) {  // holes at the end go at once
      v_.pop_back();
      --holes_;
    }
    if (holes_ > 8 && holes_ * 2 > v_.size()) {
      std::erase_if(v_, [](const value_type& e) { return !e.second; });
      holes_ = 0;
    }
  }
  std::size_t erase(std::int32_t id) {
    auto it = find(id);
    if (it == end()) return 0;
    erase(it);
    return 1;
  }
  void clear() noexcept {
    v_.clear();
    holes_ = 0;
  }
  /// Gives the vector's memory back (an idle connection).
  void release() noexcept {
    std::vector<value_type>().swap(v_);
    holes_ = 0;
  }

 private:
  value_type* lower(std::int32_t id) noexcept {
    value_type* b = v_.data();
    value_type* e = b + v_.size();
    // Most lookups are of a recent stream: try the newest first.
    if (b != e && e[-1].first == id) return e - 1;
    return std::lower_bound(b, e, id,
                            [](const value_type& x, std::int32_t k) { return x.first < k; });
  }

  std::vector<value_type> v_;
  std::size_t holes_ = 0;
};

}  // namespace portico::detail
