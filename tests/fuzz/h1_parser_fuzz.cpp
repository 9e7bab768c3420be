// libFuzzer target: the HTTP/1 request and response parser, fed in random pieces, followed by
// what the engine does with a parsed head (hop-by-hop stripping, serialisation).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "http1/codec.hpp"

using namespace portico;

namespace {
void run(http1::Kind kind, std::string_view in, std::uint8_t split_seed) {
  http1::ParserLimits limits;
  limits.max_header_bytes = 4096;
  limits.max_header_count = 32;
  limits.max_target_bytes = 1024;
  http1::Parser p(kind, limits);
  if (kind == http1::Kind::Response) p.set_no_body_expected(split_seed & 1);
  std::size_t off = 0;
  std::size_t step = 1 + split_seed % 17;
  std::string out;
  // Bounded: every iteration consumes input, completes a message, or ends the loop.
  for (int guard = 0; guard < 100000 && off <= in.size(); ++guard) {
    const std::size_t n = std::min(step, in.size() - off);
    auto s = p.feed(in.data() + off, n);
    for (auto c : p.body_chunks()) out.append(c.substr(0, 1));
    off += s.consumed;
    if (s.event == http1::Event::Error) return;
    if (s.event == http1::Event::Headers) {
      if (kind == http1::Kind::Request) {
        RequestHeader r;
        p.take_request(r);
        http1::strip_hop_by_hop(r.headers());
        out.clear();
        http1::serialize_request_head(r, out);
      } else {
        ResponseHeader r;
        p.take_response(r);
        http1::strip_hop_by_hop(r.headers());
        out.clear();
        http1::serialize_response_head(r, out);
      }
    }
    if (s.event == http1::Event::NeedMore && off == in.size()) {
      p.finish();
      return;
    }
    step = 1 + (step * 7 + split_seed) % 29;
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t seed = data[0];
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  run(seed & 0x80 ? http1::Kind::Response : http1::Kind::Request, in, seed);
  return 0;
}
