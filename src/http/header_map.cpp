#include <portico/http/header_map.hpp>

#include <cstdint>
#include <cstring>

namespace portico {

namespace {
template <std::size_t N>
inline std::uint64_t load(const char* p) noexcept {  // N bytes, zero-extended
  std::uint64_t v = 0;
  std::memcpy(&v, p, N);
  return v;
}
/// ASCII lower case of eight bytes at once: 0x20 is added to each byte in 'A'..'Z'.
inline std::uint64_t lower8(std::uint64_t x) noexcept {
  constexpr std::uint64_t k7f = 0x7f7f7f7f7f7f7f7fULL, k80 = 0x8080808080808080ULL;
  const std::uint64_t h = x & k7f;                        // no carry between bytes below
  const std::uint64_t ge_a = h + 0x3f3f3f3f3f3f3f3fULL;  // top bit: byte >= 'A'
  const std::uint64_t gt_z = h + 0x2525252525252525ULL;  // top bit: byte > 'Z'
  const std::uint64_t upper = ge_a & ~gt_z & ~x & k80;    // & ~x: not a byte >= 0x80
  return x | (upper >> 2);
}
inline bool same(std::uint64_t x, std::uint64_t y) noexcept { return x == y || lower8(x) == lower8(y); }
}  // namespace

namespace detail {
bool iequals_n(const char* p, const char* q, std::size_t n) noexcept {
  // Fixed-size loads only; the last word overlaps the one before it when n is not a multiple.
  if (n >= 8) {
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8)
      if (!same(load<8>(p + i), load<8>(q + i))) return false;
    return i == n || same(load<8>(p + n - 8), load<8>(q + n - 8));
  }
  if (n >= 4) return same(load<4>(p), load<4>(q)) && same(load<4>(p + n - 4), load<4>(q + n - 4));
  if (n >= 2) return same(load<2>(p), load<2>(q)) && same(load<2>(p + n - 2), load<2>(q + n - 2));
  return n == 0 || same(load<1>(p), load<1>(q));
}
}  // namespace detail

void to_lower_ascii(std::string_view in, char* out) noexcept {
  const char* p = in.data();
  const std::size_t n = in.size();
  // Fixed-size loads only, as in iequals: the last word overlaps the one before it (the bytes
  // written twice get the same value).
  if (n >= 8) {
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const std::uint64_t x = lower8(load<8>(p + i));
      std::memcpy(out + i, &x, 8);
    }
    if (i < n) {
      const std::uint64_t x = lower8(load<8>(p + n - 8));
      std::memcpy(out + n - 8, &x, 8);
    }
    return;
  }
  if (n >= 4) {
    std::uint32_t a, b;  // 32-bit words: the bytes go back where they came from on any byte order
    std::memcpy(&a, p, 4);
    std::memcpy(&b, p + n - 4, 4);
    a = static_cast<std::uint32_t>(lower8(a));
    b = static_cast<std::uint32_t>(lower8(b));
    std::memcpy(out, &a, 4);
    std::memcpy(out + n - 4, &b, 4);
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    const char c = p[i];
    out[i] = (c >= 'A' && c <= 'Z') ? static_cast<char>(c | 0x20) : c;
  }
}

void HeaderMap::append(std::string_view name, std::string_view value, bool sensitive) {
  auto inside = [this](std::string_view v) {
    return !v.empty() && v.data() >= buf_.data() && v.data() < buf_.data() + buf_.size();
  };
  if (inside(name) || inside(value)) {
    // Growing buf_ would invalidate views into it: copy them first.
    std::string n(name), v(value);
    append(n, v, sensitive);
    return;
  }
  Slot s;
  s.name_off = static_cast<std::uint32_t>(buf_.size());
  s.name_len = static_cast<std::uint32_t>(name.size());
  buf_.append(name);
  s.value_off = static_cast<std::uint32_t>(buf_.size()) | (sensitive ? kSensitive : 0);
  s.value_len = static_cast<std::uint32_t>(value.size());
  buf_.append(value);
  fields_.push_back(s);
  bytes_ += name.size() + value.size();
}

void HeaderMap::replace(std::size_t i, std::string_view name, std::string_view value,
                        bool sensitive) {
  // The bytes go after the others; the old ones stay unused, as remove() leaves them. A string
  // inside buf_ is found again by its offset once buf_ has grown.
  auto offset_in = [this](std::string_view v) -> std::ptrdiff_t {
    const bool inside =
        !v.empty() && v.data() >= buf_.data() && v.data() < buf_.data() + buf_.size();
    return inside ? v.data() - buf_.data() : -1;
  };
  const std::ptrdiff_t name_at = offset_in(name), value_at = offset_in(value);
  buf_.reserve(buf_.size() + name.size() + value.size());
  if (name_at >= 0) name = std::string_view(buf_.data() + name_at, name.size());
  if (value_at >= 0) value = std::string_view(buf_.data() + value_at, value.size());
  // (resize and copy: another caller of std::string::append in this file makes GCC move it out
  // of line, and append() the slower)
  const auto name_off = static_cast<std::uint32_t>(buf_.size());
  const auto value_off = static_cast<std::uint32_t>(name_off + name.size());
  buf_.resize(value_off + value.size());
  if (!name.empty()) std::memcpy(buf_.data() + name_off, name.data(), name.size());
  if (!value.empty()) std::memcpy(buf_.data() + value_off, value.data(), value.size());
  Slot& s = fields_[i];
  bytes_ = bytes_ - s.name_len - s.value_len + name.size() + value.size();
  s.name_off = name_off;
  s.name_len = static_cast<std::uint32_t>(name.size());
  s.value_off = value_off | (sensitive ? kSensitive : 0);
  s.value_len = static_cast<std::uint32_t>(value.size());
}

void HeaderMap::insert(std::string_view name, std::string_view value) {
  // `name`/`value` may point into buf_; remove() does not move bytes, so they stay valid.
  remove(name);
  append(name, value);
}

std::size_t HeaderMap::remove(std::string_view name) {
  std::size_t removed = 0;
  std::size_t out = 0;
  for (std::size_t i = 0; i < fields_.size(); ++i) {
    const Slot& s = fields_[i];
    if (iequals(std::string_view(buf_.data() + s.name_off, s.name_len), name)) {
      bytes_ -= s.name_len + s.value_len;
      ++removed;
      continue;
    }
    fields_[out++] = s;
  }
  fields_.resize(out);
  return removed;
}

std::optional<std::string_view> HeaderMap::get(std::string_view name) const noexcept {
  for (const Slot& s : fields_)
    if (s.name_len == name.size() && iequals(std::string_view(buf_.data() + s.name_off, s.name_len), name))
      return std::string_view(buf_.data() + (s.value_off & kOffset), s.value_len);
  return std::nullopt;
}

std::vector<std::string_view> HeaderMap::get_all(std::string_view name) const {
  std::vector<std::string_view> out;
  for (const Slot& s : fields_)
    if (iequals(std::string_view(buf_.data() + s.name_off, s.name_len), name))
      out.emplace_back(buf_.data() + (s.value_off & kOffset), s.value_len);
  return out;
}

std::size_t HeaderMap::count(std::string_view name) const noexcept {
  std::size_t n = 0;
  for (const Slot& s : fields_)
    if (iequals(std::string_view(buf_.data() + s.name_off, s.name_len), name)) ++n;
  return n;
}

bool HeaderMap::has_token(std::string_view name, std::string_view token) const noexcept {
  return any_token(name, [token](std::string_view item) { return iequals(item, token); });
}

void HeaderMap::clear() noexcept {
  buf_.clear();
  fields_.clear();
  bytes_ = 0;
}

void HeaderMap::reserve(std::size_t fields, std::size_t bytes) {
  fields_.reserve(fields);
  buf_.reserve(bytes);
}

}  // namespace portico
