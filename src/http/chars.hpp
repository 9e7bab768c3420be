// Character classes and checks shared by the HTTP/1 parser and the HTTP/2 translation: what a
// field value, a request-target and a host may contain. Internal (not installed).
#pragma once

#include <array>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace portico::http::chars {

inline constexpr std::uint64_t k01 = 0x0101010101010101ULL, k80 = 0x8080808080808080ULL;

enum : std::uint8_t { kTchar = 1, kQdtext = 2, kHex = 4, kRegName = 8 };
constexpr std::array<std::uint8_t, 256> make_classes() noexcept {
  std::array<std::uint8_t, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] |= kTchar | kHex;
  for (int c = 'a'; c <= 'z'; ++c) t[c] |= kTchar;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] |= kTchar;
  for (int c = 'a'; c <= 'f'; ++c) t[c] |= kHex;
  for (int c = 'A'; c <= 'F'; ++c) t[c] |= kHex;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] |= kTchar;
  // qdtext (RFC 9110 §5.6.4): HTAB, SP, 0x21, 0x23-0x5B, 0x5D-0x7E, obs-text.
  t['\t'] |= kQdtext;
  t[' '] |= kQdtext;
  t[0x21] |= kQdtext;
  for (int c = 0x23; c <= 0x5B; ++c) t[c] |= kQdtext;
  for (int c = 0x5D; c <= 0x7E; ++c) t[c] |= kQdtext;
  for (int c = 0x80; c <= 0xFF; ++c) t[c] |= kQdtext;
  // reg-name (RFC 3986 §3.2.2): unreserved, pct-encoded's '%', sub-delims.
  for (int c = 0; c < 256; ++c)
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
      t[c] |= kRegName;
  for (char c : std::string_view("-._~%!$&'()*+;=")) t[static_cast<unsigned char>(c)] |= kRegName;
  return t;
}
inline constexpr std::array<std::uint8_t, 256> kClass = make_classes();

inline bool is_tchar(char c) noexcept { return kClass[static_cast<unsigned char>(c)] & kTchar; }
inline bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }

/// Any byte of `x` below `n` (n <= 128): exact as a whole-word answer.
inline std::uint64_t has_less(std::uint64_t x, std::uint8_t n) noexcept {
  return (x - k01 * n) & ~x & k80;
}
inline std::uint64_t zero_byte(std::uint64_t v) noexcept { return (v - k01) & ~v & k80; }

/// A field value, reason phrase: HTAB, SP, VCHAR, obs-text. Eight bytes per step (the last step
/// overlaps the one before); a word with a byte below 0x20 (tabs included) or a DEL is checked
/// byte by byte.
inline bool value_chars_ok(const char* p, std::size_t n) noexcept {
  auto slow = [](const char* q, std::size_t m) {
    for (std::size_t k = 0; k < m; ++k) {
      const auto c = static_cast<unsigned char>(q[k]);
      if ((c < 0x20 && c != '\t') || c == 0x7F) return false;
    }
    return true;
  };
  if (n < 8) return slow(p, n);
  auto word_ok = [&slow](const char* q) {
    std::uint64_t x;
    std::memcpy(&x, q, 8);
    return !(has_less(x, 0x20) | zero_byte(x ^ (k01 * 0x7F))) || slow(q, 8);
  };
  for (std::size_t i = 0; i + 8 < n; i += 8)
    if (!word_ok(p + i)) return false;
  return word_ok(p + n - 8);
}

/// A request-target: visible ASCII only (0x21-0x7E).
inline bool target_chars_ok(const char* p, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t x;
    std::memcpy(&x, p + i, 8);
    if (has_less(x, 0x21) | (x & k80) | zero_byte(x ^ (k01 * 0x7F))) return false;
  }
  for (; i < n; ++i) {
    const auto c = static_cast<unsigned char>(p[i]);
    if (c < 0x21 || c >= 0x7F) return false;
  }
  return true;
}

/// uri-host [ ":" port ] (RFC 9112 §3.2): no list, no userinfo, no path, a numeric port.
inline bool valid_host(std::string_view h) {
  if (h.empty()) return true;  // allowed when the target has no authority
  std::size_t colon = h.rfind(':');
  std::string_view host = h, port;
  if (h.front() == '[') {
    auto close = h.find(']');
    if (close == std::string_view::npos) return false;
    host = h.substr(0, close + 1);
    port = h.substr(close + 1);
    if (!port.empty() && port.front() != ':') return false;
    if (!port.empty()) port.remove_prefix(1);
    for (char c : host.substr(1, host.size() - 2))
      if (!(std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.')) return false;
  } else {
    if (colon != std::string_view::npos) {
      host = h.substr(0, colon);
      port = h.substr(colon + 1);
      if (port.empty()) return false;
    }
    if (host.empty()) return false;
    for (char c : host)
      if (!(kClass[static_cast<unsigned char>(c)] & kRegName)) return false;
  }
  for (char c : port)
    if (c < '0' || c > '9') return false;
  return port.size() <= 5;
}

}  // namespace portico::http::chars
