// libFuzzer target: h2::Session, server or client side, fed hostile bytes as a peer would send
// them. The owner's part is played as the proxy plays it: every request head is answered with
// a small body, body bytes are consumed, output is drained. Checks: no crash, no undefined
// behaviour, no leak (ASan/UBSan), and the memory bounds the session promises.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http2/session.hpp"

namespace {

using namespace portico;

constexpr std::string_view kMagic = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

void check(bool ok) {
  if (!ok) std::abort();
}

void drain(h2::Session& s, bool answer) {
  for (int round = 0; round < 64; ++round) {
    bool any = false;
    while (auto e = s.poll_event()) {
      any = true;
      if (e->kind == h2::EventKind::Head && answer && s.mode() == h2::Mode::Server) {
        ResponseHeader r = ResponseHeader::build(200);
        r.append_header("Content-Length", "5");
        if (s.submit_response(e->stream_id, r, false))
          (void)s.send_data(e->stream_id, "hello", true);
      }
      if (e->kind == h2::EventKind::Data) s.consume(e->stream_id, s.buffered(e->stream_id));
      if (e->kind == h2::EventKind::Closed) s.discard(e->stream_id);
      s.recycle(std::move(e->fields));
    }
    auto out = s.pending_output();
    if (!out.empty()) {
      any = true;
      s.consume_output(out.size());
    }
    if (!any) break;
  }
  check(s.buffered() <= s.settings().connection_window);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint8_t mode = data[0];
  const std::size_t chunk = 1 + data[1] % 64;  // bytes per feed: frames cut anywhere
  data += 2;
  size -= 2;
  h2::Settings st;
  st.max_header_list_size = (mode & 2) ? 1024 : 16 * 1024;
  st.max_concurrent_streams = (mode & 4) ? 2 : 100;
  st.stream_window = (mode & 8) ? 65535 : 256 * 1024;
  const bool server = !(mode & 1);
  h2::Session s(server ? h2::Mode::Server : h2::Mode::Client, st);
  std::string input;
  if (server && (mode & 16)) input.assign(kMagic);  // past the preface more often
  if (!server) {
    HeaderMap req;
    req.append(":method", (mode & 32) ? "POST" : "GET");
    req.append(":scheme", "https");
    req.append(":authority", "example.com");
    req.append(":path", "/");
    auto id = s.submit_request(req, !(mode & 32));
    if (id && (mode & 32)) (void)s.send_data(*id, "body", true);
  }
  input.append(reinterpret_cast<const char*>(data), size);
  drain(s, true);
  for (std::size_t at = 0; at < input.size(); at += chunk) {
    auto r = s.feed(std::string_view(input).substr(at, chunk));
    drain(s, true);
    if (!r) break;
  }
  s.trim();
  drain(s, false);
  return 0;
}
