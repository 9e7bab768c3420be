// libFuzzer target: the HPACK decoder on arbitrary header blocks, and what it decoded back through
// the encoder and a fresh decoder.
//
// Input: one selector octet, then blocks, each a 2-octet big-endian length and its bytes (the
// last one cut to what is left). Selector bits 0-2: our advertised table size; bits 3-5: the
// table size the round-trip decoder advertises; bit 6: the round-trip encoder's own ceiling
// (4096 or 65536). A block length with its top bit set first lowers or raises our limit (bits
// 12-14 pick it) and keeps 12 bits of length.
//
// Checks: the table never exceeds our limit; an error sticks; a decoder that remembers Huffman
// literals decodes exactly as one that does not; every block decoded is encoded again, twice
// (the second time from what the encoder remembers of the first; never-indexed fields as
// sensitive) and decodes to the same fields, with the same table size on both sides of the
// round trip; Huffman decoding inverts encoding exactly.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "http2/hpack.hpp"

using namespace portico::h2::hpack;

namespace {

constexpr std::uint32_t kSizes[8] = {0, 32, 64, 100, 256, 1024, 4096, 65536};

struct Field {
  std::string name, value;
  bool never;
};

struct Collect {
  std::vector<Field> fields;
  const Decoder* dec;
  static void sink(void* ctx, std::string_view n, std::string_view v) {
    auto* c = static_cast<Collect*>(ctx);
    c->fields.push_back({std::string(n), std::string(v), c->dec->never_indexed()});
  }
};

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "hpack_fuzz: %s\n", what);
  std::abort();
}

void check_huffman(std::string_view in) {
  std::string dec;
  if (huffman_decode(in, dec)) {
    std::string enc;
    huffman_encode(dec, enc);
    if (enc != in) fail("huffman_encode(huffman_decode(x)) != x");
    if (huffman_length(dec) != in.size()) fail("huffman_length");
  }
  std::string enc, back;
  huffman_encode(in, enc);
  if (enc.size() != huffman_length(in)) fail("huffman_length of encoding");
  if (!huffman_decode(enc, back) || back != in) fail("huffman_decode(huffman_encode(x)) != x");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t sel = data[0];
  std::uint32_t limit = kSizes[sel & 7];
  Decoder dec(limit);
  Decoder mem(limit);
  mem.remember_literals(true);
  const std::uint32_t peer = kSizes[sel >> 3 & 7];
  Encoder enc((sel & 0x40) ? 65536 : 4096);
  Decoder back;
  back.set_max_table_size(peer);
  enc.set_peer_max_table_size(peer);

  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  check_huffman(rest);
  std::string out;
  for (int blocks = 0; blocks < 32 && rest.size() >= 2; ++blocks) {
    std::size_t len = static_cast<std::uint8_t>(rest[0]) << 8 | static_cast<std::uint8_t>(rest[1]);
    rest.remove_prefix(2);
    if (len & 0x8000) {
      limit = kSizes[len >> 12 & 7];
      dec.set_max_table_size(limit);
      mem.set_max_table_size(limit);
      len &= 0xfff;
    }
    const std::string_view block = rest.substr(0, len);
    rest.remove_prefix(block.size());

    Collect got{{}, &dec};
    const DecodeError e = dec.decode(block, &Collect::sink, &got, 16 * 1024);
    if (dec.table_size() > limit) fail("table larger than our limit");
    Collect same{{}, &mem};
    if (mem.decode(block, &Collect::sink, &same, 16 * 1024) != e)
      fail("remembering literals: another outcome");
    if (e == DecodeError::None) {
      if (same.fields.size() != got.fields.size()) fail("remembering literals: field count");
      for (std::size_t i = 0; i < got.fields.size(); ++i) {
        const Field &a = got.fields[i], &b = same.fields[i];
        if (a.name != b.name || a.value != b.value || a.never != b.never)
          fail("remembering literals: field differs");
      }
      if (mem.table_size() != dec.table_size()) fail("remembering literals: table size");
    }
    if (e != DecodeError::None) {
      if (dec.decode("", &Collect::sink, &got) != e) fail("the error did not stick");
      if (to_string(e).empty()) fail("empty error string");
      break;
    }
    for (int twice = 0; twice < 2; ++twice) {
      out.clear();
      enc.begin(out);
      for (const auto& f : got.fields) enc.add(out, f.name, f.value, f.never);
      Collect again{{}, &back};
      if (back.decode(out, &Collect::sink, &again, 16 * 1024) != DecodeError::None)
        fail("the round trip does not decode");
      if (again.fields.size() != got.fields.size()) fail("round trip: field count");
      for (std::size_t i = 0; i < got.fields.size(); ++i) {
        const Field &a = got.fields[i], &b = again.fields[i];
        if (a.name != b.name || a.value != b.value) fail("round trip: field differs");
        if (a.never && !b.never) fail("round trip: never-indexed field lost its flag");
      }
      if (enc.table_size() != back.table_size()) fail("round trip: tables out of sync");
    }
  }
  dec.trim();
  mem.trim();
  enc.trim();
  return 0;
}
