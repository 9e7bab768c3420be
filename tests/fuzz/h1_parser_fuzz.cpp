// libFuzzer target: the HTTP/1 request and response parser, fed in random pieces, followed by
// what the engine does with a parsed head (hop-by-hop stripping, serialisation).
//
// Differential: portico's parser is stricter than llhttp's strict mode, never more lenient. When
// it accepts a whole message, llhttp (strict) is run on the same bytes and must accept it too,
// with the same method, target or status and body; a disagreement aborts the run.
#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http1/codec.hpp"

using namespace portico;

namespace {

struct Seen {
  bool complete = false;
  bool until_close = false;  // completed by finish()
  std::size_t end = 0;       // offset just past the message
  std::string method, target, body;
  std::uint16_t status = 0;
};

[[noreturn]] void disagree(const char* what, std::string_view in) {
  std::fprintf(stderr, "portico and llhttp disagree: %s\ninput: %.*s\n", what,
               static_cast<int>(in.size()), in.data());
  std::abort();
}

struct Ref {
  std::string url, status_text, body;
  bool done = false;
  bool skip_body = false;
  static Ref& of(llhttp_t* p) { return *static_cast<Ref*>(p->data); }
};

void check_with_llhttp(http1::Kind kind, bool no_body, std::string_view msg, const Seen& s) {
  llhttp_settings_t st;
  llhttp_settings_init(&st);
  st.on_url = [](llhttp_t* p, const char* at, std::size_t n) {
    Ref::of(p).url.append(at, n);
    return 0;
  };
  st.on_body = [](llhttp_t* p, const char* at, std::size_t n) {
    Ref::of(p).body.append(at, n);
    return 0;
  };
  // 204 and 304 never have content (RFC 9110 §15.3.5, §15.4.5): portico frames them so, and
  // llhttp is told so (it reads a chunked body after them otherwise).
  st.on_headers_complete = [](llhttp_t* p) {
    return Ref::of(p).skip_body || p->status_code == 204 || p->status_code == 304 ? 1 : 0;
  };
  st.on_message_complete = [](llhttp_t* p) {
    Ref::of(p).done = true;
    return static_cast<int>(HPE_PAUSED);
  };
  llhttp_t p;
  llhttp_init(&p, kind == http1::Kind::Request ? HTTP_REQUEST : HTTP_RESPONSE, &st);
  Ref ref;
  ref.skip_body = no_body;
  p.data = &ref;
  llhttp_errno_t err = llhttp_execute(&p, msg.data(), msg.size());
  if (err == HPE_OK && s.until_close) err = llhttp_finish(&p);
  const char* epos = llhttp_get_error_pos(&p);
  if (err == HPE_INVALID_CHUNK_SIZE && epos && epos > msg.data() && epos[-1] == ';') {
    // llhttp 8.1 refuses a second chunk extension after one with a token value ("5;a=1;b"),
    // which RFC 9112 §7.1.1 allows and portico accepts; llhttp 9 fixed it. Not compared.
    const std::string_view before(msg.data(), static_cast<std::size_t>(epos - 1 - msg.data()));
    const std::string_view ext = before.substr(before.rfind(';') + 1);
    if (ext.find('=') != std::string_view::npos && ext.find('"') == std::string_view::npos) return;
  }
  if (!ref.done || (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE && err != HPE_OK))
    disagree(llhttp_get_error_reason(&p) ? llhttp_get_error_reason(&p) : llhttp_errno_name(err), msg);
  if (ref.body != s.body) disagree("body", msg);
  if (kind == http1::Kind::Request) {
    // take_request turns absolute-form into origin-form; llhttp reports the target as sent.
    if (ref.url != s.target && ref.url.find("://") == std::string::npos) disagree("target", msg);
    if (s.method != llhttp_method_name(static_cast<llhttp_method_t>(p.method))) disagree("method", msg);
  } else if (p.status_code != s.status) {
    disagree("status", msg);
  }
}

void run(http1::Kind kind, std::string_view in, std::uint8_t split_seed) {
  http1::ParserLimits limits;
  limits.max_header_bytes = 4096;
  limits.max_header_count = 32;
  limits.max_target_bytes = 1024;
  http1::Parser p(kind, limits);
  const bool no_body = kind == http1::Kind::Response && (split_seed & 1);
  if (kind == http1::Kind::Response) p.set_no_body_expected(no_body);
  std::size_t off = 0;
  std::size_t step = 1 + split_seed % 17;
  std::string out;
  Seen first;  // the first message, compared with llhttp's reading of it
  bool first_done = false;
  // Bounded: every iteration consumes input, completes a message, or ends the loop.
  for (int guard = 0; guard < 100000 && off <= in.size(); ++guard) {
    const std::size_t n = std::min(step, in.size() - off);
    auto s = p.feed(in.data() + off, n);
    for (auto c : p.body_chunks()) {
      out.append(c.substr(0, 1));
      if (!first_done) first.body.append(c);
    }
    off += s.consumed;
    if (s.event == http1::Event::Error) break;
    if (s.event == http1::Event::Headers) {
      if (kind == http1::Kind::Request) {
        RequestHeader r;
        p.take_request(r);
        if (!first_done) {
          first.method = r.method();
          first.target = r.uri();
        }
        http1::strip_hop_by_hop(r.headers());
        out.clear();
        http1::serialize_request_head(r, out);
      } else {
        ResponseHeader r;
        p.take_response(r);
        if (!first_done) first.status = r.status();
        http1::strip_hop_by_hop(r.headers());
        out.clear();
        http1::serialize_response_head(r, out);
      }
    }
    if (s.event == http1::Event::MessageComplete && !first_done) {
      first_done = first.complete = true;
      first.end = off;
    }
    if (s.event == http1::Event::NeedMore && off == in.size()) {
      if (p.finish().event == http1::Event::MessageComplete && !first_done) {
        first_done = first.complete = first.until_close = true;
        first.end = off;
      }
      break;
    }
    step = 1 + (step * 7 + split_seed) % 29;
  }
  // A 1xx response never has content (RFC 9110 §15.2); llhttp reads one after a 101 that does
  // not name an Upgrade. The proxy tunnels after a 101 or refuses it: not compared.
  if (first.complete && !(first.status >= 100 && first.status < 200)) check_with_llhttp(kind, no_body, in.substr(0, first.end), first);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t seed = data[0];
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  run(seed & 0x80 ? http1::Kind::Response : http1::Kind::Request, in, seed);
  return 0;
}
