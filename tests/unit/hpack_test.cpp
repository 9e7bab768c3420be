// HPACK (RFC 7541): the Appendix C examples, every decoder error, the Huffman code, the encoder's
// policy and size updates, the dynamic table against a model, and both directions against
// nghttp2's HPACK on random header lists.
#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http2/hpack.hpp"
#include "nghttp2_inflate.hpp"

using namespace portico::h2::hpack;

namespace {

struct Field {
  std::string name, value;
  bool never = false;  // sensitive when encoding; never-indexed when decoded
  bool operator==(const Field& o) const { return name == o.name && value == o.value; }
};
using Fields = std::vector<Field>;

std::ostream& operator<<(std::ostream& os, const Field& f) {
  return os << f.name << ": " << f.value;
}

std::string unhex(std::string_view h) {
  std::string out;
  int hi = -1;
  for (char c : h) {
    int v;
    if (c >= '0' && c <= '9')
      v = c - '0';
    else if (c >= 'a' && c <= 'f')
      v = c - 'a' + 10;
    else
      continue;
    if (hi < 0) {
      hi = v;
    } else {
      out.push_back(static_cast<char>(hi << 4 | v));
      hi = -1;
    }
  }
  return out;
}

struct Collect {
  Fields fields;
  Decoder* dec = nullptr;
  static void sink(void* ctx, std::string_view n, std::string_view v) {
    auto* c = static_cast<Collect*>(ctx);
    c->fields.push_back({std::string(n), std::string(v), c->dec && c->dec->never_indexed()});
  }
};

DecodeError decode(Decoder& d, std::string_view block, Fields& out,
                   std::size_t max_string = 64 * 1024) {
  Collect c;
  c.dec = &d;
  DecodeError e = d.decode(block, &Collect::sink, &c, max_string);
  out = std::move(c.fields);
  return e;
}

Fields decode_ok(Decoder& d, std::string_view block) {
  Fields f;
  EXPECT_EQ(decode(d, block, f), DecodeError::None);
  return f;
}

std::string encode(Encoder& e, const Fields& fields) {
  std::string out;
  e.begin(out);
  for (const auto& f : fields) e.add(out, f.name, f.value, f.never);
  return out;
}

// The decoder's dynamic table, newest first, read back with indexed fields (which change nothing).
Fields table_of(Decoder& d, std::size_t n) {
  std::string block;
  for (std::size_t i = 0; i < n; ++i) block.push_back(static_cast<char>(0x80 | (62 + i)));
  return decode_ok(d, block);
}

// ---- RFC 7541 Appendix C ----------------------------------------------------------------------

TEST(HpackRfc, C2_1_LiteralWithIndexing) {
  Decoder d;
  EXPECT_EQ(decode_ok(d, unhex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")),
            (Fields{{"custom-key", "custom-header"}}));
  EXPECT_EQ(d.table_size(), 55u);
  EXPECT_EQ(table_of(d, 1), (Fields{{"custom-key", "custom-header"}}));
}

TEST(HpackRfc, C2_2_LiteralWithoutIndexing) {
  Decoder d;
  EXPECT_EQ(decode_ok(d, unhex("040c 2f73 616d 706c 652f 7061 7468")),
            (Fields{{":path", "/sample/path"}}));
  EXPECT_EQ(d.table_size(), 0u);
}

TEST(HpackRfc, C2_3_LiteralNeverIndexed) {
  Decoder d;
  Fields f;
  ASSERT_EQ(decode(d, unhex("1008 7061 7373 776f 7264 0673 6563 7265 74"), f), DecodeError::None);
  ASSERT_EQ(f, (Fields{{"password", "secret"}}));
  EXPECT_TRUE(f[0].never);
  EXPECT_EQ(d.table_size(), 0u);
  // Our encoder writes it as never indexed too (Huffman-coded, which is shorter).
  Encoder e;
  std::string out = encode(e, {{"password", "secret", true}});
  EXPECT_EQ(static_cast<unsigned char>(out[0]), 0x10);
  Decoder back;
  EXPECT_EQ(decode_ok(back, out), (Fields{{"password", "secret"}}));
}

TEST(HpackRfc, C2_4_Indexed) {
  Decoder d;
  EXPECT_EQ(decode_ok(d, unhex("82")), (Fields{{":method", "GET"}}));
  EXPECT_EQ(d.table_size(), 0u);
  Encoder e;
  EXPECT_EQ(encode(e, {{":method", "GET"}}), unhex("82"));
}

const Fields kReq1 = {
    {":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "www.example.com"}};
const Fields kReq2 = {{":method", "GET"},
                      {":scheme", "http"},
                      {":path", "/"},
                      {":authority", "www.example.com"},
                      {"cache-control", "no-cache"}};
const Fields kReq3 = {{":method", "GET"},
                      {":scheme", "https"},
                      {":path", "/index.html"},
                      {":authority", "www.example.com"},
                      {"custom-key", "custom-value"}};
const Fields kTable3 = {{"custom-key", "custom-value"},
                        {"cache-control", "no-cache"},
                        {":authority", "www.example.com"}};

TEST(HpackRfc, C3_RequestsWithoutHuffman) {
  Decoder d;
  EXPECT_EQ(decode_ok(d, unhex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d")), kReq1);
  EXPECT_EQ(d.table_size(), 57u);
  EXPECT_EQ(decode_ok(d, unhex("8286 84be 5808 6e6f 2d63 6163 6865")), kReq2);
  EXPECT_EQ(d.table_size(), 110u);
  EXPECT_EQ(decode_ok(d, unhex("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661"
                               "6c75 65")),
            kReq3);
  EXPECT_EQ(d.table_size(), 164u);
  EXPECT_EQ(table_of(d, 3), kTable3);
  // Our encoder Huffman-codes these literals (shorter), so the bytes are C.4's: round trip.
  Encoder e;
  Decoder back;
  const std::size_t sizes[] = {57, 110, 164};
  const Fields* lists[] = {&kReq1, &kReq2, &kReq3};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(decode_ok(back, encode(e, *lists[i])), *lists[i]);
    EXPECT_EQ(e.table_size(), sizes[i]);
    EXPECT_EQ(back.table_size(), sizes[i]);
  }
}

TEST(HpackRfc, C4_RequestsWithHuffman) {
  const std::string blocks[] = {
      unhex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
      unhex("8286 84be 5886 a8eb 1064 9cbf"),
      unhex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
  };
  const Fields* lists[] = {&kReq1, &kReq2, &kReq3};
  const std::size_t sizes[] = {57, 110, 164};
  Decoder d;
  Encoder e;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(decode_ok(d, blocks[i]), *lists[i]) << i;
    EXPECT_EQ(d.table_size(), sizes[i]);
    EXPECT_EQ(encode(e, *lists[i]), blocks[i]) << i;  // the encoder's policy gives these bytes
    EXPECT_EQ(e.table_size(), sizes[i]);
  }
  EXPECT_EQ(table_of(d, 3), kTable3);
}

const Fields kResp1 = {{":status", "302"},
                       {"cache-control", "private"},
                       {"date", "Mon, 21 Oct 2013 20:13:21 GMT"},
                       {"location", "https://www.example.com"}};
const Fields kResp2 = {{":status", "307"},
                       {"cache-control", "private"},
                       {"date", "Mon, 21 Oct 2013 20:13:21 GMT"},
                       {"location", "https://www.example.com"}};
const Fields kResp3 = {{":status", "200"},
                       {"cache-control", "private"},
                       {"date", "Mon, 21 Oct 2013 20:13:22 GMT"},
                       {"location", "https://www.example.com"},
                       {"content-encoding", "gzip"},
                       {"set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"}};
const Fields kRespTable1 = {{"location", "https://www.example.com"},
                            {"date", "Mon, 21 Oct 2013 20:13:21 GMT"},
                            {"cache-control", "private"},
                            {":status", "302"}};
const Fields kRespTable2 = {{":status", "307"},
                            {"location", "https://www.example.com"},
                            {"date", "Mon, 21 Oct 2013 20:13:21 GMT"},
                            {"cache-control", "private"}};
const Fields kRespTable3 = {
    {"set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"},
    {"content-encoding", "gzip"},
    {"date", "Mon, 21 Oct 2013 20:13:22 GMT"}};

TEST(HpackRfc, C5_ResponsesWithoutHuffman) {
  const std::string blocks[] = {
      unhex("4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133"
            "2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70"
            "6c65 2e63 6f6d"),
      unhex("4803 3330 37c1 c0bf"),
      unhex("88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d"
            "54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049"
            "5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e"
            "3d31"),
  };
  const Fields* lists[] = {&kResp1, &kResp2, &kResp3};
  const Fields* tables[] = {&kRespTable1, &kRespTable2, &kRespTable3};
  const std::size_t sizes[] = {222, 222, 215};
  Decoder d(256);
  Encoder e(256);
  Decoder back(256);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(decode_ok(d, blocks[i]), *lists[i]) << i;
    EXPECT_EQ(d.table_size(), sizes[i]);
    EXPECT_EQ(table_of(d, tables[i]->size()), *tables[i]) << i;
    EXPECT_EQ(decode_ok(back, encode(e, *lists[i])), *lists[i]) << i;
    EXPECT_EQ(e.table_size(), sizes[i]);
    EXPECT_EQ(back.table_size(), sizes[i]);
  }
}

TEST(HpackRfc, C6_ResponsesWithHuffman) {
  const std::string blocks[] = {
      unhex("4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6"
            "2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3"),
      unhex("4883 640e ffc1 c0bf"),
      unhex("88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab"
            "77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f"
            "9587 3160 65c0 03ed 4ee5 b106 3d50 07"),
  };
  const Fields* lists[] = {&kResp1, &kResp2, &kResp3};
  const Fields* tables[] = {&kRespTable1, &kRespTable2, &kRespTable3};
  const std::size_t sizes[] = {222, 222, 215};
  Decoder d(256);
  Encoder e(256);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(decode_ok(d, blocks[i]), *lists[i]) << i;
    EXPECT_EQ(d.table_size(), sizes[i]);
    EXPECT_EQ(table_of(d, tables[i]->size()), *tables[i]) << i;
    // The peer's decoder starts at 4096, so the first block announces 256 (3f e1 01) first.
    // "307" is 3 octets in Huffman as in raw: not shorter, so C.6.2 comes out as C.5.2.
    std::string expected = i == 0 ? unhex("3fe101") + blocks[0] : blocks[i];
    if (i == 1) expected = unhex("4803 3330 37c1 c0bf");
    EXPECT_EQ(encode(e, *lists[i]), expected) << i;
    EXPECT_EQ(e.table_size(), sizes[i]);
  }
}

// ---- Decoder errors ---------------------------------------------------------------------------

DecodeError decode_err(std::string_view hex, std::uint32_t table = 4096,
                       std::size_t max_string = 64 * 1024) {
  Decoder d(table);
  Fields f;
  return decode(d, unhex(hex), f, max_string);
}

TEST(HpackDecoder, IndexZeroIsAnError) {
  EXPECT_EQ(decode_err("80"), DecodeError::BadIndex);
  EXPECT_EQ(to_string(DecodeError::BadIndex), "invalid index");
}

TEST(HpackDecoder, IndexPastTheTablesIsAnError) {
  EXPECT_EQ(decode_err("bd"), DecodeError::None);      // 61: the last static entry
  EXPECT_EQ(decode_err("be"), DecodeError::BadIndex);  // 62 with an empty dynamic table
  EXPECT_EQ(decode_err("c6"), DecodeError::BadIndex);  // 70
  // One dynamic entry: 62 is valid, 63 is not; also as the name of a literal.
  EXPECT_EQ(decode_err("4001 6101 62 be"), DecodeError::None);
  EXPECT_EQ(decode_err("4001 6101 62 bf"), DecodeError::BadIndex);
  EXPECT_EQ(decode_err("4001 6101 62 7e01 63"), DecodeError::None);
  EXPECT_EQ(decode_err("4001 6101 62 7f00 0163"), DecodeError::BadIndex);  // name index 63
  EXPECT_EQ(decode_err("0f2f 0163"), DecodeError::BadIndex);               // without indexing, 62
  EXPECT_EQ(decode_err("1f2f 0163"), DecodeError::BadIndex);               // never indexed, 62
}

TEST(HpackDecoder, IntegerLimits) {
  // 2^32 - 1 is a valid integer (then an invalid index); 2^32 is not.
  EXPECT_EQ(decode_err("ff 80ff ffff 0f"), DecodeError::BadIndex);
  EXPECT_EQ(decode_err("ff 81ff ffff 0f"), DecodeError::BadInteger);
  EXPECT_EQ(decode_err("ff ffff ffff 7f"), DecodeError::BadInteger);
  // Five continuation octets are accepted (zero padding), a sixth is not.
  EXPECT_EQ(decode_err("ff 8180 8080 00"), DecodeError::BadIndex);
  EXPECT_EQ(decode_err("ff 8180 8080 8000"), DecodeError::BadInteger);
  // A string length past 32 bits.
  EXPECT_EQ(decode_err("047f ffff ffff 7f"), DecodeError::BadInteger);
  // A size update past 32 bits.
  EXPECT_EQ(decode_err("3f ffff ffff 7f"), DecodeError::BadInteger);
}

TEST(HpackDecoder, Truncated) {
  EXPECT_EQ(decode_err("ff"), DecodeError::Truncated);         // integer cut
  EXPECT_EQ(decode_err("ff 80"), DecodeError::Truncated);      // in its continuation
  EXPECT_EQ(decode_err("41"), DecodeError::Truncated);         // no value
  EXPECT_EQ(decode_err("400a 6162"), DecodeError::Truncated);  // name length past the end
  EXPECT_EQ(decode_err("4001 61"), DecodeError::Truncated);    // no value
  EXPECT_EQ(decode_err("4001 6103 6263"), DecodeError::Truncated);
  EXPECT_EQ(decode_err("4001 6102 6263"), DecodeError::None);  // exactly at the end
  EXPECT_EQ(decode_err("048a 00"), DecodeError::Truncated);    // Huffman string cut
}

TEST(HpackDecoder, BadHuffman) {
  // "0" is 00000 then 3 bits of padding: 111 is right, 110 is not all ones.
  EXPECT_EQ(decode_err("0481 07"), DecodeError::None);
  EXPECT_EQ(decode_err("0481 06"), DecodeError::BadHuffman);
  // EOS (30 ones) inside a string.
  EXPECT_EQ(decode_err("0484 ffff ffff"), DecodeError::BadHuffman);
  EXPECT_EQ(decode_err("0485 07ff ffff fc"), DecodeError::BadHuffman);  // "0", EOS, 2 bits
  // "no-cache" then a whole octet of ones: padding over 7 bits.
  EXPECT_EQ(decode_err("5886 a8eb 1064 9cbf"), DecodeError::None);
  EXPECT_EQ(decode_err("5887 a8eb 1064 9cbf ff"), DecodeError::BadHuffman);
  // The same in a name.
  EXPECT_EQ(decode_err("4081 0601 61"), DecodeError::BadHuffman);
}

TEST(HpackDecoder, SizeUpdateAboveTheLimit) {
  EXPECT_EQ(decode_err("3fe1 1f"), DecodeError::None);  // 4096
  EXPECT_EQ(decode_err("3fe2 1f"), DecodeError::BadSizeUpdate);
  EXPECT_EQ(decode_err("3fe1 01", 256), DecodeError::None);  // 256
  EXPECT_EQ(decode_err("3fe2 01", 256), DecodeError::BadSizeUpdate);
  EXPECT_EQ(decode_err("20 3fe1 1f 82"), DecodeError::None);  // smallest, then final
}

TEST(HpackDecoder, SizeUpdateAfterAFieldIsLate) {
  EXPECT_EQ(decode_err("82 20"), DecodeError::LateSizeUpdate);
  EXPECT_EQ(decode_err("20 82"), DecodeError::None);
  Decoder d;
  Fields f;
  EXPECT_EQ(decode(d, unhex("82"), f), DecodeError::None);
  EXPECT_EQ(decode(d, unhex("20 82"), f), DecodeError::None);  // a new block may start with one
}

TEST(HpackDecoder, SizeUpdateDueAfterOurLimitShrank) {
  Decoder d;
  Fields f;
  ASSERT_EQ(decode(d, unhex("4001 6101 62"), f), DecodeError::None);
  d.set_max_table_size(4096);  // unchanged: nothing due
  EXPECT_EQ(decode(d, unhex("be"), f), DecodeError::None);
  d.set_max_table_size(1000);
  EXPECT_EQ(d.table_size(), 34u);
  EXPECT_EQ(decode(d, unhex("3fc9 07 be"), f), DecodeError::None);  // 1000, then the entry
  EXPECT_EQ(f, (Fields{{"a", "b"}}));
  d.set_max_table_size(10);  // evicts at once
  EXPECT_EQ(d.table_size(), 0u);
  EXPECT_EQ(decode(d, unhex("82"), f), DecodeError::BadSizeUpdate);

  Decoder e;
  e.set_max_table_size(100);
  EXPECT_EQ(decode(e, "", f), DecodeError::BadSizeUpdate);  // an empty block does not do
  Decoder g;
  g.set_max_table_size(100);
  EXPECT_EQ(decode(g, unhex("3f 81 01"), f), DecodeError::BadSizeUpdate);  // 160 > 100
  Decoder h;
  h.set_max_table_size(8192);  // raised: nothing due, updates up to 8192 accepted
  EXPECT_EQ(decode(h, unhex("82"), f), DecodeError::None);
  EXPECT_EQ(decode(h, unhex("3fe1 3f"), f), DecodeError::None);  // 8192
}

TEST(HpackDecoder, LargerLimitIsUsedOnlyOnceAnnounced) {
  // Advertising 8192 lets the peer announce up to 8192; until it does, the table is 4096.
  Decoder d(8192);
  Fields f;
  const std::string entry = unhex("4001 617f e906") + std::string(1000, 'v');  // 1033 bytes
  for (int i = 0; i < 5; ++i) ASSERT_EQ(decode(d, entry, f), DecodeError::None);
  EXPECT_EQ(d.table_size(), 3u * 1033);
  ASSERT_EQ(decode(d, unhex("3fe1 3f") + entry + entry, f), DecodeError::None);  // 8192
  EXPECT_EQ(d.table_size(), 5u * 1033);
  EXPECT_EQ(decode(d, unhex("3fe2 3f"), f), DecodeError::BadSizeUpdate);  // 8193
}

TEST(HpackDecoder, TooLarge) {
  EXPECT_EQ(decode_err("400a 6162 6364 6566 6768 696a 00", 4096, 10), DecodeError::None);
  EXPECT_EQ(decode_err("400b 6162 6364 6566 6768 696a 6b00", 4096, 10), DecodeError::TooLarge);
  EXPECT_EQ(decode_err("4001 610b 6162 6364 6566 6768 696a 6b", 4096, 10), DecodeError::TooLarge);
  // Huffman: 6 octets on the wire, "no-cache" (8) once decoded.
  EXPECT_EQ(decode_err("5886 a8eb 1064 9cbf", 4096, 8), DecodeError::None);
  EXPECT_EQ(decode_err("5886 a8eb 1064 9cbf", 4096, 7), DecodeError::TooLarge);
  // A declared length over the limit fails before the end of the block is looked at.
  EXPECT_EQ(decode_err("4001 617f ffff ffff 07", 4096, 1000), DecodeError::TooLarge);
}

TEST(HpackDecoder, UnusableAfterAnError) {
  Decoder d;
  Fields f;
  EXPECT_EQ(decode(d, unhex("80"), f), DecodeError::BadIndex);
  EXPECT_EQ(decode(d, unhex("82"), f), DecodeError::BadIndex);
}

TEST(HpackDecoder, EntryLargerThanTheTableEmptiesIt) {
  Decoder d(100);
  Fields f;
  ASSERT_EQ(decode(d, unhex("4001 6101 62"), f), DecodeError::None);  // 34
  ASSERT_EQ(decode(d, unhex("4001 6301 64"), f), DecodeError::None);  // 68
  EXPECT_EQ(d.table_size(), 68u);
  // 1 + 68 + 32 = 101 > 100: the table is emptied, the field still decoded.
  std::string big = unhex("4001 6544") + std::string(68, 'x');
  ASSERT_EQ(decode(d, big, f), DecodeError::None);
  EXPECT_EQ(f, (Fields{{"e", std::string(68, 'x')}}));
  EXPECT_EQ(d.table_size(), 0u);
  EXPECT_EQ(decode(d, unhex("be"), f), DecodeError::BadIndex);
  // Exactly the table size fits.
  Decoder e(100);
  ASSERT_EQ(decode(e, unhex("4001 6543") + std::string(67, 'x'), f), DecodeError::None);
  EXPECT_EQ(e.table_size(), 100u);
}

TEST(HpackDecoder, EvictionKeepsTheNameOfTheEvictedEntry) {
  // Table of 60: "a: b" (34) is evicted to add "a: c", whose name refers to it (§4.4).
  Decoder d(60);
  Fields f;
  ASSERT_EQ(decode(d, unhex("4001 6101 62"), f), DecodeError::None);
  ASSERT_EQ(decode(d, unhex("7e01 63"), f), DecodeError::None);
  EXPECT_EQ(f, (Fields{{"a", "c"}}));
  EXPECT_EQ(d.table_size(), 34u);
  EXPECT_EQ(table_of(d, 1), (Fields{{"a", "c"}}));
}

TEST(HpackDecoder, NeverIndexedIsReported) {
  Decoder d;
  Fields f;
  ASSERT_EQ(decode(d, unhex("1001 6101 62 0001 6101 62 4001 6101 62 be"), f), DecodeError::None);
  ASSERT_EQ(f.size(), 4u);
  EXPECT_TRUE(f[0].never);
  EXPECT_FALSE(f[1].never);
  EXPECT_FALSE(f[2].never);
  EXPECT_FALSE(f[3].never);
}

TEST(HpackDecoder, EmptyNamesAndValues) {
  Decoder d;
  EXPECT_EQ(decode_ok(d, unhex("4000 00 be 0080 80")), (Fields{{"", ""}, {"", ""}, {"", ""}}));
  EXPECT_EQ(d.table_size(), 32u);
}

TEST(HpackDecoder, ErrorStrings) {
  for (int e = 0; e <= static_cast<int>(DecodeError::TooLarge); ++e)
    EXPECT_FALSE(to_string(static_cast<DecodeError>(e)).empty()) << e;
  EXPECT_EQ(to_string(DecodeError::LateSizeUpdate), "table size update after a field");
}

// ---- Huffman ----------------------------------------------------------------------------------

TEST(HpackHuffman, RfcStrings) {
  const std::pair<const char*, const char*> cases[] = {
      {"www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"},
      {"no-cache", "a8eb 1064 9cbf"},
      {"custom-key", "25a8 49e9 5ba9 7d7f"},
      {"custom-value", "25a8 49e9 5bb8 e8b4 bf"},
      {"302", "6402"},
      {"307", "640e ff"},
      {"private", "aec3 771a 4b"},
      {"Mon, 21 Oct 2013 20:13:21 GMT", "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff"},
      {"Mon, 21 Oct 2013 20:13:22 GMT", "d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff"},
      {"https://www.example.com", "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3"},
      {"gzip", "9bd9 ab"},
      {"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
       "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0"
       "03ed 4ee5 b106 3d50 07"},
  };
  for (const auto& [plain, hex] : cases) {
    const std::string code = unhex(hex);
    EXPECT_EQ(huffman_length(plain), code.size()) << plain;
    std::string enc = "x";
    huffman_encode(plain, enc);
    EXPECT_EQ(enc, "x" + code) << plain;
    std::string dec = "y";
    EXPECT_TRUE(huffman_decode(code, dec)) << plain;
    EXPECT_EQ(dec, std::string("y") + plain);
  }
}

TEST(HpackHuffman, EveryByteRoundTrips) {
  std::string all;
  for (int c = 0; c < 256; ++c) {
    const std::string one(1, static_cast<char>(c));
    std::string enc, dec;
    huffman_encode(one, enc);
    ASSERT_EQ(enc.size(), huffman_length(one));
    ASSERT_TRUE(huffman_decode(enc, dec)) << c;
    ASSERT_EQ(dec, one) << c;
    all += one;
  }
  for (int k = 0; k < 3; ++k) all += all;  // 2 KiB, every code at every bit offset
  std::string enc, dec;
  huffman_encode(all, enc);
  ASSERT_TRUE(huffman_decode(enc, dec));
  EXPECT_EQ(dec, all);
  // Every prefix of a string keeps round-tripping (the tail is decoded apart from the bulk).
  for (std::size_t n = 0; n < 300; ++n) {
    const std::string s = all.substr(all.size() - n);
    std::string e, d;
    huffman_encode(s, e);
    ASSERT_TRUE(huffman_decode(e, d)) << n;
    ASSERT_EQ(d, s) << n;
  }
}

TEST(HpackHuffman, InvalidInput) {
  std::string out = "keep";
  EXPECT_FALSE(huffman_decode(unhex("ffff ffff"), out));  // EOS
  EXPECT_EQ(out, "keep");
  EXPECT_FALSE(huffman_decode(unhex("ff"), out));  // 8 bits of padding
  EXPECT_FALSE(huffman_decode(unhex("06"), out));  // padding 110
  EXPECT_FALSE(huffman_decode(unhex("fe"), out));  // 7 bits, not all ones
  EXPECT_TRUE(huffman_decode(unhex("07"), out));   // "0"
  EXPECT_TRUE(huffman_decode("", out));            // empty
  EXPECT_EQ(out, "keep0");
  // A 30-bit prefix of ones followed by a valid code: EOS in the middle of a long input.
  std::string s = unhex("ffff fffc") + std::string(16, '\0');
  EXPECT_FALSE(huffman_decode(s, out));
}

// ---- Encoder ----------------------------------------------------------------------------------

unsigned char first_byte(Encoder& e, std::string_view name, std::string_view value,
                         bool sensitive = false) {
  std::string out;
  e.begin(out);
  e.add(out, name, value, sensitive);
  return out.empty() ? 0 : static_cast<unsigned char>(out[0]);
}

TEST(HpackEncoder, SensitiveFieldsAreNeverIndexed) {
  Encoder e;
  Decoder d;
  for (int round = 0; round < 2; ++round) {  // the second time too: never from the table
    std::string out;
    e.begin(out);
    e.add(out, "x-secret", "hunter2", true);
    e.add(out, ":path", "/", true);  // even with a static match
    e.add(out, "authorization", "Bearer abcdefghijklmnopqrstuvwxyz");
    e.add(out, "proxy-authorization", "Basic Zm9vOmJhcg==");
    e.add(out, "cookie", "short=1");
    Fields f;
    ASSERT_EQ(decode(d, out, f), DecodeError::None);
    ASSERT_EQ(f.size(), 5u);
    for (const auto& x : f) EXPECT_TRUE(x.never) << x;
    EXPECT_EQ(e.table_size(), 0u);
    EXPECT_EQ(d.table_size(), 0u);
  }
  EXPECT_EQ(first_byte(e, "x-secret", "hunter2", true) & 0xf0, 0x10);
  EXPECT_EQ(first_byte(e, "authorization", "x") & 0xf0, 0x10);
  EXPECT_EQ(first_byte(e, "proxy-authorization", "x") & 0xf0, 0x10);
  EXPECT_EQ(first_byte(e, "cookie", std::string(19, 'c')) & 0xf0, 0x10);
  EXPECT_EQ(e.table_size(), 0u);
  EXPECT_EQ(first_byte(e, "cookie", std::string(20, 'c')) & 0xc0, 0x40);  // 20 bytes: indexed
  EXPECT_EQ(e.table_size(), 6u + 20 + 32);
  EXPECT_EQ(first_byte(e, "cookie", std::string(20, 'c')), 0x80 | 62);
}

TEST(HpackEncoder, Representations) {
  Encoder e;
  EXPECT_EQ(first_byte(e, ":status", "200"), 0x88);  // static exact match
  EXPECT_EQ(first_byte(e, "age", ""), 0x80 | 21);    // static entry with an empty value
  EXPECT_EQ(first_byte(e, "accept-encoding", "gzip, deflate"), 0x80 | 16);
  EXPECT_EQ(first_byte(e, ":status", "201"), 0x40 | 8);   // static name, indexed
  EXPECT_EQ(first_byte(e, ":status", "201"), 0x80 | 62);  // now in the dynamic table
  EXPECT_EQ(first_byte(e, "x-a", "1"), 0x40);             // new name
  EXPECT_EQ(first_byte(e, "x-a", "2"), 0x40 | 62);        // name from the dynamic table
  EXPECT_EQ(first_byte(e, "x-a", "1"), 0x80 | 63);
  // Larger than 3/4 of the table: without indexing (4096 * 3 / 4 = 3072).
  EXPECT_EQ(first_byte(e, "x-b", std::string(3072 - 32 - 3, 'v')) & 0xc0, 0x40);
  EXPECT_EQ(first_byte(e, "x-c", std::string(3072 - 32 - 3 + 1, 'v')), 0x00);
  EXPECT_EQ(first_byte(e, "x-b", std::string(3072 - 32 - 3, 'v')), 0x80 | 62);
}

TEST(HpackEncoder, HuffmanOnlyWhenShorter) {
  Encoder e(0);  // no table: literals without indexing
  std::string out;
  e.begin(out);
  EXPECT_EQ(out, unhex("20"));  // the peer's decoder starts at 4096: announce 0
  out.clear();
  // "x-a": 18 bits, 3 octets either way: raw. "aaaa": 20 bits, 3 octets: Huffman.
  e.add(out, "x-a", "aaaa");
  EXPECT_EQ(out, unhex("00 03 782d61 83 18c63f"));
  out.clear();
  e.add(out, "x-a", std::string("\x00\xff", 2));  // binary: raw
  EXPECT_EQ(out, unhex("00 03 782d61 02 00ff"));
  EXPECT_EQ(e.table_size(), 0u);
}

std::string updates_of(Encoder& e) {
  std::string out;
  e.begin(out);
  return out;
}

TEST(HpackEncoder, SizeUpdates) {
  Encoder e;
  Decoder d;
  EXPECT_EQ(updates_of(e), "");  // both at 4096: nothing to announce
  std::string out;
  e.add(out, "x-a", "1");
  Fields first;
  ASSERT_EQ(decode(d, out, first), DecodeError::None);
  EXPECT_EQ(e.table_size(), 36u);
  // Shrunk then grown between two blocks: the smallest, then the final value (§4.2).
  e.set_peer_max_table_size(0);
  e.set_peer_max_table_size(4096);
  d.set_max_table_size(0);
  d.set_max_table_size(4096);
  out = updates_of(e);
  EXPECT_EQ(out, unhex("20 3fe11f"));
  EXPECT_EQ(e.table_size(), 0u);
  Fields f;
  ASSERT_EQ(decode(d, out, f), DecodeError::None);
  EXPECT_EQ(d.table_size(), 0u);
  e.set_peer_max_table_size(4096);  // unchanged
  EXPECT_EQ(updates_of(e), "");
  e.set_peer_max_table_size(1024);
  EXPECT_EQ(updates_of(e), unhex("3fe107"));
  e.set_peer_max_table_size(8192);  // our own ceiling is 4096
  EXPECT_EQ(updates_of(e), unhex("3fe11f"));
  e.set_peer_max_table_size(100);
  e.set_peer_max_table_size(2000);
  EXPECT_EQ(updates_of(e), unhex("3f45 3fb10f"));
  e.set_peer_max_table_size(50);
  e.set_peer_max_table_size(200);
  e.set_peer_max_table_size(100);
  EXPECT_EQ(updates_of(e), unhex("3f13 3f45"));  // 50, then 100
  e.set_peer_max_table_size(100);
  e.set_peer_max_table_size(100);
  EXPECT_EQ(updates_of(e), "");

  Encoder big(65536);
  EXPECT_EQ(updates_of(big), "");  // 4096 until the peer allows more
  big.set_peer_max_table_size(65536);
  EXPECT_EQ(updates_of(big), unhex("3fe1ff03"));
  Encoder small(256);
  EXPECT_EQ(updates_of(small), unhex("3fe101"));
  EXPECT_EQ(updates_of(small), "");
}

// ---- Memory -----------------------------------------------------------------------------------

const Fields kBrowser = {
    {":method", "GET"},
    {":scheme", "https"},
    {":authority", "example.com"},
    {":path", "/api/v1/items?id=42&sort=asc"},
    {"user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
    {"accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
    {"accept-language", "en-US,en;q=0.5"},
    {"accept-encoding", "gzip, deflate, br"},
    {"cookie", "session=0123456789abcdef; theme=dark"},
};

TEST(HpackMemory, IdleCodecsHoldNothing) {
  Encoder e;
  Decoder d;
  EXPECT_EQ(e.memory(), 0u);
  EXPECT_EQ(d.memory(), 0u);
  const std::string block = encode(e, kBrowser);
  EXPECT_EQ(decode_ok(d, block), kBrowser);
  EXPECT_GT(e.memory(), 0u);
  EXPECT_GT(d.memory(), 0u);
  EXPECT_EQ(e.table_size(), d.table_size());
  // After trim() the decoder holds its entries and their bookkeeping only.
  d.trim();
  EXPECT_LE(d.memory(), d.table_size());
  EXPECT_EQ(decode_ok(d, encode(e, kBrowser)), kBrowser);  // still in sync
  // An emptied table is freed by trim().
  e.set_peer_max_table_size(0);
  const std::string upd = updates_of(e);
  d.set_max_table_size(0);
  Fields f;
  ASSERT_EQ(decode(d, upd, f), DecodeError::None);
  e.trim();
  d.trim();
  EXPECT_EQ(e.memory(), 0u);
  EXPECT_EQ(d.memory(), 0u);
}

TEST(HpackMemory, DecoderTableStaysWithinItsSize) {
  Encoder e;
  Decoder d;
  std::mt19937 rng(7);
  for (int i = 0; i < 500; ++i) {
    Fields list;
    for (int k = 0; k < 6; ++k)
      list.push_back({"x-h" + std::to_string(rng() % 50), std::string(rng() % 300, 'v')});
    ASSERT_EQ(decode_ok(d, encode(e, list)), list);
    // The byte ring never exceeds the table size; records are 12 bytes per entry (at most
    // 4096 / 32 of them); the scratch buffer is unused by raw literals.
    ASSERT_LE(d.memory(), 4096u + 128u * 12u);
  }
}

// ---- The dynamic table against a model --------------------------------------------------------

// Raw representations written by hand, for the model test below.
void put_int(std::string& out, unsigned first, unsigned prefix_bits, std::size_t v) {
  const std::size_t max = (std::size_t{1} << prefix_bits) - 1;
  if (v < max) {
    out.push_back(static_cast<char>(first | v));
    return;
  }
  out.push_back(static_cast<char>(first | max));
  for (v -= max; v >= 128; v >>= 7) out.push_back(static_cast<char>((v & 0x7f) | 0x80));
  out.push_back(static_cast<char>(v));
}
void put_raw(std::string& out, std::string_view s) {
  put_int(out, 0, 7, s.size());
  out.append(s);
}

// The dynamic table as the RFC describes it (§4), newest entry first.
struct Model {
  std::deque<Field> entries;  // newest first
  std::size_t size = 0;
  std::uint32_t max;
  void evict_to(std::size_t n) {
    while (size > n) {
      size -= entries.back().name.size() + entries.back().value.size() + 32;
      entries.pop_back();
    }
  }
  void add(const Field& f) {
    const std::size_t es = f.name.size() + f.value.size() + 32;
    if (es > max) {
      evict_to(0);
      return;
    }
    evict_to(max - es);
    entries.push_front(f);
    size += es;
  }
  std::int64_t find(const Field& f, bool by_name) const {
    for (std::size_t i = 0; i < entries.size(); ++i)
      if (entries[i].name == f.name && (by_name || entries[i].value == f.value))
        return static_cast<std::int64_t>(i);
    return -1;
  }
};

std::string joined(const std::string_view (&p)[2]) { return std::string(p[0]) + std::string(p[1]); }

void run_table_model(bool indexed, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::string> values;
  for (int i = 0; i < 24; ++i)
    values.push_back(std::string(rng() % 90, static_cast<char>('a' + i)));
  const char* names[] = {"a", "bb", "ccc", "dddd", "e", "ffffffffffff", ""};
  detail::field_table t(300, indexed);
  Model m;
  m.max = 300;
  for (int op = 0; op < 20000; ++op) {
    const unsigned r = rng() % 100;
    if (r < 3) {
      const std::uint32_t sizes[] = {0, 40, 100, 200, 300, 500, 1000};
      const std::uint32_t n = sizes[rng() % 7];
      t.set_max_size(n);
      m.max = n;
      m.evict_to(n);
    } else if (r < 5) {
      t.trim();
    } else {
      Field f{names[rng() % 7], values[rng() % values.size()]};
      const std::uint32_t nh = detail::hash_name(f.name);
      const std::uint32_t ph = detail::hash_pair(f.name, f.value);
      if (indexed) {
        ASSERT_EQ(t.find_pair(f.name, f.value, ph), m.find(f, false)) << op;
        ASSERT_EQ(t.find_name(f.name, nh), m.find(f, true)) << op;
      }
      t.add(f.name, f.value, nh, ph);
      m.add(f);
    }
    ASSERT_EQ(t.count(), m.entries.size()) << op;
    ASSERT_EQ(t.size(), m.size) << op;
    ASSERT_LE(t.size(), t.max_size());
    for (std::uint32_t i = 0; i < t.count(); ++i) {
      const auto v = t.get(i);
      ASSERT_EQ(joined(v.name), m.entries[i].name) << op << " " << i;
      ASSERT_EQ(joined(v.value), m.entries[i].value) << op << " " << i;
    }
  }
}

// Blocks of literals with and without indexing, names and fields from the dynamic table, in small
// tables where entries wrap around the end of the ring and get evicted while referenced.
TEST(HpackDecoder, DynamicTableAgainstAModel) {
  std::mt19937 rng(11);
  auto letters = [&](std::size_t n) {
    std::string str(n, 'a');
    for (auto& c : str) c = static_cast<char>('a' + rng() % 26);
    return str;
  };
  for (std::uint32_t table : {100u, 150u, 200u, 333u, 4096u}) {
    Decoder d(table);
    Model m;
    m.max = table;
    for (int op = 0; op < 3000; ++op) {
      std::string block;
      Fields expect;
      for (unsigned k = 0, n = 1 + rng() % 4; k < n; ++k) {
        const unsigned r = rng() % 3;
        if (r == 0 || m.entries.empty()) {  // literal with indexing, new name
          Field f{letters(1 + rng() % 20), letters(rng() % 61)};
          put_int(block, 0x40, 6, 0);
          put_raw(block, f.name);
          put_raw(block, f.value);
          m.add(f);
          expect.push_back(f);
        } else if (r == 1) {  // indexed
          const std::size_t i = rng() % m.entries.size();
          put_int(block, 0x80, 7, 62 + i);
          expect.push_back(m.entries[i]);
        } else {  // literal with the name of entry i, with or without indexing
          const std::size_t i = rng() % m.entries.size();
          const Field f{m.entries[i].name, letters(rng() % 61)};
          const bool indexing = rng() % 2 == 0;
          put_int(block, indexing ? 0x40 : 0x00, indexing ? 6 : 4, 62 + i);
          put_raw(block, f.value);
          if (indexing) m.add(f);
          expect.push_back(f);
        }
      }
      Fields got;
      ASSERT_EQ(decode(d, block, got), DecodeError::None) << table << " " << op;
      ASSERT_EQ(got, expect) << table << " " << op;
      ASSERT_EQ(d.table_size(), m.size) << table << " " << op;
    }
  }
}

TEST(HpackTable, MatchesAModel) { run_table_model(false, 1); }
TEST(HpackTable, IndexedMatchesAModel) {
  run_table_model(true, 2);
  run_table_model(true, 3);
}

// ---- Cross-check with nghttp2 -----------------------------------------------------------------

struct Gen {
  std::mt19937_64 rng;
  std::vector<std::string> pool;
  explicit Gen(std::uint64_t seed) : rng(seed) {
    for (int i = 0; i < 32; ++i) pool.push_back(text(rng() % 40));
  }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(rng() % n); }
  std::string text(std::size_t n) {
    std::string s(n, ' ');
    for (auto& c : s) c = static_cast<char>(' ' + below(95));
    return s;
  }
  std::string binary(std::size_t n) {
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(below(256));
    return s;
  }
  std::string name() {
    static const char* const names[] = {":method",
                                        ":path",
                                        ":authority",
                                        ":scheme",
                                        ":status",
                                        "accept",
                                        "accept-encoding",
                                        "accept-language",
                                        "cookie",
                                        "set-cookie",
                                        "authorization",
                                        "proxy-authorization",
                                        "user-agent",
                                        "content-type",
                                        "content-length",
                                        "cache-control",
                                        "date",
                                        "etag",
                                        "x-request-id",
                                        "x-forwarded-for",
                                        "x-custom",
                                        "grpc-status",
                                        "te",
                                        "age",
                                        "via"};
    if (below(10) == 0) {
      std::string s(1 + below(20), 'a');
      for (auto& c : s) c = static_cast<char>('a' + below(26));
      return s;
    }
    return names[below(std::size(names))];
  }
  std::string value() {
    const std::size_t r = below(100);
    if (r < 30) return pool[below(pool.size())];
    if (r < 60) return text(below(41));
    if (r < 75) return binary(below(65));
    if (r < 90) return text(40 + below(361));
    if (r < 98) return below(2) ? text(400 + below(4721)) : binary(400 + below(4721));
    return "";
  }
  Fields list() {
    Fields l(1 + below(16));
    for (auto& f : l) {
      f.name = name();
      f.value = value();
      f.never = below(20) == 0;
    }
    return l;
  }
  std::uint32_t table_size() {
    static const std::uint32_t sizes[] = {0, 1, 31, 32, 64, 100, 256, 512, 1024, 4096, 8192};
    return sizes[below(std::size(sizes))];
  }
};

// Both encoders' policy (RFC 7541 §7.1.3): which fields go as never-indexed literals.
bool never_indexed(const Field& f) {
  return f.never || f.name == "authorization" || f.name == "proxy-authorization" ||
         (f.name == "cookie" && f.value.size() < 20);
}

bool inflate(nghttp2_hd_inflater* inf, const std::string& block, Fields& out) {
  out.clear();
  return portico_ref::nghttp2_inflate_each(inf, block, [&](const nghttp2_nv& nv) {
    out.push_back({std::string(reinterpret_cast<const char*>(nv.name), nv.namelen),
                   std::string(reinterpret_cast<const char*>(nv.value), nv.valuelen),
                   (nv.flags & NGHTTP2_NV_FLAG_NO_INDEX) != 0});
  });
}

std::string deflate(nghttp2_hd_deflater* def, const Fields& list) {
  std::vector<nghttp2_nv> nva;
  for (const auto& f : list)
    nva.push_back(
        {reinterpret_cast<std::uint8_t*>(const_cast<char*>(f.name.data())),
         reinterpret_cast<std::uint8_t*>(const_cast<char*>(f.value.data())), f.name.size(),
         f.value.size(),
         static_cast<std::uint8_t>(f.never ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE)});
  std::string buf(nghttp2_hd_deflate_bound(def, nva.data(), nva.size()), '\0');
  const auto n = nghttp2_hd_deflate_hd(def, reinterpret_cast<std::uint8_t*>(buf.data()), buf.size(),
                                       nva.data(), nva.size());
  if (n < 0) return {};
  buf.resize(static_cast<std::size_t>(n));
  return buf;
}

TEST(HpackNghttp2, OursToNghttp2) {
  Gen g(20261127);
  Encoder enc;
  nghttp2_hd_inflater* inf = nullptr;
  ASSERT_EQ(nghttp2_hd_inflate_new(&inf), 0);
  std::size_t biggest = 0;  // the largest table seen
  for (int i = 0; i < 2000; ++i) {
    for (int k = g.below(10) == 0 ? 1 + static_cast<int>(g.below(2)) : 0; k > 0; --k) {
      const std::uint32_t n = g.table_size();
      ASSERT_EQ(nghttp2_hd_inflate_change_table_size(inf, n), 0);
      enc.set_peer_max_table_size(n);
    }
    const Fields list = g.list();
    const std::string block = encode(enc, list);
    Fields got;
    ASSERT_TRUE(inflate(inf, block, got)) << "list " << i;
    ASSERT_EQ(got, list) << "list " << i;
    for (std::size_t k = 0; k < list.size(); ++k)
      ASSERT_EQ(got[k].never, never_indexed(list[k])) << "list " << i << " field " << k;
    ASSERT_EQ(enc.table_size(), nghttp2_hd_inflate_get_dynamic_table_size(inf)) << "list " << i;
    biggest = std::max(biggest, enc.table_size());
  }
  nghttp2_hd_inflate_del(inf);
  EXPECT_GT(biggest, 3000u);  // the table filled up
}

// A proxy's blocks repeat the previous one with a few changes: what the encoder remembers of
// the last block (the entry at each position) is tried first, and must never name a wrong or
// evicted entry. Values changed, fields inserted, removed, moved or made sensitive, the table
// shrunk (evicting what the memory names) or grown between blocks.
TEST(HpackNghttp2, RepeatedBlocksToNghttp2) {
  Gen g(97);
  Encoder enc;
  nghttp2_hd_inflater* inf = nullptr;
  ASSERT_EQ(nghttp2_hd_inflate_new(&inf), 0);
  Fields list = g.list();
  std::size_t indexed_blocks = 0;
  for (int i = 0; i < 3000; ++i) {
    if (g.below(25) == 0) {
      static const std::uint32_t sizes[] = {0, 40, 64, 100, 256, 4096};
      const std::uint32_t n = sizes[g.below(std::size(sizes))];
      ASSERT_EQ(nghttp2_hd_inflate_change_table_size(inf, n), 0);
      enc.set_peer_max_table_size(n);
    }
    switch (g.below(8)) {
      case 0:
        if (list.size() < 20)
          list.insert(list.begin() + g.below(list.size() + 1), {g.name(), g.value()});
        break;
      case 1:
        if (list.size() > 1) list.erase(list.begin() + g.below(list.size()));
        break;
      case 2:
        list[g.below(list.size())].value = g.value();
        break;
      case 3:
        std::swap(list[g.below(list.size())], list[g.below(list.size())]);
        break;
      case 4:
        list[g.below(list.size())].never ^= true;
        break;
      default:
        break;  // the same block again
    }
    const std::string block = encode(enc, list);
    Fields got;
    ASSERT_TRUE(inflate(inf, block, got)) << "block " << i;
    ASSERT_EQ(got, list) << "block " << i;
    for (std::size_t k = 0; k < list.size(); ++k)
      ASSERT_EQ(got[k].never, never_indexed(list[k])) << "block " << i << " field " << k;
    ASSERT_EQ(enc.table_size(), nghttp2_hd_inflate_get_dynamic_table_size(inf)) << "block " << i;
    if (block.size() == list.size()) ++indexed_blocks;
  }
  nghttp2_hd_inflate_del(inf);
  EXPECT_GT(indexed_blocks, 20u);  // repeats did come out as indexed fields (39 with this seed)
}

TEST(HpackEncoder, ARepeatedBlockIsIndexedAndAnEvictedEntryIsNotUsed) {
  Fields resp = {{":status", "200"},
                 {"server", "origin/1.0"},
                 {"date", "Fri, 27 Nov 2026 14:47:08 GMT"},
                 {"content-type", "text/html"},
                 {"content-length", "1024"}};
  Encoder e;
  Decoder d;
  EXPECT_EQ(decode_ok(d, encode(e, resp)), resp);
  std::string again = encode(e, resp);
  // One octet each: :status 200 from the static table, the rest from the dynamic one.
  EXPECT_EQ(again, unhex("88 c1 c0 bf be"));
  EXPECT_EQ(decode_ok(d, again), resp);
  resp[2].value = "Fri, 27 Nov 2026 14:47:09 GMT";  // the next second
  again = encode(e, resp);
  // Four indexed fields and a literal: the static name, the length, the Huffman-coded value.
  EXPECT_EQ(again.size(), 4 + 1 + 1 + huffman_length(resp[2].value));
  EXPECT_EQ(decode_ok(d, again), resp);
  EXPECT_EQ(encode(e, resp).size(), resp.size());

  // A table with room for one entry. The second block keeps x-a (from the table) and then
  // inserts x-b, which evicts it: the third block's x-a, remembered at its position, must go as
  // a literal again, not as the index of the entry gone.
  Encoder small(64);
  Decoder ds(64);
  std::string out;
  small.begin(out);  // announces 64
  Fields f;
  ASSERT_EQ(decode(ds, out, f), DecodeError::None);
  const Fields a = {{"x-a", "1"}}, ab = {{"x-a", "1"}, {"x-b", "2"}};
  std::string b1 = encode(small, a), b2 = encode(small, ab), b3 = encode(small, a);
  EXPECT_EQ(static_cast<unsigned char>(b1[0]), 0x40);  // new name, indexed
  EXPECT_EQ(static_cast<unsigned char>(b2[0]), 0x80 | 62);
  EXPECT_EQ(static_cast<unsigned char>(b3[0]), 0x40);  // x-b took its place: a literal again
  EXPECT_EQ(decode_ok(ds, b1), a);
  EXPECT_EQ(decode_ok(ds, b2), ab);
  EXPECT_EQ(decode_ok(ds, b3), a);
}

// A decoder that remembers short Huffman literals decodes exactly as one that does not: blocks
// of literals only (nghttp2 with no table), repeated and changed, every length around the 48
// octets remembered, and the caller's string limit applied to a remembered decoding too.
TEST(HpackNghttp2, RememberedLiteralsDecodeAsBefore) {
  Gen g(48);
  Decoder plain, remembering;
  remembering.remember_literals(true);
  nghttp2_hd_deflater* def = nullptr;
  ASSERT_EQ(nghttp2_hd_deflate_new(&def, 0), 0);  // no table: every field a literal
  Fields list;
  for (int i = 0; i < 3000; ++i) {
    if (i % 3 == 0) {  // a new list; in between the same one again, or one value changed
      list = g.list();
      for (auto& f : list)
        if (g.below(2)) f.value = g.text(20 + g.below(50));  // 20..69 chars: 13..60 octets
    } else if (i % 3 == 2) {
      list[g.below(list.size())].value = g.text(g.below(70));
    }
    const std::string block = deflate(def, list);
    ASSERT_FALSE(block.empty());
    Fields a, b;
    ASSERT_EQ(decode(plain, block, a), DecodeError::None) << i;
    ASSERT_EQ(decode(remembering, block, b), DecodeError::None) << i;
    ASSERT_EQ(a, list) << i;
    ASSERT_EQ(b, list) << i;
  }
  nghttp2_hd_deflate_del(def);
  EXPECT_GE(remembering.memory(), plain.memory() + 2000);
  remembering.trim();
  plain.trim();
  EXPECT_EQ(remembering.memory(), plain.memory());

  // A 40-character value remembered with a 100-byte limit is still too large at 20.
  Encoder e(0);
  std::string block;
  e.begin(block);
  const Fields f = {{"x-long", std::string(40, 'e')}};
  block.clear();
  e.add(block, f[0].name, f[0].value);
  Decoder d;
  d.remember_literals(true);
  Fields out;
  EXPECT_EQ(decode(d, block, out, 100), DecodeError::None);
  EXPECT_EQ(out, f);
  EXPECT_EQ(decode(d, block, out, 20), DecodeError::TooLarge);
}

TEST(HpackNghttp2, Nghttp2ToOurs) {
  Gen g(7541);
  Decoder dec;
  nghttp2_hd_deflater* def = nullptr;
  ASSERT_EQ(nghttp2_hd_deflate_new(&def, 4096), 0);
  for (int i = 0; i < 2000; ++i) {
    for (int k = g.below(10) == 0 ? 1 + static_cast<int>(g.below(2)) : 0; k > 0; --k) {
      const std::uint32_t n = g.table_size();
      ASSERT_EQ(nghttp2_hd_deflate_change_table_size(def, n), 0);
      dec.set_max_table_size(n);
    }
    const Fields list = g.list();
    const std::string block = deflate(def, list);
    ASSERT_FALSE(block.empty()) << "list " << i;
    Fields got;
    ASSERT_EQ(decode(dec, block, got), DecodeError::None) << "list " << i;
    ASSERT_EQ(got, list) << "list " << i;
    for (std::size_t k = 0; k < list.size(); ++k)
      if (list[k].never) {  // nghttp2 has its own policy for the rest
        ASSERT_TRUE(got[k].never) << "list " << i << " field " << k;
      }
    ASSERT_EQ(dec.table_size(), nghttp2_hd_deflate_get_dynamic_table_size(def)) << "list " << i;
  }
  nghttp2_hd_deflate_del(def);
}

}  // namespace
