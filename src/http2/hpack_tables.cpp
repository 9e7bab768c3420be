// The tables of HPACK: the static table (RFC 7541 Appendix A) and its lookup, the Huffman code
// (Appendix B) with its table-driven decoder and bit-accumulator encoder, and the dynamic table
// (§2.3.2, §4) with the encoder's hash indexes.
#include <algorithm>
#include <array>
#include <cstring>
#include <new>
#include <utility>

#include "http2/hpack.hpp"

namespace portico::h2::hpack {

namespace detail {

constexpr static_entry static_table[static_count + 1] = {
    {"", ""},
    {":authority", ""},                    // 1
    {":method", "GET"},                    // 2
    {":method", "POST"},                   // 3
    {":path", "/"},                        // 4
    {":path", "/index.html"},              // 5
    {":scheme", "http"},                   // 6
    {":scheme", "https"},                  // 7
    {":status", "200"},                    // 8
    {":status", "204"},                    // 9
    {":status", "206"},                    // 10
    {":status", "304"},                    // 11
    {":status", "400"},                    // 12
    {":status", "404"},                    // 13
    {":status", "500"},                    // 14
    {"accept-charset", ""},                // 15
    {"accept-encoding", "gzip, deflate"},  // 16
    {"accept-language", ""},               // 17
    {"accept-ranges", ""},                 // 18
    {"accept", ""},                        // 19
    {"access-control-allow-origin", ""},   // 20
    {"age", ""},                           // 21
    {"allow", ""},                         // 22
    {"authorization", ""},                 // 23
    {"cache-control", ""},                 // 24
    {"content-disposition", ""},           // 25
    {"content-encoding", ""},              // 26
    {"content-language", ""},              // 27
    {"content-length", ""},                // 28
    {"content-location", ""},              // 29
    {"content-range", ""},                 // 30
    {"content-type", ""},                  // 31
    {"cookie", ""},                        // 32
    {"date", ""},                          // 33
    {"etag", ""},                          // 34
    {"expect", ""},                        // 35
    {"expires", ""},                       // 36
    {"from", ""},                          // 37
    {"host", ""},                          // 38
    {"if-match", ""},                      // 39
    {"if-modified-since", ""},             // 40
    {"if-none-match", ""},                 // 41
    {"if-range", ""},                      // 42
    {"if-unmodified-since", ""},           // 43
    {"last-modified", ""},                 // 44
    {"link", ""},                          // 45
    {"location", ""},                      // 46
    {"max-forwards", ""},                  // 47
    {"proxy-authenticate", ""},            // 48
    {"proxy-authorization", ""},           // 49
    {"range", ""},                         // 50
    {"referer", ""},                       // 51
    {"refresh", ""},                       // 52
    {"retry-after", ""},                   // 53
    {"server", ""},                        // 54
    {"set-cookie", ""},                    // 55
    {"strict-transport-security", ""},     // 56
    {"transfer-encoding", ""},             // 57
    {"user-agent", ""},                    // 58
    {"vary", ""},                          // 59
    {"via", ""},                           // 60
    {"www-authenticate", ""},              // 61
};

}  // namespace detail

namespace {

using detail::static_count;
using detail::static_table;
using uchar = unsigned char;

inline std::uint64_t load64(const char* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

inline std::uint64_t load32(const char* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline std::uint64_t rotl(std::uint64_t x, unsigned r) noexcept { return x << r | x >> (64 - r); }

// A string's length and its first and last 16 bytes (overlapping when shorter), as two words.
struct sample {
  std::uint64_t a, b;
};

inline sample sample_of(std::string_view s) noexcept {
  const char* p = s.data();
  const std::size_t n = s.size();
  if (n >= 16) {
    return {load64(p) ^ rotl(load64(p + n - 16), 29) ^ n,
            load64(p + 8) ^ rotl(load64(p + n - 8), 43)};
  }
  if (n >= 8) return {load64(p) ^ n, load64(p + n - 8)};
  if (n >= 4) return {load32(p) << 32 ^ n, load32(p + n - 4)};
  if (n > 0) {
    const auto c = [&](std::size_t i) { return std::uint64_t{static_cast<uchar>(p[i])}; };
    return {c(0) << 48 ^ c(n / 2) << 40 ^ c(n - 1) << 32 ^ n, 0};
  }
  return {0, 0};
}

// Multiplies and folds (the product's bits spread by a xor-shift); independent lanes.
inline std::uint64_t fold(std::uint64_t x, std::uint64_t k) noexcept {
  x *= k;
  return x ^ x >> 31;
}

inline std::uint32_t finish(std::uint64_t h) noexcept {
  h *= 0xd6e8feb86659fd93ULL;
  h ^= h >> 32;
  return static_cast<std::uint32_t>(h) | 1;
}

inline std::size_t next_pow2(std::size_t n) noexcept {
  std::size_t p = 8;
  while (p < n) p *= 2;
  return p;
}

// Equality of short strings without a call; memcmp for long ones.
inline bool same(const char* a, const char* b, std::size_t n) noexcept {
  if (n > 64) return std::memcmp(a, b, n) == 0;
  if (n >= 8) {
    for (std::size_t i = 0; i + 8 < n; i += 8)
      if (load64(a + i) != load64(b + i)) return false;
    return load64(a + n - 8) == load64(b + n - 8);
  }
  if (n >= 4) return load32(a) == load32(b) && load32(a + n - 4) == load32(b + n - 4);
  for (std::size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return false;
  return true;
}

inline bool same(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && same(a.data(), b.data(), a.size());
}

// ---- Static table lookup by name --------------------------------------------------------------

// The 52 distinct names map without collision to 128 slots by a multiplicative hash of their
// length and first, second and last characters (the multiplier was searched once; the
// static_assert below proves it still holds). Names are 3 to 27 bytes long.
constexpr std::uint32_t kStaticMul = 0xd1bfc539;
constexpr std::size_t kStaticMinName = 3;
constexpr std::size_t kStaticMaxName = 27;

constexpr std::uint32_t static_slot(std::string_view n) noexcept {
  const std::uint32_t key = static_cast<std::uint32_t>(n.size()) << 24 |
                            std::uint32_t{static_cast<unsigned char>(n[0])} << 16 |
                            std::uint32_t{static_cast<unsigned char>(n[1])} << 8 |
                            static_cast<unsigned char>(n.back());
  return (key * kStaticMul) >> 25;
}

struct static_index {
  std::array<std::uint8_t, 128> slot{};  // first index of the name in that slot, or 0
  bool perfect = true;
};

constexpr static_index make_static_index() {
  static_index t;
  for (std::size_t i = 1; i <= static_count; ++i) {
    const std::string_view n = static_table[i].name;
    if (n == static_table[i - 1].name) continue;  // same-name entries are consecutive
    auto& s = t.slot[static_slot(n)];
    if (s != 0 || n.size() < kStaticMinName || n.size() > kStaticMaxName) t.perfect = false;
    s = static_cast<std::uint8_t>(i);
  }
  return t;
}
constexpr static_index kStaticIndex = make_static_index();
static_assert(kStaticIndex.perfect, "static table name hash has a collision");
static_assert(static_table[detail::static_authorization].name == "authorization" &&
              static_table[detail::static_cookie].name == "cookie" &&
              static_table[detail::static_proxy_authorization].name == "proxy-authorization");

// How many entries from i on share its name (0 for entry 0).
constexpr std::array<std::uint8_t, static_count + 1> make_runs() {
  std::array<std::uint8_t, static_count + 1> r{};
  for (std::size_t i = 1; i <= static_count; ++i)
    while (i + r[i] <= static_count && static_table[i + r[i]].name == static_table[i].name) ++r[i];
  return r;
}
constexpr auto kStaticRun = make_runs();

// ---- Huffman code -----------------------------------------------------------------------------

struct huff_code {
  std::uint32_t code;  // right-aligned
  std::uint8_t len;    // 5..30 bits
};

// RFC 7541 Appendix B, symbols 0..255 and EOS (256).
constexpr huff_code kHuff[257] = {
    {0x1ff8, 13},     {0x7fffd8, 23},   {0xfffffe2, 28},  {0xfffffe3, 28},  // 0
    {0xfffffe4, 28},  {0xfffffe5, 28},  {0xfffffe6, 28},  {0xfffffe7, 28},  // 4
    {0xfffffe8, 28},  {0xffffea, 24},   {0x3ffffffc, 30}, {0xfffffe9, 28},  // 8
    {0xfffffea, 28},  {0x3ffffffd, 30}, {0xfffffeb, 28},  {0xfffffec, 28},  // 12
    {0xfffffed, 28},  {0xfffffee, 28},  {0xfffffef, 28},  {0xffffff0, 28},  // 16
    {0xffffff1, 28},  {0xffffff2, 28},  {0x3ffffffe, 30}, {0xffffff3, 28},  // 20
    {0xffffff4, 28},  {0xffffff5, 28},  {0xffffff6, 28},  {0xffffff7, 28},  // 24
    {0xffffff8, 28},  {0xffffff9, 28},  {0xffffffa, 28},  {0xffffffb, 28},  // 28
    {0x14, 6},        {0x3f8, 10},      {0x3f9, 10},      {0xffa, 12},      // 32
    {0x1ff9, 13},     {0x15, 6},        {0xf8, 8},        {0x7fa, 11},      // 36
    {0x3fa, 10},      {0x3fb, 10},      {0xf9, 8},        {0x7fb, 11},      // 40
    {0xfa, 8},        {0x16, 6},        {0x17, 6},        {0x18, 6},        // 44
    {0x0, 5},         {0x1, 5},         {0x2, 5},         {0x19, 6},        // 48
    {0x1a, 6},        {0x1b, 6},        {0x1c, 6},        {0x1d, 6},        // 52
    {0x1e, 6},        {0x1f, 6},        {0x5c, 7},        {0xfb, 8},        // 56
    {0x7ffc, 15},     {0x20, 6},        {0xffb, 12},      {0x3fc, 10},      // 60
    {0x1ffa, 13},     {0x21, 6},        {0x5d, 7},        {0x5e, 7},        // 64
    {0x5f, 7},        {0x60, 7},        {0x61, 7},        {0x62, 7},        // 68
    {0x63, 7},        {0x64, 7},        {0x65, 7},        {0x66, 7},        // 72
    {0x67, 7},        {0x68, 7},        {0x69, 7},        {0x6a, 7},        // 76
    {0x6b, 7},        {0x6c, 7},        {0x6d, 7},        {0x6e, 7},        // 80
    {0x6f, 7},        {0x70, 7},        {0x71, 7},        {0x72, 7},        // 84
    {0xfc, 8},        {0x73, 7},        {0xfd, 8},        {0x1ffb, 13},     // 88
    {0x7fff0, 19},    {0x1ffc, 13},     {0x3ffc, 14},     {0x22, 6},        // 92
    {0x7ffd, 15},     {0x3, 5},         {0x23, 6},        {0x4, 5},         // 96
    {0x24, 6},        {0x5, 5},         {0x25, 6},        {0x26, 6},        // 100
    {0x27, 6},        {0x6, 5},         {0x74, 7},        {0x75, 7},        // 104
    {0x28, 6},        {0x29, 6},        {0x2a, 6},        {0x7, 5},         // 108
    {0x2b, 6},        {0x76, 7},        {0x2c, 6},        {0x8, 5},         // 112
    {0x9, 5},         {0x2d, 6},        {0x77, 7},        {0x78, 7},        // 116
    {0x79, 7},        {0x7a, 7},        {0x7b, 7},        {0x7ffe, 15},     // 120
    {0x7fc, 11},      {0x3ffd, 14},     {0x1ffd, 13},     {0xffffffc, 28},  // 124
    {0xfffe6, 20},    {0x3fffd2, 22},   {0xfffe7, 20},    {0xfffe8, 20},    // 128
    {0x3fffd3, 22},   {0x3fffd4, 22},   {0x3fffd5, 22},   {0x7fffd9, 23},   // 132
    {0x3fffd6, 22},   {0x7fffda, 23},   {0x7fffdb, 23},   {0x7fffdc, 23},   // 136
    {0x7fffdd, 23},   {0x7fffde, 23},   {0xffffeb, 24},   {0x7fffdf, 23},   // 140
    {0xffffec, 24},   {0xffffed, 24},   {0x3fffd7, 22},   {0x7fffe0, 23},   // 144
    {0xffffee, 24},   {0x7fffe1, 23},   {0x7fffe2, 23},   {0x7fffe3, 23},   // 148
    {0x7fffe4, 23},   {0x1fffdc, 21},   {0x3fffd8, 22},   {0x7fffe5, 23},   // 152
    {0x3fffd9, 22},   {0x7fffe6, 23},   {0x7fffe7, 23},   {0xffffef, 24},   // 156
    {0x3fffda, 22},   {0x1fffdd, 21},   {0xfffe9, 20},    {0x3fffdb, 22},   // 160
    {0x3fffdc, 22},   {0x7fffe8, 23},   {0x7fffe9, 23},   {0x1fffde, 21},   // 164
    {0x7fffea, 23},   {0x3fffdd, 22},   {0x3fffde, 22},   {0xfffff0, 24},   // 168
    {0x1fffdf, 21},   {0x3fffdf, 22},   {0x7fffeb, 23},   {0x7fffec, 23},   // 172
    {0x1fffe0, 21},   {0x1fffe1, 21},   {0x3fffe0, 22},   {0x1fffe2, 21},   // 176
    {0x7fffed, 23},   {0x3fffe1, 22},   {0x7fffee, 23},   {0x7fffef, 23},   // 180
    {0xfffea, 20},    {0x3fffe2, 22},   {0x3fffe3, 22},   {0x3fffe4, 22},   // 184
    {0x7ffff0, 23},   {0x3fffe5, 22},   {0x3fffe6, 22},   {0x7ffff1, 23},   // 188
    {0x3ffffe0, 26},  {0x3ffffe1, 26},  {0xfffeb, 20},    {0x7fff1, 19},    // 192
    {0x3fffe7, 22},   {0x7ffff2, 23},   {0x3fffe8, 22},   {0x1ffffec, 25},  // 196
    {0x3ffffe2, 26},  {0x3ffffe3, 26},  {0x3ffffe4, 26},  {0x7ffffde, 27},  // 200
    {0x7ffffdf, 27},  {0x3ffffe5, 26},  {0xfffff1, 24},   {0x1ffffed, 25},  // 204
    {0x7fff2, 19},    {0x1fffe3, 21},   {0x3ffffe6, 26},  {0x7ffffe0, 27},  // 208
    {0x7ffffe1, 27},  {0x3ffffe7, 26},  {0x7ffffe2, 27},  {0xfffff2, 24},   // 212
    {0x1fffe4, 21},   {0x1fffe5, 21},   {0x3ffffe8, 26},  {0x3ffffe9, 26},  // 216
    {0xffffffd, 28},  {0x7ffffe3, 27},  {0x7ffffe4, 27},  {0x7ffffe5, 27},  // 220
    {0xfffec, 20},    {0xfffff3, 24},   {0xfffed, 20},    {0x1fffe6, 21},   // 224
    {0x3fffe9, 22},   {0x1fffe7, 21},   {0x1fffe8, 21},   {0x7ffff3, 23},   // 228
    {0x3fffea, 22},   {0x3fffeb, 22},   {0x1ffffee, 25},  {0x1ffffef, 25},  // 232
    {0xfffff4, 24},   {0xfffff5, 24},   {0x3ffffea, 26},  {0x7ffff4, 23},   // 236
    {0x3ffffeb, 26},  {0x7ffffe6, 27},  {0x3ffffec, 26},  {0x3ffffed, 26},  // 240
    {0x7ffffe7, 27},  {0x7ffffe8, 27},  {0x7ffffe9, 27},  {0x7ffffea, 27},  // 244
    {0x7ffffeb, 27},  {0xffffffe, 28},  {0x7ffffec, 27},  {0x7ffffed, 27},  // 248
    {0x7ffffee, 27},  {0x7ffffef, 27},  {0x7fffff0, 27},  {0x3ffffee, 26},  // 252
    {0x3fffffff, 30},                                                       // 256
};

constexpr unsigned kEos = 256;

// Decoding tables (16 KiB + 2.4 KiB, the size of nghttp2's 4-bit state machine). The root table
// is indexed by the next 12 bits of input and gives one or two whole symbols (two when both
// codes fit in those bits: any two lowercase letters, digits or common punctuation); longer
// codes go through sub-tables of at most 8 bits (12 + 8 + 8 + 2 bits reach the 30-bit codes).
// A 12-bit root decodes header text 18 % faster than an 11-bit one (more pairs: 6 + 6 bits).
// An entry is a link or a leaf:
//   link: bit 31 set, bits 0-15 offset of the sub-table, bits 16-20 its width in bits
//   leaf: bits 0-7 first symbol, 8-15 second symbol, 16-20 bits consumed (the code length in
//         sub-tables), 21-25 length of the first code, 26-27 symbol count, bit 28 EOS
constexpr unsigned kRootBits = 12;
constexpr unsigned kSubBits = 8;
constexpr std::uint32_t kLink = 1u << 31;
constexpr std::uint32_t kEosFlag = 1u << 28;

constexpr std::uint32_t leaf(unsigned sym, unsigned len) {
  return (sym & 0xff) | len << 16 | len << 21 | 1u << 26 | (sym == kEos ? kEosFlag : 0);
}
constexpr std::uint32_t pair(std::uint32_t first, std::uint32_t second) {
  const std::uint32_t l1 = first >> 21 & 31, l2 = second >> 21 & 31;
  return (first & 0xff) | (second & 0xff) << 8 | (l1 + l2) << 16 | l1 << 21 | 2u << 26;
}
constexpr std::uint32_t link(std::size_t offset, unsigned width) {
  return kLink | width << 16 | static_cast<std::uint32_t>(offset);
}

// The longest code starting with `prefix` (plen bits).
constexpr unsigned longest_under(std::uint32_t prefix, unsigned plen) {
  unsigned m = 0;
  for (const auto& c : kHuff)
    if (c.len > plen && c.code >> (c.len - plen) == prefix && c.len > m) m = c.len;
  return m;
}

template <std::size_t N>
struct decode_tables {
  std::array<std::uint32_t, 1u << kRootBits> root{};
  std::array<std::uint32_t, N> sub{};
  std::size_t used = 0;  // sub-table entries filled
};

template <std::size_t N>
constexpr decode_tables<N> make_decode_tables() {
  decode_tables<N> t;
  struct node {
    std::uint32_t prefix;  // bits leading to this table
    unsigned plen, width;
    std::size_t offset;  // in `sub`; the root table when plen == 0
  };
  node stack[64];
  std::size_t top = 0;
  stack[top++] = {0, 0, kRootBits, 0};
  while (top > 0) {
    const node n = stack[--top];
    std::uint32_t* table = n.plen == 0 ? t.root.data() : t.sub.data() + n.offset;
    const unsigned end = n.plen + n.width;
    const std::uint32_t mask = (1u << n.width) - 1;
    for (unsigned s = 0; s <= kEos; ++s) {
      const unsigned len = kHuff[s].len;
      const std::uint32_t code = kHuff[s].code;
      if (len <= n.plen || code >> (len - n.plen) != n.prefix) continue;
      if (len <= end) {  // ends in this table: fills 2^(end - len) entries
        const std::uint32_t first = (code << (end - len)) & mask;
        for (std::uint32_t k = 0; k < 1u << (end - len); ++k) table[first + k] = leaf(s, len);
        continue;
      }
      const std::uint32_t child = code >> (len - end);
      std::uint32_t& e = table[child & mask];
      if (e & kLink) continue;
      const unsigned width = longest_under(child, end) - end;
      const unsigned w = width < kSubBits ? width : kSubBits;
      e = link(t.used, w);
      stack[top++] = {child, end, w, t.used};
      t.used += std::size_t{1} << w;
    }
  }
  // Pairs: a first code shorter than the root width, followed by a whole second code.
  const auto single = t.root;
  for (std::uint32_t i = 0; i < single.size(); ++i) {
    const std::uint32_t e = single[i];
    if (e & kLink) continue;
    const unsigned l1 = e >> 21 & 31;
    const std::uint32_t e2 = single[(i << l1) & ((1u << kRootBits) - 1)];
    if (e2 & kLink || (e2 >> 21 & 31) > kRootBits - l1) continue;
    t.root[i] = pair(e, e2);
  }
  return t;
}

constexpr std::size_t kSubSize = make_decode_tables<1024>().used;
constexpr auto kDecode = make_decode_tables<kSubSize>();
static_assert(kDecode.used == kSubSize);

constexpr std::array<std::uint8_t, 256> make_lengths() {
  std::array<std::uint8_t, 256> l{};
  for (unsigned s = 0; s < 256; ++s) l[s] = kHuff[s].len;
  return l;
}
constexpr auto kHuffLen = make_lengths();

inline std::uint64_t load_be64(const unsigned char* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return __builtin_bswap64(v);
}

inline void store_be32(char* p, std::uint32_t v) noexcept {
  v = __builtin_bswap32(v);
  std::memcpy(p, &v, 4);
}

// Walks the sub-tables from root entry `e` for the bits of `acc` (left-aligned).
inline std::uint32_t walk(std::uint32_t e, std::uint64_t acc) noexcept {
  unsigned used = kRootBits;
  do {  // at most three levels
    const unsigned w = e >> 16 & 31;
    e = kDecode.sub[(e & 0xffff) + static_cast<std::size_t>((acc << used) >> (64 - w))];
    used += w;
  } while (e & kLink);
  return e;
}

}  // namespace

detail::static_match detail::static_find(std::string_view name, std::string_view value) noexcept {
  if (name.size() < kStaticMinName || name.size() > kStaticMaxName) return {};
  const std::uint32_t i = kStaticIndex.slot[static_slot(name)];
  if (i == 0 || !same(static_table[i].name, name)) return {};
  for (std::uint32_t k = i; k < i + kStaticRun[i]; ++k)
    if (same(static_table[k].value, value)) return {i, k};
  return {i, 0};
}

bool detail::static_equal(std::uint32_t i, std::string_view name, std::string_view value) noexcept {
  return same(static_table[i].name, name) && same(static_table[i].value, value);
}

std::size_t huffman_length(std::string_view s) noexcept {
  std::size_t bits = 0;
  for (unsigned char c : s) bits += kHuffLen[c];
  return (bits + 7) / 8;
}

void detail::huffman_encode_to(std::string_view s, char* out) noexcept {
  std::uint64_t acc = 0;  // the low `bits` bits are pending
  unsigned bits = 0;
  for (unsigned char c : s) {
    acc = acc << kHuff[c].len | kHuff[c].code;  // bits < 32 and len <= 30: no overflow
    bits += kHuff[c].len;
    if (bits >= 32) {
      bits -= 32;
      store_be32(out, static_cast<std::uint32_t>(acc >> bits));
      out += 4;
    }
  }
  if (bits % 8 != 0) {  // pad with the most significant bits of EOS (ones)
    const unsigned pad = 8 - bits % 8;
    acc = acc << pad | ((1u << pad) - 1);
    bits += pad;
  }
  while (bits > 0) {
    bits -= 8;
    *out++ = static_cast<char>(acc >> bits);
  }
}

char* detail::huffman_decode_to(const unsigned char* in, std::size_t n, char* out) noexcept {
  const unsigned char* p = in;
  const unsigned char* const end = in + n;
  std::uint64_t acc = 0;  // left-aligned: the top `nbits` bits are input not yet decoded
  unsigned nbits = 0;
  for (;;) {
    if (end - p >= 8) {
      // Branch-free refill to 56..63 bits; bits loaded past `nbits` are loaded again next time.
      acc |= load_be64(p) >> nbits;
      p += (63 - nbits) >> 3;
      nbits |= 56;
    } else {
      while (nbits <= 56 && p < end) {
        acc |= std::uint64_t{*p++} << (56 - nbits);
        nbits += 8;
      }
    }
    if (nbits < 30) break;  // the input is exhausted: the rest is decoded with care below
    do {                    // any code fits in the 30 or more bits held
      std::uint32_t e = kDecode.root[acc >> (64 - kRootBits)];
      if (!(e & kLink)) {  // one or two symbols
        out[0] = static_cast<char>(e);
        out[1] = static_cast<char>(e >> 8);
        out += e >> 26 & 3;
      } else {
        e = walk(e, acc);
        if (e & kEosFlag) return nullptr;
        *out++ = static_cast<char>(e);
      }
      const unsigned used = e >> 16 & 31;
      acc <<= used;
      nbits -= used;
    } while (nbits >= 30);
  }
  // Under 30 bits are left. Bits past the end read as ones, so a code longer than what is left
  // is an incomplete one: valid only as padding, i.e. at most 7 bits, all ones (§5.2).
  while (nbits > 0) {
    const std::uint64_t a = acc | (~std::uint64_t{0} >> nbits);
    std::uint32_t e = kDecode.root[a >> (64 - kRootBits)];
    unsigned len;
    if (!(e & kLink)) {
      len = e >> 21 & 31;  // the first symbol only
    } else {
      e = walk(e, a);
      len = e >> 16 & 31;
    }
    if (len > nbits) {
      const bool ones = (acc >> (64 - nbits)) == (std::uint64_t{1} << nbits) - 1;
      return nbits <= 7 && ones ? out : nullptr;
    }
    if (e & kEosFlag) return nullptr;
    *out++ = static_cast<char>(e);
    acc <<= len;
    nbits -= len;
  }
  return out;
}

void huffman_encode(std::string_view s, std::string& out) {
  const std::size_t old = out.size();
  out.resize(old + huffman_length(s));
  detail::huffman_encode_to(s, out.data() + old);
}

bool huffman_decode(std::string_view in, std::string& out) {
  const std::size_t old = out.size();
  out.resize(old + in.size() * 8 / 5 + 2);
  char* end = detail::huffman_decode_to(reinterpret_cast<const unsigned char*>(in.data()),
                                        in.size(), out.data() + old);
  out.resize(end ? static_cast<std::size_t>(end - out.data()) : old);
  return end != nullptr;
}

// ---- The dynamic table ------------------------------------------------------------------------

namespace detail {

std::uint32_t hash_name(std::string_view name) noexcept {
  const sample n = sample_of(name);
  return finish(fold(n.a ^ 0x9e3779b97f4a7c15ULL, 0xbf58476d1ce4e5b9ULL) ^
                fold(n.b ^ 0x94d049bb133111ebULL, 0xd6e8feb86659fd93ULL));
}

std::uint32_t hash_pair(std::string_view name, std::string_view value) noexcept {
  const sample n = sample_of(name), v = sample_of(value);
  return finish(fold(n.a ^ 0x9e3779b97f4a7c15ULL, 0xbf58476d1ce4e5b9ULL) ^
                fold(n.b ^ 0x94d049bb133111ebULL, 0xd6e8feb86659fd93ULL) ^
                rotl(fold(v.a ^ 0x2545f4914f6cdd1dULL, 0x9e3779b97f4a7c15ULL), 21) ^
                rotl(fold(v.b ^ 0xc2b2ae3d27d4eb4fULL, 0xbf58476d1ce4e5b9ULL), 42));
}

// Bookkeeping of one entry: where its bytes start in the ring and its lengths.
struct field_table::record {
  std::uint32_t offset, name_len, value_len;
};

// An index slot: `hash` is odd when used (hash_name and hash_pair set the low bit), 0 when free.
struct field_table::slot {
  std::uint32_t hash, seq;
};

// Block layout: records[entries_cap_], then for indexed tables hashes[2 * entries_cap_] (name
// and pair hash of each record) and slots[2 * slots_cap_] (name index, pair index), then the
// byte ring.
inline std::size_t field_table::block_bytes() const noexcept {
  std::size_t n = std::size_t{entries_cap_} * sizeof(record) + bytes_cap_;
  if (indexed_) n += std::size_t{entries_cap_} * 8 + std::size_t{slots_cap_} * 2 * sizeof(slot);
  return n;
}
inline field_table::record* field_table::records() const noexcept {
  return static_cast<record*>(block_);
}
inline std::uint32_t* field_table::hashes() const noexcept {
  return reinterpret_cast<std::uint32_t*>(records() + entries_cap_);
}
inline field_table::slot* field_table::slots() const noexcept {
  return reinterpret_cast<slot*>(hashes() + std::size_t{entries_cap_} * 2);
}
inline char* field_table::bytes() const noexcept {
  if (!indexed_) return reinterpret_cast<char*>(records() + entries_cap_);
  return reinterpret_cast<char*>(slots() + std::size_t{slots_cap_} * 2);
}

field_table::field_table(std::uint32_t max_size, bool indexed) noexcept
    : max_size_(max_size), indexed_(indexed) {}

field_table::~field_table() { ::operator delete(block_); }

field_table::field_table(field_table&& o) noexcept
    : block_(std::exchange(o.block_, nullptr)),
      size_(o.size_),
      max_size_(o.max_size_),
      bytes_cap_(o.bytes_cap_),
      entries_cap_(o.entries_cap_),
      slots_cap_(o.slots_cap_),
      byte_head_(o.byte_head_),
      bytes_used_(o.bytes_used_),
      head_(o.head_),
      count_(o.count_),
      head_seq_(o.head_seq_),
      indexed_(o.indexed_) {
  o.size_ = 0;
  o.bytes_cap_ = o.entries_cap_ = o.slots_cap_ = 0;
  o.byte_head_ = o.bytes_used_ = o.head_ = o.count_ = 0;
}

field_table& field_table::operator=(field_table&& o) noexcept {
  if (this != &o) {
    this->~field_table();
    new (this) field_table(std::move(o));
  }
  return *this;
}

std::size_t field_table::size() const noexcept { return size_; }
std::uint32_t field_table::max_size() const noexcept { return max_size_; }
std::uint32_t field_table::count() const noexcept { return count_; }
std::size_t field_table::memory() const noexcept { return block_ ? block_bytes() : 0; }

inline field_table::record& field_table::at_seq(std::uint32_t seq) const noexcept {
  std::uint32_t pos = head_ + (seq - head_seq_);
  if (pos >= entries_cap_) pos -= entries_cap_;
  return records()[pos];
}

field_table::view field_table::get(std::uint32_t i) const noexcept {
  const record& r = at_seq(head_seq_ + count_ - 1 - i);
  view v;
  const char* b = bytes();
  auto piece = [&](std::uint32_t off, std::uint32_t len, std::string_view* out) {
    const std::uint32_t first = std::min(len, bytes_cap_ - off);
    out[0] = std::string_view(b + off, first);
    if (first < len) out[1] = std::string_view(b, len - first);
  };
  piece(r.offset, r.name_len, v.name);
  std::uint32_t voff = r.offset + r.name_len;
  if (voff >= bytes_cap_) voff -= bytes_cap_;
  piece(voff, r.value_len, v.value);
  return v;
}

inline bool field_table::equal(std::uint32_t off, std::uint32_t len,
                               std::string_view s) const noexcept {
  if (len != s.size()) return false;
  const char* b = bytes();
  if (len <= bytes_cap_ - off) return same(b + off, s.data(), len);
  const std::uint32_t first = bytes_cap_ - off;
  return same(b + off, s.data(), first) && same(b, s.data() + first, len - first);
}

inline void field_table::evict_oldest() noexcept {
  record& r = records()[head_];
  if (indexed_) {
    const std::uint32_t* h = hashes() + std::size_t{head_} * 2;
    index_remove(head_seq_, false, h[0]);
    index_remove(head_seq_, true, h[1]);
  }
  const std::uint32_t n = r.name_len + r.value_len;
  byte_head_ += n;
  if (byte_head_ >= bytes_cap_) byte_head_ -= bytes_cap_;
  bytes_used_ -= n;
  size_ -= n + entry_overhead;
  if (++head_ == entries_cap_) head_ = 0;
  ++head_seq_;
  if (--count_ == 0) byte_head_ = head_ = 0;
}

void field_table::set_max_size(std::uint32_t n) {
  max_size_ = n;
  while (size_ > n) evict_oldest();
  // Storage bounded by the new maximum: at most n - 32 bytes and n / 32 records.
  if (block_ && (bytes_cap_ > n || entries_cap_ > n / entry_overhead)) trim();
}

void field_table::trim() noexcept {
  if (count_ == 0) {
    ::operator delete(block_);
    block_ = nullptr;
    bytes_cap_ = entries_cap_ = slots_cap_ = 0;
    byte_head_ = head_ = 0;
    return;
  }
  if (bytes_cap_ != bytes_used_ || entries_cap_ != count_) reallocate(bytes_used_, count_, true);
}

void field_table::reallocate(std::uint32_t bytes_cap, std::uint32_t entries_cap, bool shrink) {
  field_table t(max_size_, indexed_);
  t.bytes_cap_ = bytes_cap;
  t.entries_cap_ = entries_cap;
  if (indexed_) t.slots_cap_ = static_cast<std::uint32_t>(next_pow2(std::size_t{entries_cap} * 2));
  // Shrinking is optional: without memory for the smaller block, the larger one stays.
  t.block_ =
      shrink ? ::operator new(t.block_bytes(), std::nothrow) : ::operator new(t.block_bytes());
  if (!t.block_) return;
  if (indexed_) std::memset(t.slots(), 0, std::size_t{t.slots_cap_} * 2 * sizeof(slot));
  // Entries move in order to the start of the new rings, keeping their insertion numbers.
  char* out = t.bytes();
  std::uint32_t off = 0;
  for (std::uint32_t k = 0; k < count_; ++k) {
    const view v = get(count_ - 1 - k);
    record& r = t.records()[k];
    r = {off, static_cast<std::uint32_t>(v.name[0].size() + v.name[1].size()),
         static_cast<std::uint32_t>(v.value[0].size() + v.value[1].size())};
    for (const auto& s : {v.name[0], v.name[1], v.value[0], v.value[1]}) {
      if (!s.empty()) std::memcpy(out + off, s.data(), s.size());
      off += static_cast<std::uint32_t>(s.size());
    }
    if (indexed_) {
      std::uint32_t* h = hashes() + std::size_t{(head_ + k) % entries_cap_} * 2;
      std::memcpy(t.hashes() + std::size_t{k} * 2, h, 8);
    }
  }
  t.size_ = size_;
  t.bytes_used_ = bytes_used_;
  t.count_ = count_;
  t.head_seq_ = head_seq_;
  if (indexed_ && count_ > 0) {  // the keys are distinct: the slots move without comparisons
    const slot* old = slots();
    for (std::uint32_t i = 0; i < slots_cap_ * 2; ++i)
      if (old[i].hash != 0) t.index_place(i >= slots_cap_, old[i].hash, old[i].seq);
  }
  *this = std::move(t);
}

bool field_table::add(std::string_view name, std::string_view value, std::uint32_t name_hash,
                      std::uint32_t pair_hash) {
  const std::size_t esize = name.size() + value.size() + entry_overhead;
  if (esize > max_size_) {  // §4.4: the table is emptied, the entry not added
    while (count_ > 0) evict_oldest();
    return false;
  }
  while (size_ + esize > max_size_) evict_oldest();
  const auto n = static_cast<std::uint32_t>(name.size() + value.size());
  if (bytes_used_ + n > bytes_cap_ || count_ + 1 > entries_cap_) {
    // Geometric growth, bounded by what the maximum size can hold.
    const std::size_t max_bytes = max_size_ - entry_overhead;
    const std::size_t max_entries = max_size_ / entry_overhead;
    std::size_t b = bytes_cap_, e = entries_cap_;
    if (bytes_used_ + n > b)
      b = std::min(std::max({std::size_t{bytes_used_} + n, b * 2, std::size_t{256}}), max_bytes);
    if (count_ + 1 > e)
      e = std::min(std::max({std::size_t{count_} + 1, e * 2, std::size_t{8}}), max_entries);
    reallocate(static_cast<std::uint32_t>(b), static_cast<std::uint32_t>(e));
  }
  std::uint32_t off = byte_head_ + bytes_used_;
  if (off >= bytes_cap_) off -= bytes_cap_;
  const std::uint32_t start = off;
  char* b = bytes();
  for (const std::string_view s : {name, value}) {
    const std::size_t first = std::min<std::size_t>(s.size(), bytes_cap_ - off);
    if (first) std::memcpy(b + off, s.data(), first);
    if (first < s.size()) std::memcpy(b, s.data() + first, s.size() - first);
    off += static_cast<std::uint32_t>(s.size());
    if (off >= bytes_cap_) off -= bytes_cap_;
  }
  std::uint32_t pos = head_ + count_;
  if (pos >= entries_cap_) pos -= entries_cap_;
  records()[pos] = {start, static_cast<std::uint32_t>(name.size()),
                    static_cast<std::uint32_t>(value.size())};
  bytes_used_ += n;
  size_ += esize;
  ++count_;
  if (indexed_) {
    std::uint32_t* h = hashes() + std::size_t{pos} * 2;
    h[0] = name_hash;
    h[1] = pair_hash;
    const std::uint32_t seq = head_seq_ + count_ - 1;
    index_insert(seq, false, name_hash, name, value);
    index_insert(seq, true, pair_hash, name, value);
  }
  return true;
}

// Linear probing. The name index keys entries by name and the pair index by name and value; a
// key's slot names its newest entry. Eviction is oldest first, so when an evicted entry is still
// the one its key's slot names, no entry with that key is left and the slot is freed.
inline void field_table::index_insert(std::uint32_t seq, bool pair, std::uint32_t hash,
                                      std::string_view name, std::string_view value) noexcept {
  slot* s = slots() + (pair ? slots_cap_ : 0);
  const std::uint32_t mask = slots_cap_ - 1;
  for (std::uint32_t i = hash >> 1 & mask;; i = (i + 1) & mask) {
    if (s[i].hash == 0) {
      s[i] = {hash, seq};
      return;
    }
    if (s[i].hash != hash) continue;
    const record& r = at_seq(s[i].seq);
    if (!equal(r.offset, r.name_len, name)) continue;
    if (pair) {
      std::uint32_t voff = r.offset + r.name_len;
      if (voff >= bytes_cap_) voff -= bytes_cap_;
      if (!equal(voff, r.value_len, value)) continue;
    }
    s[i].seq = seq;  // the same key: the newer entry
    return;
  }
}

inline void field_table::index_place(bool pair, std::uint32_t hash, std::uint32_t seq) noexcept {
  slot* s = slots() + (pair ? slots_cap_ : 0);
  const std::uint32_t mask = slots_cap_ - 1;
  std::uint32_t i = hash >> 1 & mask;
  while (s[i].hash != 0) i = (i + 1) & mask;
  s[i] = {hash, seq};
}

inline void field_table::index_remove(std::uint32_t seq, bool pair, std::uint32_t hash) noexcept {
  slot* s = slots() + (pair ? slots_cap_ : 0);
  const std::uint32_t mask = slots_cap_ - 1;
  std::uint32_t i = hash >> 1 & mask;
  for (;; i = (i + 1) & mask) {
    if (s[i].hash == 0) return;  // a newer entry with the same key took the slot
    if (s[i].hash == hash && s[i].seq == seq) break;
  }
  // Backward-shift deletion: move later entries of the cluster into the hole when their home
  // slot allows it.
  for (std::uint32_t j = i;;) {
    j = (j + 1) & mask;
    if (s[j].hash == 0) break;
    const std::uint32_t home = s[j].hash >> 1 & mask;
    if (((j - home) & mask) >= ((j - i) & mask)) {
      s[i] = s[j];
      i = j;
    }
  }
  s[i] = {0, 0};
}

std::int64_t field_table::find_pair(std::string_view name, std::string_view value,
                                    std::uint32_t pair_hash) const noexcept {
  if (count_ == 0) return -1;
  const slot* s = slots() + slots_cap_;
  const std::uint32_t mask = slots_cap_ - 1;
  for (std::uint32_t i = pair_hash >> 1 & mask; s[i].hash != 0; i = (i + 1) & mask) {
    if (s[i].hash != pair_hash) continue;
    const record& r = at_seq(s[i].seq);
    if (r.name_len != name.size() || r.value_len != value.size()) continue;
    std::uint32_t voff = r.offset + r.name_len;
    if (voff >= bytes_cap_) voff -= bytes_cap_;
    if (equal(r.offset, r.name_len, name) && equal(voff, r.value_len, value))
      return head_seq_ + count_ - 1 - s[i].seq;
  }
  return -1;
}

std::int64_t field_table::find_seq(std::uint32_t seq, std::string_view name,
                                   std::string_view value) const noexcept {
  const std::uint32_t age = seq - head_seq_;  // wraps for an evicted entry
  if (age >= count_) return -1;
  const record& r = at_seq(seq);
  if (r.name_len != name.size() || r.value_len != value.size()) return -1;
  std::uint32_t voff = r.offset + r.name_len;
  if (voff >= bytes_cap_) voff -= bytes_cap_;
  if (!equal(r.offset, r.name_len, name) || !equal(voff, r.value_len, value)) return -1;
  return count_ - 1 - age;
}

std::int64_t field_table::find_name(std::string_view name, std::uint32_t name_hash) const noexcept {
  if (count_ == 0) return -1;
  const slot* s = slots();
  const std::uint32_t mask = slots_cap_ - 1;
  for (std::uint32_t i = name_hash >> 1 & mask; s[i].hash != 0; i = (i + 1) & mask) {
    if (s[i].hash != name_hash) continue;
    const record& r = at_seq(s[i].seq);
    if (equal(r.offset, r.name_len, name)) return head_seq_ + count_ - 1 - s[i].seq;
  }
  return -1;
}

}  // namespace detail

}  // namespace portico::h2::hpack
