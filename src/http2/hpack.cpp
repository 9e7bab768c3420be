// HPACK (RFC 7541): the decoder and the encoder. The tables (static, Huffman, dynamic) are in
// hpack_tables.cpp.
#include "http2/hpack.hpp"

#include <algorithm>
#include <cstring>

namespace portico::h2::hpack {

namespace {
using uchar = unsigned char;
}  // namespace

std::string_view to_string(DecodeError e) noexcept {
  switch (e) {
    case DecodeError::None:
      return "no error";
    case DecodeError::Truncated:
      return "truncated header block";
    case DecodeError::BadInteger:
      return "invalid integer";
    case DecodeError::BadIndex:
      return "invalid index";
    case DecodeError::BadHuffman:
      return "invalid Huffman code";
    case DecodeError::BadSizeUpdate:
      return "invalid table size update";
    case DecodeError::LateSizeUpdate:
      return "table size update after a field";
    case DecodeError::TooLarge:
      return "field too large";
  }
  return "unknown error";
}

// ---- Decoder ----------------------------------------------------------------------------------

namespace {

// RFC 7541 §5.1 with an N-bit prefix. At most 5 continuation octets; values up to 2^32 - 1.
inline DecodeError read_int(const uchar*& p, const uchar* end, unsigned prefix_bits,
                            std::uint32_t& out) noexcept {
  const std::uint32_t max = (1u << prefix_bits) - 1;
  std::uint64_t v = *p++ & max;
  if (v < max) {
    out = static_cast<std::uint32_t>(v);
    return DecodeError::None;
  }
  for (unsigned shift = 0; shift <= 28; shift += 7) {
    if (p == end) return DecodeError::Truncated;
    const uchar b = *p++;
    v += std::uint64_t{b & 0x7fu} << shift;
    if (v > 0xffffffffu) return DecodeError::BadInteger;
    if (!(b & 0x80)) {
      out = static_cast<std::uint32_t>(v);
      return DecodeError::None;
    }
  }
  return DecodeError::BadInteger;
}

// A string literal's header (§5.2): where its octets are and whether they are Huffman-coded.
struct literal {
  const uchar* data = nullptr;
  std::uint32_t len = 0;
  bool huffman = false;
  std::size_t room() const noexcept { return huffman ? std::size_t{len} * 8 / 5 + 2 : 0; }
};

inline DecodeError read_literal(const uchar*& p, const uchar* end, std::size_t max_string,
                                literal& out) noexcept {
  if (p == end) return DecodeError::Truncated;
  out.huffman = (*p & 0x80) != 0;
  if (auto e = read_int(p, end, 7, out.len); e != DecodeError::None) return e;
  if (out.len > max_string) return DecodeError::TooLarge;
  if (out.len > static_cast<std::size_t>(end - p)) return DecodeError::Truncated;
  out.data = p;
  p += out.len;
  return DecodeError::None;
}

// Copies the pieces of a string to `buf`.
inline std::string_view copy(const std::string_view (&p)[2], char*& buf) noexcept {
  char* start = buf;
  if (!p[0].empty()) std::memcpy(buf, p[0].data(), p[0].size());
  if (!p[1].empty()) std::memcpy(buf + p[0].size(), p[1].data(), p[1].size());
  buf += p[0].size() + p[1].size();
  return std::string_view(start, p[0].size() + p[1].size());
}

// A string from the dynamic table: its view, or a copy at `buf` when it wraps.
inline std::string_view join(const std::string_view (&p)[2], char*& buf) noexcept {
  return p[1].empty() ? p[0] : copy(p, buf);
}

}  // namespace

// Decodings of recent short Huffman literals (remember_literals). A decoding is at most
// 48 * 8 / 5 = 76 bytes (5-bit codes are the shortest).
struct Decoder::literal_memo {
  // A slot per Huffman string of a block, by its rank there (the first 16): a server repeats
  // its fields in the same order, so the same rank brings the same octets, without the
  // collisions of slots chosen by a hash (there, two strings of one slot evicted each other in
  // every response; date and last-modified often did).
  static constexpr std::size_t kSlots = 16, kMaxIn = 48, kMaxOut = kMaxIn * 8 / 5;
  struct slot {
    std::uint8_t in_len = 0, out_len = 0;  // in_len 0: empty (an empty literal is not kept)
    uchar in[kMaxIn];
    char out[kMaxOut];
  };
  slot slots[kSlots];
};

Decoder::Decoder(std::uint32_t max_table_size)
    : table_(std::min(max_table_size, default_table_size), false), limit_(max_table_size) {}
Decoder::~Decoder() = default;
Decoder::Decoder(Decoder&&) noexcept = default;
Decoder& Decoder::operator=(Decoder&&) noexcept = default;

DecodeError Decoder::huffman(const uchar* in, std::size_t n, std::size_t max_string, char*& buf,
                             std::string_view& out, std::size_t rank) {
  literal_memo::slot* slot = nullptr;
  if (remember_ && rank < literal_memo::kSlots && n > 0 && n <= literal_memo::kMaxIn) {
    if (!memo_) memo_ = std::make_unique<literal_memo>();
    slot = &memo_->slots[rank];
    if (slot->in_len == n && std::memcmp(slot->in, in, n) == 0) {
      if (slot->out_len > max_string) return DecodeError::TooLarge;
      std::memcpy(buf, slot->out, slot->out_len);
      out = std::string_view(buf, slot->out_len);
      buf += slot->out_len;
      return DecodeError::None;
    }
  }
  char* end = detail::huffman_decode_to(in, n, buf);
  if (!end) return DecodeError::BadHuffman;
  const auto len = static_cast<std::size_t>(end - buf);
  if (len > max_string) return DecodeError::TooLarge;
  out = std::string_view(buf, len);
  buf = end;
  if (slot && len <= literal_memo::kMaxOut) {  // (always: 5-bit codes are the shortest)
    slot->in_len = static_cast<std::uint8_t>(n);
    slot->out_len = static_cast<std::uint8_t>(len);
    std::memcpy(slot->in, in, n);
    std::memcpy(slot->out, out.data(), len);
  }
  return DecodeError::None;
}

void Decoder::set_max_table_size(std::uint32_t n) {
  limit_ = n;
  if (n < table_.max_size()) {
    table_.set_max_size(n);
    expect_update_ = true;
  }
}

std::size_t Decoder::table_size() const noexcept { return table_.size(); }

std::size_t Decoder::memory() const noexcept {
  return table_.memory() + scratch_cap_ + (memo_ ? sizeof(literal_memo) : 0);
}

void Decoder::trim() noexcept {
  memo_.reset();
  scratch_.reset();
  scratch_cap_ = 0;
  table_.trim();
}

inline char* Decoder::scratch(std::size_t n) {
  if (n > scratch_cap_) {
    const std::size_t cap = std::max({n, scratch_cap_ * 2, std::size_t{256}});
    scratch_.reset(new char[cap]);
    scratch_cap_ = cap;
  }
  return scratch_.get();
}

DecodeError Decoder::decode(std::string_view block, Sink sink, void* ctx, std::size_t max_string) {
  if (error_ == DecodeError::None) error_ = decode_block(block, sink, ctx, max_string);
  return error_;
}

DecodeError Decoder::decode_block(std::string_view block, Sink sink, void* ctx,
                                  std::size_t max_string) {
  const auto* p = reinterpret_cast<const uchar*>(block.data());
  const uchar* const end = p + block.size();
  bool field_seen = false;
  std::size_t huffman_rank = 0;  // Huffman strings of the block so far
  // The string of a literal: its octets, or their Huffman decoding written at `buf`.
  const auto string_of = [&](const literal& l, char*& buf, std::string_view& out) {
    if (!l.huffman) {
      out = std::string_view(reinterpret_cast<const char*>(l.data), l.len);
      return DecodeError::None;
    }
    return huffman(l.data, l.len, max_string, buf, out, huffman_rank++);
  };
  while (p < end) {
    const uchar b = *p;
    if ((b & 0xe0) == 0x20) {  // §6.3 dynamic table size update
      if (field_seen) return DecodeError::LateSizeUpdate;
      std::uint32_t n;
      if (auto e = read_int(p, end, 5, n); e != DecodeError::None) return e;
      if (n > limit_) return DecodeError::BadSizeUpdate;
      table_.set_max_size(n);
      expect_update_ = false;
      continue;
    }
    if (expect_update_) return DecodeError::BadSizeUpdate;
    field_seen = true;
    std::uint32_t index;
    if (b & 0x80) {  // §6.1 indexed field
      if (auto e = read_int(p, end, 7, index); e != DecodeError::None) return e;
      if (index == 0) return DecodeError::BadIndex;
      if (index <= detail::static_count) {
        sink(ctx, detail::static_table[index].name, detail::static_table[index].value);
        continue;
      }
      index -= detail::static_count + 1;
      if (index >= table_.count()) return DecodeError::BadIndex;
      const auto v = table_.get(index);
      if (!v.split()) {
        sink(ctx, v.name[0], v.value[0]);
        continue;
      }
      char* buf =
          scratch(v.name[0].size() + v.name[1].size() + v.value[0].size() + v.value[1].size());
      const std::string_view name = join(v.name, buf);
      sink(ctx, name, join(v.value, buf));
      continue;
    }
    // §6.2 literal: with incremental indexing (01), without indexing (0000), never indexed (0001)
    const bool indexing = (b & 0xc0) == 0x40;
    if (auto e = read_int(p, end, indexing ? 6 : 4, index); e != DecodeError::None) return e;
    std::string_view name;
    detail::field_table::view dyn;  // a name from the dynamic table
    bool dyn_name = false;
    literal ln, lv;
    const bool new_name = index == 0;
    if (new_name) {
      if (auto e = read_literal(p, end, max_string, ln); e != DecodeError::None) return e;
    } else if (index <= detail::static_count) {
      name = detail::static_table[index].name;
    } else {
      index -= detail::static_count + 1;
      if (index >= table_.count()) return DecodeError::BadIndex;
      dyn = table_.get(index);
      dyn_name = true;
    }
    if (auto e = read_literal(p, end, max_string, lv); e != DecodeError::None) return e;
    // One reservation for the field: Huffman output, and a name from the dynamic table when it
    // wraps or when adding the entry may evict it.
    const bool copy_name = dyn_name && (indexing || !dyn.name[1].empty());
    char* buf =
        scratch(ln.room() + lv.room() + (copy_name ? dyn.name[0].size() + dyn.name[1].size() : 0));
    if (new_name) {
      if (auto e = string_of(ln, buf, name); e != DecodeError::None) return e;
    } else if (copy_name) {
      name = copy(dyn.name, buf);
    } else if (dyn_name) {
      name = dyn.name[0];
    }
    std::string_view value;
    if (auto e = string_of(lv, buf, value); e != DecodeError::None) return e;
    if (indexing) table_.add(name, value);
    never_ = (b & 0xf0) == 0x10;
    sink(ctx, name, value);
    never_ = false;
  }
  return expect_update_ ? DecodeError::BadSizeUpdate : DecodeError::None;
}

// ---- Encoder ----------------------------------------------------------------------------------

namespace {

// §5.1: appends `v` with an N-bit prefix after the flag bits `first`.
inline char* put_int(char* p, uchar first, unsigned prefix_bits, std::size_t v) noexcept {
  const std::size_t max = (std::size_t{1} << prefix_bits) - 1;
  if (v < max) {
    *p++ = static_cast<char>(first | v);
    return p;
  }
  *p++ = static_cast<char>(first | max);
  v -= max;
  while (v >= 128) {
    *p++ = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}

void put_int(std::string& out, uchar first, unsigned prefix_bits, std::size_t v) {
  if (v < (std::size_t{1} << prefix_bits) - 1) {
    out.push_back(static_cast<char>(first | v));
    return;
  }
  char buf[16];
  out.append(buf, static_cast<std::size_t>(put_int(buf, first, prefix_bits, v) - buf));
}

// §5.2: Huffman-coded when shorter.
void put_string(std::string& out, std::string_view s) {
  const std::size_t h = huffman_length(s);
  char head[16];
  if (h < s.size()) {
    const auto n = static_cast<std::size_t>(put_int(head, 0x80, 7, h) - head);
    const std::size_t old = out.size();
    out.resize(old + n + h);
    std::memcpy(out.data() + old, head, n);
    detail::huffman_encode_to(s, out.data() + old + n);
  } else {
    out.append(head, static_cast<std::size_t>(put_int(head, 0, 7, s.size()) - head));
    out.append(s);
  }
}

// Literal representations (§6.2): first octet flags and prefix width.
constexpr uchar kIncremental = 0x40, kWithout = 0x00, kNever = 0x10;

using detail::static_authorization;
using detail::static_cookie;
using detail::static_proxy_authorization;

}  // namespace

Encoder::Encoder(std::uint32_t max_table_size)
    : table_(std::min(max_table_size, default_table_size), true), own_max_(max_table_size) {
  if (table_.max_size() != announced_) {
    pending_ = true;
    pending_min_ = table_.max_size();
  }
}

void Encoder::set_peer_max_table_size(std::uint32_t n) {
  peer_max_ = n;
  const std::uint32_t v = std::min(own_max_, n);
  pending_min_ = pending_ ? std::min(pending_min_, v) : v;
  pending_ = true;
}

void Encoder::begin(std::string& out) {
  pos_ = 0;
  if (!pending_) return;
  pending_ = false;
  const std::uint32_t final_size = std::min(own_max_, peer_max_);
  if (pending_min_ < final_size) {
    put_int(out, 0x20, 5, pending_min_);
    table_.set_max_size(pending_min_);
  }
  if (pending_min_ < final_size || final_size != announced_) {
    put_int(out, 0x20, 5, final_size);
    announced_ = final_size;
  }
  table_.set_max_size(final_size);
}

void Encoder::add(std::string& out, std::string_view name, std::string_view value, bool sensitive) {
  // The entry this position was sent as last time, when it is the same field again. (What the
  // memory names was not a never-indexed field: that depends on the name and value only.)
  const std::uint32_t pos = pos_++;
  const bool memo = pos < kMemo && !sensitive;
  const auto bit = static_cast<std::uint16_t>(memo ? 1u << pos : 0);
  if (memo) {
    if (memo_static_ & bit) {
      if (detail::static_equal(memo_[pos], name, value)) {
        put_int(out, 0x80, 7, memo_[pos]);
        return;
      }
    } else if (memo_dyn_ & bit) {
      if (const auto d = table_.find_seq(memo_[pos], name, value); d >= 0) {
        put_int(out, 0x80, 7, detail::static_count + 1 + static_cast<std::size_t>(d));
        return;
      }
    }
    memo_static_ &= static_cast<std::uint16_t>(~bit);
    memo_dyn_ &= static_cast<std::uint16_t>(~bit);
  }
  const auto remember = [&](std::uint16_t& kind, std::uint32_t v) {
    if (!memo) return;
    memo_[pos] = v;
    kind |= bit;
  };
  const detail::static_match st = detail::static_find(name, value);
  // RFC 7541 §7.1.3: credentials and short cookies (guessable) are never indexed.
  const bool never = sensitive || st.name == static_authorization ||
                     st.name == static_proxy_authorization ||
                     (st.name == static_cookie && value.size() < 20);
  std::uint32_t name_hash = 0, pair_hash = 0;  // computed when needed
  if (!never) {
    if (st.exact != 0) {
      put_int(out, 0x80, 7, st.exact);
      remember(memo_static_, st.exact);
      return;
    }
    pair_hash = detail::hash_pair(name, value);
    if (const auto d = table_.find_pair(name, value, pair_hash); d >= 0) {
      put_int(out, 0x80, 7, detail::static_count + 1 + static_cast<std::size_t>(d));
      remember(memo_dyn_, table_.seq_of(static_cast<std::uint32_t>(d)));
      return;
    }
  }
  const std::size_t esize = name.size() + value.size() + entry_overhead;
  const bool indexing = !never && esize * 4 <= std::size_t{table_.max_size()} * 3;
  const bool dyn_name = st.name == 0 && table_.count() > 0;
  if (indexing || dyn_name) name_hash = detail::hash_name(name);
  std::size_t name_index = st.name;
  if (dyn_name) {
    if (const auto d = table_.find_name(name, name_hash); d >= 0)
      name_index = detail::static_count + 1 + static_cast<std::size_t>(d);
  }
  if (indexing)
    put_int(out, kIncremental, 6, name_index);
  else
    put_int(out, never ? kNever : kWithout, 4, name_index);
  if (name_index == 0) put_string(out, name);
  put_string(out, value);
  if (indexing && table_.add(name, value, name_hash, pair_hash))
    remember(memo_dyn_, table_.seq_of(0));
}

std::size_t Encoder::table_size() const noexcept { return table_.size(); }

std::size_t Encoder::memory() const noexcept { return table_.memory(); }

void Encoder::trim() noexcept { table_.trim(); }

}  // namespace portico::h2::hpack
