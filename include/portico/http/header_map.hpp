// HeaderMap: HTTP fields in insertion order with the case they arrived in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace portico {

namespace http1 {
class Parser;
}

namespace detail {
/// ASCII case-insensitive equality of `n` bytes at `a` and `b`.
bool iequals_n(const char* a, const char* b, std::size_t n) noexcept;
}  // namespace detail

/// ASCII case-insensitive equality, as field names compare. (Inline: most comparisons are told
/// apart by their lengths.)
inline bool iequals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && detail::iequals_n(a.data(), b.data(), a.size());
}

/// Calls `pred` on each item of one comma-separated field value (items trimmed of spaces and
/// tabs, empty ones included) until it returns true; returns whether it did.
template <class Pred>
bool any_list_item(std::string_view value, Pred&& pred) {
  for (std::string_view v = value; !v.empty();) {
    const auto comma = v.find(',');
    std::string_view item = v.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (pred(item)) return true;
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
  return false;
}

/// Writes `in` to `out` (in.size() bytes) with ASCII letters lowercased, as HTTP/2 field names
/// must be; other bytes are copied unchanged.
void to_lower_ascii(std::string_view in, char* out) noexcept;

/// An ordered, case-preserving multimap of header fields.
///
/// Names and values are stored in one contiguous buffer; a field is a pair of offsets into it, so
/// building a map from a parsed header section costs one allocation and moving it costs none.
/// Lookups compare names case-insensitively. Views returned by `get()` or iteration stay valid
/// until the map is next modified.
class HeaderMap {
 public:
  struct Field {
    std::string_view name;
    std::string_view value;
    /// HPACK's never-indexed (RFC 7541 §7.1.3): the field came from an HTTP/2 peer that asked
    /// for it never to enter a compression table (a credential, say), or it is to be sent so.
    /// An HTTP/2 hop then sends it never-indexed too, as an intermediary must; HTTP/1.1 has no
    /// such notion and ignores it.
    bool sensitive = false;
  };

  HeaderMap() = default;

  /// Adds a field after the existing ones, keeping any field of the same name.
  void append(std::string_view name, std::string_view value, bool sensitive = false);
  /// Removes every field named `name`, then appends one (Pingora's insert_header).
  void insert(std::string_view name, std::string_view value);
  /// Field `i` becomes `name: value`, in its place. The strings may point into the map.
  /// Precondition: i < size().
  void replace(std::size_t i, std::string_view name, std::string_view value,
               bool sensitive = false);
  /// Removes every field named `name`; returns how many were removed.
  std::size_t remove(std::string_view name);
  /// Removes every field for which `pred(Field)` is true, in one pass; returns how many.
  template <class Pred>
  std::size_t remove_if(Pred pred) {
    std::size_t out = 0;
    for (std::size_t i = 0; i < fields_.size(); ++i) {
      const Slot& s = fields_[i];
      if (pred(Field{std::string_view(buf_.data() + s.name_off, s.name_len),
                     std::string_view(buf_.data() + (s.value_off & kOffset), s.value_len),
                     (s.value_off & kSensitive) != 0})) {
        bytes_ -= s.name_len + s.value_len;
        continue;
      }
      fields_[out++] = s;
    }
    const std::size_t removed = fields_.size() - out;
    fields_.resize(out);
    return removed;
  }
  /// The first value of `name`, if present.
  std::optional<std::string_view> get(std::string_view name) const noexcept;
  /// All values of `name`, in order.
  std::vector<std::string_view> get_all(std::string_view name) const;
  std::size_t count(std::string_view name) const noexcept;
  bool contains(std::string_view name) const noexcept { return get(name).has_value(); }
  /// True when a comma-separated value of `name` equals `token` (case-insensitive), e.g.
  /// `has_token("Connection", "close")`.
  bool has_token(std::string_view name, std::string_view token) const noexcept;
  /// Calls `pred` on each item of the comma-separated values of `name` (fields in order, items
  /// trimmed of spaces and tabs, empty ones included) until it returns true; returns whether it
  /// did. E.g. the options a Connection field lists.
  template <class Pred>
  bool any_token(std::string_view name, Pred&& pred) const {
    for (auto f : *this)
      if (iequals(f.name, name) && any_list_item(f.value, pred)) return true;
    return false;
  }

  std::size_t size() const noexcept { return fields_.size(); }
  bool empty() const noexcept { return fields_.empty(); }
  /// The i-th field in order. Precondition: i < size().
  Field operator[](std::size_t i) const noexcept {
    const Slot& s = fields_[i];
    return {std::string_view(buf_.data() + s.name_off, s.name_len),
            std::string_view(buf_.data() + (s.value_off & kOffset), s.value_len),
            (s.value_off & kSensitive) != 0};
  }
  /// Removes every field, keeping the allocated capacity for reuse.
  void clear() noexcept;
  void reserve(std::size_t fields, std::size_t bytes);
  /// Bytes of names and values stored, a bound for serialisation.
  std::size_t byte_size() const noexcept { return bytes_; }
  /// Whether the map holds memory of its own (capacity kept by clear() for reuse).
  bool has_capacity() const noexcept { return fields_.capacity() != 0; }

  class const_iterator {
   public:
    using value_type = Field;
    using difference_type = std::ptrdiff_t;
    const_iterator() = default;
    const_iterator(const HeaderMap* m, std::size_t i) : map_(m), i_(i) {}
    Field operator*() const noexcept { return (*map_)[i_]; }
    const_iterator& operator++() noexcept {
      ++i_;
      return *this;
    }
    const_iterator operator++(int) noexcept {
      auto c = *this;
      ++i_;
      return c;
    }
    bool operator==(const const_iterator& o) const noexcept { return i_ == o.i_; }

   private:
    const HeaderMap* map_ = nullptr;
    std::size_t i_ = 0;
  };
  const_iterator begin() const noexcept { return {this, 0}; }
  const_iterator end() const noexcept { return {this, fields_.size()}; }

 private:
  struct Slot {
    std::uint32_t name_off;
    std::uint32_t name_len;
    std::uint32_t value_off;  // its top bit: Field::sensitive (buffers stay far below 2 GiB)
    std::uint32_t value_len;
  };
  static constexpr std::uint32_t kSensitive = 0x80000000u;
  static constexpr std::uint32_t kOffset = ~kSensitive;
  std::string buf_;
  std::vector<Slot> fields_;
  std::size_t bytes_ = 0;
  friend class http1::Parser;  // hands its parse buffer over instead of copying the fields
};

}  // namespace portico
