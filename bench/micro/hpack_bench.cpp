// HPACK: portico's codec (src/http2/hpack.*) against nghttp2's (nghttp2_hd_*) on the same header
// lists: a browser request and an nginx-like response.
//   Encode         warm tables: every field is an exact match (indexed)
//   Decode         warm tables: the indexed block of the above
//   EncodeLiteral  every field sensitive: never-indexed literals, Huffman-coded (no table)
//   DecodeLiteral  that block: string parsing and Huffman decoding only
//   DecodeIndexing the first block (literals with incremental indexing) again and again: the
//                  table churns, one insertion per literal
//   HuffmanEncode/Decode  portico's Huffman coder alone, on 185 bytes of header text
// Counters: `bytes` is the block size, `mem` portico's memory() after the run.
#include <benchmark/benchmark.h>
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http2/hpack.hpp"
#include "nghttp2_inflate.hpp"

namespace hpack = portico::h2::hpack;

namespace {

using Fields = std::vector<std::pair<std::string_view, std::string_view>>;

const Fields kRequest = {
    {":method", "GET"},
    {":scheme", "https"},
    {":authority", "www.example.com"},
    {":path", "/api/v1/items?id=42&sort=asc"},
    {"user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
    {"accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
    {"accept-language", "en-US,en;q=0.5"},
    {"accept-encoding", "gzip, deflate, br, zstd"},
    {"cookie", "session=0123456789abcdef0123456789abcdef; theme=dark"},
};

const Fields kResponse = {
    {":status", "200"},
    {"server", "nginx/1.25.3"},
    {"date", "Fri, 27 Nov 2026 08:07:21 GMT"},
    {"content-type", "text/html; charset=utf-8"},
    {"content-length", "12345"},
    {"last-modified", "Tue, 24 Nov 2026 17:42:07 GMT"},
    {"etag", "\"6564e0af-3039\""},
    {"accept-ranges", "bytes"},
};

std::string encode(hpack::Encoder& e, const Fields& list, bool sensitive = false) {
  std::string out;
  e.begin(out);
  for (const auto& [n, v] : list) e.add(out, n, v, sensitive);
  return out;
}

std::vector<nghttp2_nv> to_nv(const Fields& list, bool no_index) {
  std::vector<nghttp2_nv> nva;
  for (const auto& [n, v] : list)
    nva.push_back(
        {reinterpret_cast<std::uint8_t*>(const_cast<char*>(n.data())),
         reinterpret_cast<std::uint8_t*>(const_cast<char*>(v.data())), n.size(), v.size(),
         static_cast<std::uint8_t>(no_index ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE)});
  return nva;
}

void sink(void* ctx, std::string_view n, std::string_view v) {
  *static_cast<std::size_t*>(ctx) += n.size() + v.size();
}

bool inflate(nghttp2_hd_inflater* inf, const std::string& block, std::size_t& total) {
  return portico_ref::nghttp2_inflate_each(
      inf, block, [&](const nghttp2_nv& nv) { total += nv.namelen + nv.valuelen; });
}

// The blocks a fresh encoder writes for `list`: the first (literals), then the warm one.
std::pair<std::string, std::string> blocks(const Fields& list, bool sensitive = false) {
  hpack::Encoder e;
  std::string first = encode(e, list, sensitive);
  return {first, encode(e, list, sensitive)};
}

// ---- Encode -----------------------------------------------------------------------------------

void encode_portico(benchmark::State& st, const Fields* list, bool sensitive) {
  hpack::Encoder e;
  std::string out;
  for (int i = 0; i < 2; ++i) out = encode(e, *list, sensitive);
  for (auto _ : st) {
    out.clear();
    e.begin(out);
    for (const auto& [n, v] : *list) e.add(out, n, v, sensitive);
    benchmark::DoNotOptimize(out.data());
  }
  st.counters["bytes"] = static_cast<double>(out.size());
  st.counters["mem"] = static_cast<double>(e.memory());
}

void encode_nghttp2(benchmark::State& st, const Fields* list, bool no_index) {
  nghttp2_hd_deflater* d = nullptr;
  nghttp2_hd_deflate_new(&d, 4096);
  auto nva = to_nv(*list, no_index);
  std::string buf(nghttp2_hd_deflate_bound(d, nva.data(), nva.size()), '\0');
  auto* p = reinterpret_cast<std::uint8_t*>(buf.data());
  ssize_t n = 0;
  for (int i = 0; i < 2; ++i) n = nghttp2_hd_deflate_hd(d, p, buf.size(), nva.data(), nva.size());
  for (auto _ : st) {
    n = nghttp2_hd_deflate_hd(d, p, buf.size(), nva.data(), nva.size());
    benchmark::DoNotOptimize(n);
  }
  st.counters["bytes"] = static_cast<double>(n);
  nghttp2_hd_deflate_del(d);
}

void BM_HpackEncode_portico(benchmark::State& st, const Fields* list) {
  encode_portico(st, list, false);
}
void BM_HpackEncode_nghttp2(benchmark::State& st, const Fields* list) {
  encode_nghttp2(st, list, false);
}
void BM_HpackEncodeLiteral_portico(benchmark::State& st, const Fields* list) {
  encode_portico(st, list, true);
}
void BM_HpackEncodeLiteral_nghttp2(benchmark::State& st, const Fields* list) {
  encode_nghttp2(st, list, true);
}

// ---- Decode -----------------------------------------------------------------------------------

// `prime` is decoded once, then `block` in the loop.
void decode_portico(benchmark::State& st, const std::string& prime, const std::string& block) {
  hpack::Decoder d;
  std::size_t total = 0;
  if (d.decode(prime, &sink, &total) != hpack::DecodeError::None) {
    st.SkipWithError("decode failed");
    return;
  }
  for (auto _ : st) {
    const auto e = d.decode(block, &sink, &total);
    benchmark::DoNotOptimize(e);
  }
  benchmark::DoNotOptimize(total);
  st.counters["bytes"] = static_cast<double>(block.size());
  st.counters["mem"] = static_cast<double>(d.memory());
}

void decode_nghttp2(benchmark::State& st, const std::string& prime, const std::string& block) {
  nghttp2_hd_inflater* inf = nullptr;
  nghttp2_hd_inflate_new(&inf);
  std::size_t total = 0;
  if (!inflate(inf, prime, total)) {
    st.SkipWithError("inflate failed");
    nghttp2_hd_inflate_del(inf);
    return;
  }
  for (auto _ : st) {
    const bool ok = inflate(inf, block, total);
    benchmark::DoNotOptimize(ok);
  }
  benchmark::DoNotOptimize(total);
  st.counters["bytes"] = static_cast<double>(block.size());
  nghttp2_hd_inflate_del(inf);
}

void BM_HpackDecode_portico(benchmark::State& st, const Fields* list) {
  const auto [first, warm] = blocks(*list);
  decode_portico(st, first, warm);
}
void BM_HpackDecode_nghttp2(benchmark::State& st, const Fields* list) {
  const auto [first, warm] = blocks(*list);
  decode_nghttp2(st, first, warm);
}
void BM_HpackDecodeLiteral_portico(benchmark::State& st, const Fields* list) {
  const auto [first, again] = blocks(*list, true);
  decode_portico(st, first, again);
}
void BM_HpackDecodeLiteral_nghttp2(benchmark::State& st, const Fields* list) {
  const auto [first, again] = blocks(*list, true);
  decode_nghttp2(st, first, again);
}
void BM_HpackDecodeIndexing_portico(benchmark::State& st, const Fields* list) {
  const auto [first, warm] = blocks(*list);
  decode_portico(st, first, first);
}
void BM_HpackDecodeIndexing_nghttp2(benchmark::State& st, const Fields* list) {
  const auto [first, warm] = blocks(*list);
  decode_nghttp2(st, first, first);
}

// Huffman alone (portico; nghttp2 does not export its coder): the request's user-agent, accept
// and cookie values, 185 bytes of text.
const std::string kText = std::string(kRequest[4].second) + std::string(kRequest[5].second) +
                          std::string(kRequest[8].second);

void BM_HpackHuffmanEncode(benchmark::State& st) {
  std::string out;
  for (auto _ : st) {
    out.clear();
    hpack::huffman_encode(kText, out);
    benchmark::DoNotOptimize(out.data());
  }
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * kText.size()));
}

void BM_HpackHuffmanDecode(benchmark::State& st) {
  std::string code, out;
  hpack::huffman_encode(kText, code);
  for (auto _ : st) {
    out.clear();
    const bool ok = hpack::huffman_decode(code, out);
    benchmark::DoNotOptimize(ok);
  }
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * kText.size()));
}

}  // namespace

BENCHMARK(BM_HpackHuffmanEncode);
BENCHMARK(BM_HpackHuffmanDecode);
BENCHMARK_CAPTURE(BM_HpackEncode_portico, request, &kRequest);
BENCHMARK_CAPTURE(BM_HpackEncode_nghttp2, request, &kRequest);
BENCHMARK_CAPTURE(BM_HpackEncode_portico, response, &kResponse);
BENCHMARK_CAPTURE(BM_HpackEncode_nghttp2, response, &kResponse);
BENCHMARK_CAPTURE(BM_HpackDecode_portico, request, &kRequest);
BENCHMARK_CAPTURE(BM_HpackDecode_nghttp2, request, &kRequest);
BENCHMARK_CAPTURE(BM_HpackDecode_portico, response, &kResponse);
BENCHMARK_CAPTURE(BM_HpackDecode_nghttp2, response, &kResponse);
BENCHMARK_CAPTURE(BM_HpackEncodeLiteral_portico, request, &kRequest);
BENCHMARK_CAPTURE(BM_HpackEncodeLiteral_nghttp2, request, &kRequest);
BENCHMARK_CAPTURE(BM_HpackEncodeLiteral_portico, response, &kResponse);
BENCHMARK_CAPTURE(BM_HpackEncodeLiteral_nghttp2, response, &kResponse);
BENCHMARK_CAPTURE(BM_HpackDecodeLiteral_portico, request, &kRequest);
BENCHMARK_CAPTURE(BM_HpackDecodeLiteral_nghttp2, request, &kRequest);
BENCHMARK_CAPTURE(BM_HpackDecodeLiteral_portico, response, &kResponse);
BENCHMARK_CAPTURE(BM_HpackDecodeLiteral_nghttp2, response, &kResponse);
BENCHMARK_CAPTURE(BM_HpackDecodeIndexing_portico, request, &kRequest);
BENCHMARK_CAPTURE(BM_HpackDecodeIndexing_nghttp2, request, &kRequest);
BENCHMARK_CAPTURE(BM_HpackDecodeIndexing_portico, response, &kResponse);
BENCHMARK_CAPTURE(BM_HpackDecodeIndexing_nghttp2, response, &kResponse);
