// nghttp2's HPACK decoder as the reference portico's codec is compared with (tests) and
// measured against (bench/micro): the fields of one header block, in order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nghttp2/nghttp2.h>

namespace portico_ref {

/// Decodes `block` with `inf`, calling fn(const nghttp2_nv&) per field; false on an error or a
/// block that does not end (bounded).
template <class Fn>
bool nghttp2_inflate_each(nghttp2_hd_inflater* inf, std::string_view block, Fn&& fn) {
  const auto* in = reinterpret_cast<const std::uint8_t*>(block.data());
  std::size_t left = block.size();
  for (std::size_t guard = 0; guard <= block.size() + 1; ++guard) {
    nghttp2_nv nv;
    int flags = 0;
    const auto n = nghttp2_hd_inflate_hd2(inf, &nv, &flags, in, left, 1);
    if (n < 0) return false;
    in += n;
    left -= static_cast<std::size_t>(n);
    if (flags & NGHTTP2_HD_INFLATE_EMIT) fn(nv);
    if (flags & NGHTTP2_HD_INFLATE_FINAL) {
      nghttp2_hd_inflate_end_headers(inf);
      return true;
    }
  }
  return false;
}

}  // namespace portico_ref
