#include "http1/codec.hpp"

#include <llhttp.h>

#include <cctype>
#include <charconv>
#include <cstring>

namespace portico::http1 {

namespace {
enum class Pause : std::uint8_t { None, Headers, Complete };
enum class FieldState : std::uint8_t { None, Name, Value };
struct Slot {
  std::uint32_t no, nl, vo, vl;
};

/// True when [p, p+n) holds a CR, an LF or a NUL: eight bytes per step (a byte is zero in
/// x ^ c exactly where x has byte c).
bool has_cr_lf_nul(const char* p, std::size_t n) noexcept {
  constexpr std::uint64_t k01 = 0x0101010101010101ULL, k80 = 0x8080808080808080ULL;
  auto zero_byte = [](std::uint64_t v) { return (v - k01) & ~v & k80; };
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t x;
    std::memcpy(&x, p + i, 8);
    if (zero_byte(x) | zero_byte(x ^ (k01 * '\r')) | zero_byte(x ^ (k01 * '\n'))) return true;
  }
  for (; i < n; ++i)
    if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0') return true;
  return false;
}
}  // namespace

struct Parser::Impl {
  llhttp_t p;
  Parser* self;
  std::string raw;  // target (or reason), then names and values, copied from the input
  std::vector<Slot> slots;
  std::uint32_t url_len = 0;
  std::uint32_t reason_len = 0;
  std::size_t trailer_first = 0;  // index of the first trailer slot
  std::size_t header_phase_bytes = 0;
  FieldState fs = FieldState::None;
  Pause pause = Pause::None;
  bool paused = false;
  bool paused_upgrade = false;
  bool keep_alive = false;
  bool upgrade = false;
  // The input of the current feed(), to tell a value split by a buffer boundary from one
  // continued on a folded line.
  const char* feed_begin = nullptr;
  const char* feed_end = nullptr;
  bool value_at_feed_end = false;
  // Header-section byte scan (what llhttp's strict mode still lets through): the previous
  // byte, and whether the request/status line is still being read.
  char prev = '\n';
  bool first_line = true;
  // Status line of a response: spaces seen and digits of the status code.
  std::uint8_t status_spaces = 0;
  std::uint8_t status_digits = 0;
  // The last bytes of a chunked body consumed so far, to check that it ends with CRLF CRLF
  // (llhttp takes a bare LF as the blank line that ends it).
  char tail[4] = {};
  std::size_t tail_len = 0;

  /// Appends `n` consumed body bytes to the rolling tail.
  void track_tail(const char* d, std::size_t n) {
    for (std::size_t k = n > 4 ? n - 4 : 0; k < n; ++k) {
      if (tail_len == 4) {
        std::memmove(tail, tail + 1, 3);
        tail_len = 3;
      }
      tail[tail_len++] = d[k];
    }
  }

  void fail(std::uint16_t status, ErrorType t, std::string_view why) {
    if (self->err_status_ == 0) {
      self->err_status_ = status;
      self->err_type_ = t;
      self->err_reason_.assign(why);
    }
  }
};

struct Callbacks {
  static Parser::Impl& I(llhttp_t* p) { return *static_cast<Parser::Impl*>(p->data); }

  static int on_message_begin(llhttp_t* p) {
    auto& i = I(p);
    i.raw.clear();
    i.slots.clear();
    i.url_len = i.reason_len = 0;
    i.fs = FieldState::None;
    i.trailer_first = 0;
    i.self->started_ = true;
    i.self->in_body_ = false;
    i.self->trailers_.clear();
    i.first_line = true;
    i.status_spaces = i.status_digits = 0;
    return 0;
  }
  static int on_url(llhttp_t* p, const char* at, std::size_t len) {
    auto& i = I(p);
    i.url_len += static_cast<std::uint32_t>(len);
    if (i.url_len > i.self->limits_.max_target_bytes) {
      i.fail(414, ErrorType::InvalidHTTPHeader, "request-target too long");
      return -1;
    }
    i.raw.append(at, len);
    return 0;
  }
  static int on_status(llhttp_t* p, const char* at, std::size_t len) {
    auto& i = I(p);
    i.reason_len += static_cast<std::uint32_t>(len);
    if (i.reason_len > 1024) {
      i.fail(502, ErrorType::InvalidHTTPHeader, "reason phrase too long");
      return -1;
    }
    i.raw.append(at, len);
    return 0;
  }
  static int check_size(Parser::Impl& i) {
    if (i.raw.size() > i.self->limits_.max_header_bytes) {
      i.fail(i.self->kind_ == Kind::Request ? 431 : 502, ErrorType::InvalidHTTPHeader,
             "header section too large");
      return -1;
    }
    return 0;
  }
  static int on_header_field(llhttp_t* p, const char* at, std::size_t len) {
    auto& i = I(p);
    if (i.fs != FieldState::Name) {
      if (i.slots.size() - i.trailer_first >= i.self->limits_.max_header_count) {
        i.fail(i.self->kind_ == Kind::Request ? 431 : 502, ErrorType::InvalidHTTPHeader,
               "too many header fields");
        return -1;
      }
      i.slots.push_back(Slot{static_cast<std::uint32_t>(i.raw.size()), 0, 0, 0});
      i.fs = FieldState::Name;
    }
    i.raw.append(at, len);
    i.slots.back().nl += static_cast<std::uint32_t>(len);
    return check_size(i);
  }
  static int on_header_value(llhttp_t* p, const char* at, std::size_t len) {
    auto& i = I(p);
    // llhttp keeps an obs-fold (a line break inside a value) in the value; RFC 9112 §5.2 lets a
    // recipient reject it, and a proxy must not pass it on.
    if (has_cr_lf_nul(at, len)) {
      i.fail(i.self->kind_ == Kind::Request ? 400 : 502, ErrorType::InvalidHTTPHeader,
             "line folding or a control character in a field value");
      return -1;
    }
    if (i.fs != FieldState::Value) {
      i.slots.back().vo = static_cast<std::uint32_t>(i.raw.size());
      i.fs = FieldState::Value;
    } else if (!(i.value_at_feed_end && at == i.feed_begin)) {
      // A second piece of one value that is not the continuation of a buffer boundary: llhttp
      // accepted an obs-fold (RFC 9112 §5.2). Reject it rather than forward it.
      i.fail(i.self->kind_ == Kind::Request ? 400 : 502, ErrorType::InvalidHTTPHeader,
             "obsolete line folding in a field value");
      return -1;
    }
    i.value_at_feed_end = at + len == i.feed_end;
    i.raw.append(at, len);
    i.slots.back().vl += static_cast<std::uint32_t>(len);
    return check_size(i);
  }
  static int on_header_field_complete(llhttp_t* p) {
    auto& i = I(p);
    // A field with an empty value gets no on_header_value call.
    i.slots.back().vo = static_cast<std::uint32_t>(i.raw.size());
    return 0;
  }
  static int on_header_value_complete(llhttp_t* p) {
    I(p).fs = FieldState::None;
    return 0;
  }
  static std::string_view name_of(const Parser::Impl& i, const Slot& s) {
    return std::string_view(i.raw.data() + s.no, s.nl);
  }
  static std::string_view value_of(const Parser::Impl& i, const Slot& s) {
    return std::string_view(i.raw.data() + s.vo, s.vl);
  }
  /// uri-host [ ":" port ] (RFC 9112 §3.2): no list, no userinfo, no path, a numeric port.
  static bool valid_host(std::string_view h) {
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
      for (char c : host) {
        auto u = static_cast<unsigned char>(c);
        if (!(std::isalnum(u) || std::string_view("-._~%!$&'()*+;=").find(c) != std::string_view::npos))
          return false;
      }
    }
    for (char c : port)
      if (c < '0' || c > '9') return false;
    return port.size() <= 5;
  }
  /// Request-target forms (RFC 9112 §3.2): no fragment, "*" only for OPTIONS.
  static const char* bad_target(const Parser::Impl& i, const llhttp_t* p) {
    std::string_view t(i.raw.data(), i.url_len);
    if (t.find('#') != std::string_view::npos) return "fragment in the request-target";
    if (t == "*" && p->method != HTTP_OPTIONS) return "asterisk-form for a method other than OPTIONS";
    for (std::string_view scheme : {std::string_view("http://"), std::string_view("https://")}) {
      if (t.size() > scheme.size() && iequals(t.substr(0, scheme.size()), scheme)) {
        std::string_view rest = t.substr(scheme.size());
        std::string_view authority = rest.substr(0, rest.find_first_of("/?"));
        if (authority.empty() || !valid_host(authority)) return "invalid authority in the request-target";
      }
    }
    return nullptr;
  }
  static int on_headers_complete(llhttp_t* p) {
    auto& i = I(p);
    Parser& self = *i.self;
    i.fs = FieldState::None;
    i.trailer_first = i.slots.size();
    if (p->http_major != 1 || p->http_minor > 1) {
      i.fail(505, ErrorType::InvalidHTTPHeader, "unsupported HTTP version");
      return -1;
    }
    if (p->flags & F_TRANSFER_ENCODING) {
      // Only "chunked" alone: a coding before it would be lost when the body is re-chunked,
      // and portico does not decode transfer codings.
      std::size_t te = 0;
      bool only_chunked = true;
      for (const Slot& s : i.slots)
        if (iequals(name_of(i, s), "transfer-encoding")) {
          ++te;
          std::string_view v = value_of(i, s);
          while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
          only_chunked = only_chunked && iequals(v, "chunked");
        }
      const bool plain_chunked = (p->flags & F_CHUNKED) && te == 1 && only_chunked;
      if (self.kind_ == Kind::Request) {
        // Decided here, before the head is handed to the hooks: such a request must never
        // start its way upstream.
        if (p->http_minor == 0) {
          i.fail(400, ErrorType::InvalidHTTPHeader, "Transfer-Encoding in an HTTP/1.0 request");
          return -1;
        }
        if (!plain_chunked) {
          i.fail(501, ErrorType::InvalidHTTPHeader, "Transfer-Encoding other than chunked");
          return -1;
        }
      } else if (!plain_chunked && !self.no_body_expected_ && p->status_code >= 200 &&
                 p->status_code != 204 && p->status_code != 304) {
        i.fail(502, ErrorType::InvalidHTTPHeader, "response Transfer-Encoding other than chunked");
        return -1;
      }
    }
    for (const Slot& s : i.slots) {
      if (s.nl == 0) {
        i.fail(self.kind_ == Kind::Request ? 400 : 502, ErrorType::InvalidHTTPHeader,
               "empty field name");
        return -1;
      }
      if (iequals(name_of(i, s), "transfer-encoding") && value_of(i, s).empty()) {
        i.fail(self.kind_ == Kind::Request ? 400 : 502, ErrorType::InvalidHTTPHeader,
               "empty Transfer-Encoding");
        return -1;
      }
    }
    if (self.kind_ == Kind::Request) {
      if (const char* why = bad_target(i, p)) {
        i.fail(400, ErrorType::InvalidHTTPHeader, why);
        return -1;
      }
      std::size_t hosts = 0;
      for (const Slot& s : i.slots) {
        if (!iequals(name_of(i, s), "host")) continue;
        ++hosts;
        if (!valid_host(value_of(i, s))) {
          i.fail(400, ErrorType::InvalidHTTPHeader, "invalid Host");
          return -1;
        }
      }
      if (hosts > 1) {
        i.fail(400, ErrorType::InvalidHTTPHeader, "more than one Host field");
        return -1;
      }
      if (hosts == 0 && p->http_minor == 1) {
        i.fail(400, ErrorType::InvalidHTTPHeader, "HTTP/1.1 request without Host");
        return -1;
      }
    }
    i.keep_alive = llhttp_should_keep_alive(p) != 0;
    i.upgrade = p->upgrade != 0;
    bool no_body = false;
    if (self.kind_ == Kind::Response) {
      std::uint16_t st = p->status_code;
      no_body = self.no_body_expected_ || (st >= 100 && st < 200) || st == 204 || st == 304;
    }
    if (no_body) {
      p->flags |= F_SKIPBODY;
      self.framing_ = Framing::None;
    } else if (p->flags & F_CHUNKED) {
      self.framing_ = Framing::Chunked;
    } else if (p->flags & F_CONTENT_LENGTH) {
      self.framing_ = p->content_length ? Framing::ContentLength : Framing::None;
      self.content_length_ = p->content_length;
    } else if (self.kind_ == Kind::Response && llhttp_message_needs_eof(p)) {
      self.framing_ = Framing::UntilClose;
    } else {
      self.framing_ = Framing::None;
    }
    if (self.framing_ != Framing::ContentLength) self.content_length_ = 0;
    self.in_body_ = true;
    i.pause = Pause::Headers;
    return HPE_PAUSED;
  }
  static int on_body(llhttp_t* p, const char* at, std::size_t len) {
    if (len) I(p).self->body_.emplace_back(at, len);  // llhttp flushes empty spans at the end
    return 0;
  }
  static int on_message_complete(llhttp_t* p) {
    auto& i = I(p);
    Parser& self = *i.self;
    for (std::size_t k = i.trailer_first; k < i.slots.size(); ++k)
      self.trailers_.append(name_of(i, i.slots[k]),
                            std::string_view(i.raw.data() + i.slots[k].vo, i.slots[k].vl));
    self.in_body_ = false;
    self.started_ = false;
    i.pause = Pause::Complete;
    return HPE_PAUSED;
  }

  static const llhttp_settings_t settings;
};

namespace {
llhttp_settings_t make_settings() {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = &Callbacks::on_message_begin;
  s.on_url = &Callbacks::on_url;
  s.on_status = &Callbacks::on_status;
  s.on_header_field = &Callbacks::on_header_field;
  s.on_header_value = &Callbacks::on_header_value;
  s.on_header_field_complete = &Callbacks::on_header_field_complete;
  s.on_header_value_complete = &Callbacks::on_header_value_complete;
  s.on_headers_complete = &Callbacks::on_headers_complete;
  s.on_body = &Callbacks::on_body;
  s.on_message_complete = &Callbacks::on_message_complete;
  return s;
}
}  // namespace

const llhttp_settings_t Callbacks::settings = make_settings();

Parser::Parser(Kind kind, ParserLimits limits)
    : impl_(std::make_unique<Impl>()), kind_(kind), limits_(limits) {
  llhttp_init(&impl_->p, kind == Kind::Request ? HTTP_REQUEST : HTTP_RESPONSE,
              &Callbacks::settings);
  impl_->p.data = impl_.get();
  impl_->self = this;
}

Parser::~Parser() = default;

namespace {
// RFC 9112 §4: status-line = HTTP-version SP 3DIGIT SP [ reason-phrase ]. The SP after the code
// is tolerated when the reason is absent, as every client does.
bool status_code_char(Parser::Impl& i, char c) {
  if (i.status_spaces == 1) {
    if (c >= '0' && c <= '9') return ++i.status_digits <= 3;
    if (c == ' ' || c == '\r') {
      ++i.status_spaces;
      return i.status_digits == 3;
    }
    return false;
  }
  if (c == ' ' && i.status_spaces == 0) ++i.status_spaces;
  return true;
}
}  // namespace

bool Parser::scan_head(Impl& i, const char* data, std::size_t n) {
  // llhttp's strict mode still takes a bare LF as a line end, unfolds obs-fold after a colon
  // and collapses runs of spaces in the request line; a proxy must not pass on any of them.
  auto fail = [&](const char* why) {
    i.fail(kind_ == Kind::Request ? 400 : 502, ErrorType::InvalidHTTPHeader, why);
    return false;
  };
  std::size_t k = 0;
  // A request line: from one LF to the next.
  while (kind_ == Kind::Request && k < n && i.first_line) {
    const auto* lf = static_cast<const char*>(std::memchr(data + k, '\n', n - k));
    const std::size_t end = lf ? static_cast<std::size_t>(lf - data) : n;
    const std::string_view seg(data + k, end - k);
    if ((!seg.empty() && seg.front() == ' ' && i.prev == ' ') || seg.find("  ") != std::string_view::npos)
      return fail("repeated spaces in the start line");
    if (!seg.empty()) i.prev = seg.back();
    k = end;
    if (!lf) break;
    if (i.prev != '\r') return fail("bare LF as a line end");  // the byte before the LF
    if (started_) i.first_line = false;
    i.prev = '\n';
    ++k;
  }
  // A status line, byte by byte.
  for (; k < n && i.first_line; ++k) {
    const char c = data[k];
    if (c == '\n' && i.prev != '\r') return fail("bare LF as a line end");
    if (!status_code_char(i, c))
      return fail("status code is not three digits");  // llhttp takes "20" for 020
    if (c == '\n' && i.prev == '\r' && started_) i.first_line = false;
    i.prev = c;
  }
  // The fields: only the bytes around each LF matter, so jump from one to the next.
  while (k < n) {
    if (i.prev == '\n' && (data[k] == ' ' || data[k] == '\t')) return fail("obsolete line folding");
    const auto* lf = static_cast<const char*>(std::memchr(data + k, '\n', n - k));
    if (!lf) {
      i.prev = data[n - 1];
      break;
    }
    const std::size_t at = static_cast<std::size_t>(lf - data);
    if ((at > k ? data[at - 1] : i.prev) != '\r') return fail("bare LF as a line end");
    i.prev = '\n';
    k = at + 1;
  }
  return true;
}

Parser::Step Parser::feed(const char* data, std::size_t len) {
  Impl& i = *impl_;
  body_.clear();
  if (err_status_) return {Event::Error, 0};
  if (i.paused) {
    if (i.paused_upgrade)
      llhttp_resume_after_upgrade(&i.p);
    else
      llhttp_resume(&i.p);
    i.paused = i.paused_upgrade = false;
  }
  const bool header_phase = !in_body_;
  const bool chunked_body = in_body_ && framing_ == Framing::Chunked;
  i.pause = Pause::None;
  i.feed_begin = data;
  i.feed_end = data + len;
  llhttp_errno_t err = llhttp_execute(&i.p, data, len);
  std::size_t consumed = len;
  Event ev = Event::NeedMore;
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    consumed = static_cast<std::size_t>(llhttp_get_error_pos(&i.p) - data);
    i.paused = true;
    i.paused_upgrade = err == HPE_PAUSED_UPGRADE;
    ev = i.pause == Pause::Headers ? Event::Headers : Event::MessageComplete;
    if (err == HPE_PAUSED_UPGRADE) ev = Event::MessageComplete;
  } else if (err != HPE_OK) {
    if (!err_status_) {
      const char* reason = llhttp_get_error_reason(&i.p);
      std::uint16_t st = kind_ == Kind::Request ? 400 : 502;
      if (err == HPE_INVALID_TRANSFER_ENCODING && kind_ == Kind::Request) st = 501;
      if (err == HPE_INVALID_VERSION && kind_ == Kind::Request) st = 505;
      i.fail(st, err == HPE_INVALID_CHUNK_SIZE ? ErrorType::InvalidChunk : ErrorType::InvalidHTTPHeader,
             reason ? reason : llhttp_errno_name(err));
    }
    return {Event::Error, 0};
  } else if (!body_.empty()) {
    ev = Event::Body;
  }
  if (chunked_body) {
    i.track_tail(data, consumed);
    if (ev == Event::MessageComplete && !(i.tail_len == 4 && std::memcmp(i.tail, "\r\n\r\n", 4) == 0)) {
      i.fail(kind_ == Kind::Request ? 400 : 502, ErrorType::InvalidChunk,
             "chunked body does not end with CRLF CRLF");
      return {Event::Error, 0};
    }
  }
  if (header_phase && !scan_head(i, data, consumed)) return {Event::Error, 0};
  if (header_phase) {
    i.header_phase_bytes += consumed;
    if (i.header_phase_bytes > limits_.max_header_bytes) {
      i.fail(kind_ == Kind::Request ? 431 : 502, ErrorType::InvalidHTTPHeader,
             "header section too large");
      return {Event::Error, 0};
    }
  }
  if (ev == Event::Headers) {
    i.header_phase_bytes = 0;
    i.tail_len = 0;
  }
  return {ev, consumed};
}

Parser::Step Parser::finish() {
  Impl& i = *impl_;
  body_.clear();
  if (err_status_) return {Event::Error, 0};
  if (i.paused) {
    llhttp_resume(&i.p);
    i.paused = false;
  }
  i.pause = Pause::None;
  llhttp_errno_t err = llhttp_finish(&i.p);
  if (err == HPE_PAUSED || i.pause == Pause::Complete) return {Event::MessageComplete, 0};
  if (err != HPE_OK) {
    i.fail(kind_ == Kind::Request ? 400 : 502, ErrorType::PrematureBodyEnd,
           "connection closed before the message was complete");
    return {Event::Error, 0};
  }
  return {Event::NeedMore, 0};
}

void Parser::hand_over_fields(Impl& i, HeaderMap& h) {
  // The start line's bytes stay in front of the fields, unused. Trailers, if any, are parsed
  // into the buffer `h` gave back, from its start.
  const std::size_t n = i.trailer_first;
  if (!h.empty() || i.slots.size() != n) {  // not the usual order: copy
    for (std::size_t k = 0; k < n; ++k)
      h.append(Callbacks::name_of(i, i.slots[k]), Callbacks::value_of(i, i.slots[k]));
    return;
  }
  h.buf_.swap(i.raw);
  i.raw.clear();
  h.fields_.resize(n);
  std::size_t bytes = 0;
  for (std::size_t k = 0; k < n; ++k) {
    const Slot& s = i.slots[k];
    h.fields_[k] = {s.no, s.nl, s.vo, s.vl};
    bytes += s.nl + s.vl;
  }
  h.bytes_ = bytes;
  i.slots.erase(i.slots.begin(), i.slots.begin() + static_cast<std::ptrdiff_t>(n));
  i.trailer_first = 0;
}

void Parser::take_request(RequestHeader& out) {
  Impl& i = *impl_;
  out.clear();
  out.set_method(llhttp_method_name(static_cast<llhttp_method_t>(i.p.method)));
  out.set_uri(std::string_view(i.raw.data(), i.url_len));
  out.set_version(i.p.http_minor == 0 ? Version::Http10 : Version::Http11);
  hand_over_fields(i, out.headers());
  // Absolute-form (RFC 9112 §3.2.2): the authority of the target replaces any Host, and the
  // request goes on in origin-form.
  std::string_view t = out.uri();
  std::size_t scheme = 0;
  if (t.size() > 7 && iequals(t.substr(0, 7), "http://")) scheme = 7;
  else if (t.size() > 8 && iequals(t.substr(0, 8), "https://")) scheme = 8;
  if (scheme) {
    std::string_view rest = t.substr(scheme);
    std::size_t end = rest.find_first_of("/?");
    std::string authority(rest.substr(0, end));
    std::string path = end == std::string_view::npos ? std::string("/") : std::string(rest.substr(end));
    if (path.front() == '?') path.insert(path.begin(), '/');
    out.headers().insert("Host", authority);
    out.set_uri(path);
  }
}

void Parser::take_response(ResponseHeader& out) {
  Impl& i = *impl_;
  out.clear();
  out.set_status(static_cast<std::uint16_t>(i.p.status_code));
  if (i.reason_len) out.set_reason(std::string_view(i.raw.data(), i.reason_len));
  out.set_version(i.p.http_minor == 0 ? Version::Http10 : Version::Http11);
  hand_over_fields(i, out.headers());
}

bool Parser::keep_alive() const noexcept { return impl_->keep_alive; }
bool Parser::upgrade() const noexcept { return impl_->upgrade; }
std::uint16_t Parser::status() const noexcept { return static_cast<std::uint16_t>(impl_->p.status_code); }

namespace {
void append_version(Version v, std::string& out) {
  out.append(v == Version::Http10 ? "HTTP/1.0" : "HTTP/1.1");
}
void append_fields(const HeaderMap& h, std::string& out) {
  for (auto f : h) {
    out.append(f.name);
    out.append(": ");
    out.append(f.value);
    out.append("\r\n");
  }
}
}  // namespace

void serialize_request_head(const RequestHeader& r, std::string& out) {
  out.reserve(out.size() + r.method().size() + r.uri().size() + r.headers().byte_size() +
              4 * r.headers().size() + 16);
  out.append(r.method());
  out.push_back(' ');
  out.append(r.uri());
  out.push_back(' ');
  append_version(r.version() == Version::Http10 ? Version::Http10 : Version::Http11, out);
  out.append("\r\n");
  append_fields(r.headers(), out);
  out.append("\r\n");
}

void serialize_response_head(const ResponseHeader& r, std::string& out) {
  out.reserve(out.size() + r.headers().byte_size() + 4 * r.headers().size() + 40);
  append_version(r.version() == Version::Http10 ? Version::Http10 : Version::Http11, out);
  char num[4] = {static_cast<char>('0' + r.status() / 100 % 10),
                 static_cast<char>('0' + r.status() / 10 % 10),
                 static_cast<char>('0' + r.status() % 10), ' '};
  out.push_back(' ');
  out.append(num, 4);
  out.append(r.reason());
  out.append("\r\n");
  append_fields(r.headers(), out);
  out.append("\r\n");
}

void append_chunk_size(std::size_t n, std::string& out) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf - 2, n, 16);
  (void)ec;
  *end++ = '\r';
  *end++ = '\n';
  out.append(buf, end);
}

void append_last_chunk(const HeaderMap* trailers, std::string& out) {
  out.append("0\r\n");
  if (trailers) append_fields(*trailers, out);
  out.append("\r\n");
}

namespace {
/// The fields RFC 9110 §7.6.1 makes hop-by-hop by name (TE included; it is re-added when it
/// asked for trailers).
bool is_hop_by_hop(std::string_view n) noexcept {
  switch (n.size()) {
    case 2: return iequals(n, "te");
    case 7: return iequals(n, "upgrade");
    case 10: return iequals(n, "connection") || iequals(n, "keep-alive");
    case 16: return iequals(n, "proxy-connection");
    case 17: return iequals(n, "transfer-encoding");
    default: return false;
  }
}
}  // namespace

void strip_hop_by_hop(HeaderMap& h) {
  // Fields named by Connection are hop-by-hop too (RFC 9110 §7.6.1). Most requests carry no
  // Connection field or only "keep-alive"/"close", so the common path allocates nothing.
  bool te_trailers = false;
  bool any = false;
  bool names_others = false;  // a Connection field names fields other than close/keep-alive
  for (auto f : h) {
    if (is_hop_by_hop(f.name)) {
      any = true;
      if (iequals(f.name, "te")) te_trailers = te_trailers || h.has_token("te", "trailers");
      if (iequals(f.name, "connection") && !iequals(f.value, "close") &&
          !iequals(f.value, "keep-alive"))
        names_others = true;
    }
  }
  if (!any) return;
  if (!names_others) {
    // The common case (Connection: keep-alive or close, Transfer-Encoding, ...): one pass.
    h.remove_if([](const HeaderMap::Field& f) { return is_hop_by_hop(f.name); });
    if (te_trailers) h.append("TE", "trailers");
    return;
  }
  std::vector<std::string> named;
  h.any_token("connection", [&named](std::string_view item) {
    if (!item.empty() && !iequals(item, "close") && !iequals(item, "keep-alive"))
      named.emplace_back(item);
    return false;  // every item
  });
  for (auto& n : named) h.remove(n);
  h.remove("connection");
  h.remove("keep-alive");
  h.remove("proxy-connection");
  h.remove("te");
  h.remove("transfer-encoding");
  h.remove("upgrade");
  if (te_trailers) h.append("TE", "trailers");
}

}  // namespace portico::http1
