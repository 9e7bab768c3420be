#include "http1/codec.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstring>
#include <limits>

#include "http/chars.hpp"
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include "http/connection_fields.hpp"

namespace portico::http1 {

using namespace http::chars;

namespace {
constexpr std::size_t npos = static_cast<std::size_t>(-1);
/// The methods of the HTTP method registry this parser accepts (as llhttp's request parser did).
bool known_method(std::string_view m) noexcept {
  static constexpr std::string_view kMethods[] = {
      "GET",      "POST",      "HEAD",        "PUT",       "DELETE",     "OPTIONS",  "PATCH",
      "CONNECT",  "TRACE",     "COPY",        "LOCK",      "MKCOL",      "MOVE",     "PROPFIND",
      "PROPPATCH", "SEARCH",   "UNLOCK",      "BIND",      "REBIND",     "UNBIND",   "ACL",
      "REPORT",   "MKACTIVITY", "CHECKOUT",   "MERGE",     "M-SEARCH",   "NOTIFY",   "SUBSCRIBE",
      "UNSUBSCRIBE", "PURGE",  "MKCALENDAR",  "LINK",      "UNLINK",     "SOURCE"};
  for (std::string_view k : kMethods)
    if (k.size() == m.size() && std::memcmp(k.data(), m.data(), m.size()) == 0) return true;
  return false;
}

/// An absolute-form target with an http or https scheme (RFC 9112 §3.2.2): its authority, and
/// what follows the authority (from the first '/' or '?', possibly empty). False otherwise.
bool split_absolute(std::string_view t, std::string_view& authority, std::string_view& after) noexcept {
  std::size_t scheme = 0;
  if (t.size() > 7 && iequals(t.substr(0, 7), "http://")) scheme = 7;
  else if (t.size() > 8 && iequals(t.substr(0, 8), "https://")) scheme = 8;
  if (scheme == 0) return false;
  const std::string_view rest = t.substr(scheme);
  const std::size_t end = std::min(rest.find_first_of("/?"), rest.size());
  authority = rest.substr(0, end);
  after = rest.substr(end);
  return true;
}

#if defined(__SSE2__)
/// Bytes of a 16-byte block (bit i for byte i) other than letters, digits and '-': in the usual
/// field name, the first of them is the colon.
inline unsigned unusual_name_bytes(__m128i x) noexcept {
  auto in_range = [](__m128i v, char lo, char span) {  // lo <= v <= lo + span, unsigned
    const __m128i d = _mm_sub_epi8(v, _mm_set1_epi8(lo));
    return _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(span)), d);
  };
  const __m128i letter = in_range(_mm_or_si128(x, _mm_set1_epi8(0x20)), 'a', 25);
  const __m128i usual = _mm_or_si128(_mm_or_si128(letter, in_range(x, '0', 9)),
                                     _mm_cmpeq_epi8(x, _mm_set1_epi8('-')));
  return ~static_cast<unsigned>(_mm_movemask_epi8(usual)) & 0xFFFFu;
}

/// Bytes of a 16-byte block no field line may hold: controls other than HTAB, and DEL.
inline unsigned control_bytes(__m128i x) noexcept {
  const __m128i printable = _mm_cmpeq_epi8(_mm_max_epu8(x, _mm_set1_epi8(0x20)), x);
  const __m128i ok =
      _mm_andnot_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8(0x7F)),
                       _mm_or_si128(printable, _mm_cmpeq_epi8(x, _mm_set1_epi8('\t'))));
  return ~static_cast<unsigned>(_mm_movemask_epi8(ok)) & 0xFFFFu;
}

/// The colon of the usual field line of 16 bytes or more, 16 bytes per step: a name of letters,
/// digits and '-', then the colon, and no control character anywhere (the name, the colon and
/// the whitespace pass that test too, so the whole line is checked as one value). npos when the
/// line is anything else: split_field then looks at it byte by byte and says what is wrong.
inline std::size_t usual_field_colon(const char* p, std::size_t n) noexcept {
  if (n < 16) return npos;
  for (std::size_t i = 0, colon = npos;; i += 16) {
    const std::size_t at = i + 16 <= n ? i : n - 16;  // the last block overlaps the one before
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + at));
    if (control_bytes(x)) return npos;
    if (colon == npos) {
      const unsigned m = unusual_name_bytes(x) & (0xFFFFu << (i - at));  // bytes not seen yet
      if (m) {
        colon = at + static_cast<std::size_t>(__builtin_ctz(m));
        if (colon == 0 || p[colon] != ':') return npos;
      }
    }
    if (at + 16 >= n) return colon;
  }
}
#else
inline std::size_t usual_field_colon(const char*, std::size_t) noexcept { return npos; }
#endif

/// field-name ":" OWS field-value OWS in [p, p+n): the offsets of the name and trimmed value,
/// or why the line is invalid.
const char* split_field(const char* p, std::size_t n, std::uint32_t& nl, std::uint32_t& vo,
                        std::uint32_t& vl) noexcept {
  std::size_t i = usual_field_colon(p, n);
  const bool checked = i != npos;  // the whole line passed the value test already
  if (!checked) {
    if (is_ows(p[0])) return "obsolete line folding";  // or whitespace before the first field
    i = 0;
    while (i < n && is_tchar(p[i])) ++i;
    if (i == n) return "field line without a colon";
    if (p[i] != ':')
      return is_ows(p[i]) ? "whitespace before the colon of a field"
                          : "invalid character in a field name";
    if (i == 0) return "empty field name";
  }
  nl = static_cast<std::uint32_t>(i);
  ++i;
  while (i < n && is_ows(p[i])) ++i;
  std::size_t end = n;
  while (end > i && is_ows(p[end - 1])) --end;
  if (!checked && !value_chars_ok(p + i, end - i)) return "a control character in a field value";
  vo = static_cast<std::uint32_t>(i);
  vl = static_cast<std::uint32_t>(end - i);
  return nullptr;
}
}  // namespace

Parser::Parser(Kind kind, ParserLimits limits) : kind_(kind), limits_(limits) {}

bool Parser::fail(std::uint16_t request_status, ErrorType t, std::string_view why) {
  if (err_status_ == 0) {
    err_status_ = kind_ == Kind::Request ? request_status : 502;
    err_type_ = t;
    err_reason_.assign(why);
  }
  return false;
}

Parser::Step Parser::feed(const char* data, std::size_t len) {
  body_.clear();
  if (err_status_) return {Event::Error, 0};
  switch (state_) {
    case State::Head:
      return feed_head(data, len);
    case State::BodyNone:
      return complete(0);
    case State::BodyLength: {
      const std::size_t n = len < remaining_ ? len : static_cast<std::size_t>(remaining_);
      if (n == 0) return {Event::NeedMore, 0};
      body_.emplace_back(data, n);
      remaining_ -= n;
      if (remaining_ == 0) return complete(n);
      return {Event::Body, n};
    }
    case State::BodyClose:
      if (len == 0) return {Event::NeedMore, 0};
      body_.emplace_back(data, len);
      return {Event::Body, len};
    default:
      return feed_chunked(data, len);
  }
}

Parser::Step Parser::complete(std::size_t consumed) {
  state_ = State::Head;
  in_body_ = false;
  started_ = false;
  return {Event::MessageComplete, consumed};
}

Parser::Step Parser::skip_body(std::uint64_t n) {
  body_.clear();
  if (state_ != State::BodyLength || n > remaining_) {
    fail(400, ErrorType::InternalError, "body bytes skipped outside a Content-Length body");
    return {Event::Error, 0};
  }
  remaining_ -= n;
  if (remaining_ == 0) return complete(0);
  return {Event::NeedMore, 0};
}

Parser::Step Parser::finish() {
  body_.clear();
  if (err_status_) return {Event::Error, 0};
  switch (state_) {
    case State::Head:
      if (!started_) return {Event::NeedMore, 0};
      break;
    case State::BodyNone:
    case State::BodyClose:
      return complete(0);
    default:
      break;
  }
  fail(400, ErrorType::PrematureBodyEnd, "connection closed before the message was complete");
  return {Event::Error, 0};
}

Parser::Step Parser::feed_head(const char* data, std::size_t len) {
  const std::size_t max = limits_.max_header_bytes;
  // Over the limit: a request line still incomplete because its target is longer than allowed
  // is answered 414, the rest 431. (Checked once, here: not on every read of a long line.)
  auto too_large = [this](const char* b, std::size_t n) {
    if (kind_ == Kind::Request && !start_line_done_ && n > line_pos_) {
      const char* p = b + line_pos_;
      const std::size_t m = n - line_pos_;
      if (const auto* sp = static_cast<const char*>(std::memchr(p, ' ', m))) {
        const char* t = sp + 1;
        const auto* sp2 = static_cast<const char*>(std::memchr(t, ' ', static_cast<std::size_t>(p + m - t)));
        if (static_cast<std::size_t>((sp2 ? sp2 : p + m) - t) > limits_.max_target_bytes) {
          fail(414, ErrorType::InvalidHTTPHeader, "request-target too long");
          return Step{Event::Error, 0};
        }
      }
    }
    fail(431, ErrorType::InvalidHTTPHeader, "header section too large");
    return Step{Event::Error, 0};
  };
  if (!buffered_) {
    // A new message. Usually its whole head is in `data`: parsed there, then copied once.
    if (len == 0) return {Event::NeedMore, 0};
    slots_.clear();
    // Room for a usual head at once (256 bytes), not grown field by field on a new connection.
    if (slots_.capacity() < 16) slots_.reserve(16);
    trailers_.clear();
    start_line_done_ = false;
    line_pos_ = scan_pos_ = 0;
    hosts_ = content_lengths_ = transfer_encodings_ = 0;
    te_chunked_ = true;
    conn_close_ = conn_keep_alive_ = conn_upgrade_ = has_upgrade_ = false;
    content_length_ = 0;
    const std::size_t end = parse_head(data, len);
    if (end == npos) return {Event::Error, 0};
    if (end != 0) {
      if (end > max) return too_large(data, end);
      raw_.assign(data, end);
      if (!head_complete(raw_.data())) return {Event::Error, 0};
      return {Event::Headers, end};
    }
    if (len > max) return too_large(data, len);
    raw_.assign(data, len);
    buffered_ = true;
    return {Event::NeedMore, len};
  }
  // The head spans reads: its first bytes are in raw_.
  const std::size_t old = raw_.size();
  const std::size_t room = max + 1 > old ? max + 1 - old : 0;  // one past the limit shows it
  const std::size_t add = len < room ? len : room;
  raw_.append(data, add);
  const std::size_t end = parse_head(raw_.data(), raw_.size());
  if (end == npos) return {Event::Error, 0};
  if (end == 0) {
    if (raw_.size() > max) return too_large(raw_.data(), raw_.size());
    return {Event::NeedMore, add};
  }
  if (end > max) return too_large(raw_.data(), end);
  raw_.resize(end);
  buffered_ = false;
  if (!head_complete(raw_.data())) return {Event::Error, 0};
  return {Event::Headers, end - old};
}

std::size_t Parser::parse_head(const char* b, std::size_t n) {
  std::size_t pos = line_pos_;
  std::size_t scan = scan_pos_ > pos ? scan_pos_ : pos;
  for (;;) {
    const auto* lf = static_cast<const char*>(std::memchr(b + scan, '\n', n - scan));
    if (!lf) {
      line_pos_ = pos;
      scan_pos_ = n;
      // Empty lines before the start line are not the start of a message (RFC 9112 §2.2).
      started_ = start_line_done_ || (n > pos && b[pos] != '\r');
      return 0;
    }
    const std::size_t at = static_cast<std::size_t>(lf - b);
    if (at == pos || b[at - 1] != '\r') {
      started_ = true;
      fail_head("bare LF as a line end");
      return npos;
    }
    const std::size_t e = at - 1;  // the line is [pos, e)
    if (e == pos) {
      if (start_line_done_) {
        line_pos_ = scan_pos_ = 0;
        return at + 1;
      }
      // an empty line before the start line: skipped
    } else if (!start_line_done_) {
      started_ = true;
      if (!start_line(b, pos, e)) return npos;
      start_line_done_ = true;
    } else if (!field_line(b, pos, e)) {
      return npos;
    }
    pos = scan = at + 1;
  }
}

bool Parser::start_line(const char* b, std::size_t s, std::size_t e) {
  const char* p = b + s;
  const std::size_t n = e - s;
  if (kind_ == Kind::Response) {
    // status-line = HTTP-version SP 3DIGIT SP [ reason-phrase ]; the SP after the code is
    // tolerated when the reason is absent, as every client does.
    if (n < 12 || std::memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
      return fail_head("invalid status line");
    minor_ = static_cast<std::uint8_t>(p[7] - '0');
    std::uint16_t st = 0;
    for (int k = 9; k < 12; ++k) {
      if (p[k] < '0' || p[k] > '9') return fail_head("status code is not three digits");
      st = static_cast<std::uint16_t>(st * 10 + (p[k] - '0'));
    }
    if (st < 100) return fail_head("invalid status code");
    if (n > 12 && p[12] != ' ') return fail_head("status code is not three digits");
    status_ = st;
    reason_off_ = static_cast<std::uint32_t>(n > 12 ? s + 13 : e);
    reason_len_ = static_cast<std::uint32_t>(e - reason_off_);
    if (reason_len_ > 1024) return fail_head("reason phrase too long");
    if (!value_chars_ok(b + reason_off_, reason_len_))
      return fail_head("a control character in the reason phrase");
    return true;
  }
  // request-line = method SP request-target SP HTTP-version
  const auto* sp1 = static_cast<const char*>(std::memchr(p, ' ', n));
  if (!sp1) return fail_head("invalid request line");
  const std::size_t ml = static_cast<std::size_t>(sp1 - p);
  const char* t = sp1 + 1;
  const auto* sp2 = static_cast<const char*>(std::memchr(t, ' ', static_cast<std::size_t>(p + n - t)));
  if (!sp2) return fail_head("invalid request line");
  const std::size_t tl = static_cast<std::size_t>(sp2 - t);
  const char* v = sp2 + 1;
  const std::size_t vl = static_cast<std::size_t>(p + n - v);
  if (ml == 0 || tl == 0 || (vl > 0 && v[0] == ' ')) return fail_head("repeated spaces in the start line");
  for (std::size_t k = 0; k < ml; ++k)
    if (!is_tchar(p[k])) return fail_head("invalid method");
  if (vl != 8 || std::memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
      v[7] < '0' || v[7] > '9')
    return fail_head("invalid HTTP version");
  if (v[5] != '1' || v[7] > '1') {
    if (ml == 3 && std::memcmp(p, "PRI", 3) == 0 && v[5] == '2')
      return fail_head("HTTP/2 connection preface where HTTP/1 was expected (h2c off, or a malformed preface)");
    return fail(505, ErrorType::InvalidHTTPHeader, "unsupported HTTP version");
  }
  minor_ = static_cast<std::uint8_t>(v[7] - '0');
  const std::string_view method(p, ml);
  if (!known_method(method)) return fail(501, ErrorType::InvalidHTTPHeader, "unknown method");
  if (tl > limits_.max_target_bytes)
    return fail(414, ErrorType::InvalidHTTPHeader, "request-target too long");
  if (!target_chars_ok(t, tl)) return fail_head("invalid character in the request-target");
  const std::string_view target(t, tl);
  // Request-target forms (RFC 9112 §3.2): no fragment, "*" only for OPTIONS.
  if (std::memchr(t, '#', tl)) return fail_head("fragment in the request-target");
  const bool connect = method == "CONNECT";
  std::string_view authority, after;
  const bool absolute = split_absolute(target, authority, after);
  if (target == "*") {
    if (method != "OPTIONS") return fail_head("asterisk-form for a method other than OPTIONS");
  } else if (connect) {
    // authority-form (RFC 9112 §3.2.3): host and port, nothing else.
    const std::size_t colon = target.rfind(':');
    if (!valid_host(target) || colon == std::string_view::npos || target.back() == ']' ||
        (target[0] == '[' && colon < target.find(']')))
      return fail_head("CONNECT target is not host:port");
  } else if (t[0] != '/' && !absolute) {
    return fail_head("request-target neither a path nor an http(s) URI");
  }
  if (absolute && (authority.empty() || !valid_host(authority)))
    return fail_head("invalid authority in the request-target");
  method_off_ = static_cast<std::uint32_t>(s);
  method_len_ = static_cast<std::uint32_t>(ml);
  target_off_ = static_cast<std::uint32_t>(t - b);
  target_len_ = static_cast<std::uint32_t>(tl);
  upgrade_ = connect;
  return true;
}

namespace {
/// A tab in the whitespace after a field's value.
bool tab_after(const char* b, std::size_t from, std::size_t e) noexcept {
  return e > from && std::memchr(b + from, '\t', e - from) != nullptr;
}
}  // namespace

bool Parser::field_line(const char* b, std::size_t s, std::size_t e) {
  if (slots_.size() >= limits_.max_header_count)
    return fail(431, ErrorType::InvalidHTTPHeader, "too many header fields");
  Slot sl{static_cast<std::uint32_t>(s), 0, 0, 0};
  if (const char* why = split_field(b + s, e - s, sl.nl, sl.vo, sl.vl)) return fail_head(why);
  sl.vo += static_cast<std::uint32_t>(s);
  const std::string_view name(b + s, sl.nl), value(b + sl.vo, sl.vl);
  // The fields that decide framing and the connection's fate, noted as they go by.
  const char first = static_cast<char>(name[0] | 0x20);
  switch (sl.nl) {
    case 4:
      if (first == 'h' && iequals(name, "host")) {
        if (hosts_ == 0) first_host_ = static_cast<std::uint32_t>(slots_.size());
        if (hosts_ < 2) ++hosts_;  // saturates: any count above one is refused
      }
      break;
    case 7:
      if (first == 'u' && iequals(name, "upgrade")) has_upgrade_ = true;
      break;
    case 10:
      if (first == 'c' && iequals(name, "connection"))
        any_list_item(value, [this](std::string_view item) {
          if (iequals(item, "close")) conn_close_ = true;
          else if (iequals(item, "keep-alive")) conn_keep_alive_ = true;
          else if (iequals(item, "upgrade")) conn_upgrade_ = true;
          return false;  // every item
        });
      break;
    case 14:
      if (first == 'c' && iequals(name, "content-length")) {
        if (content_lengths_) return fail_head("duplicate Content-Length");
        content_lengths_ = 1;
        std::uint64_t v = 0;
        auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
        // A tab after the digits is OWS, but refused like the one after "chunked" below.
        if (value.empty() || ec != std::errc() || ptr != value.data() + value.size() || value[0] == '+' ||
            value[0] == '-' || tab_after(b, sl.vo + sl.vl, e))
          return fail_head("invalid Content-Length");
        content_length_ = v;
      }
      break;
    case 17:
      if (first == 't' && iequals(name, "transfer-encoding")) {
        if (value.empty()) return fail_head("empty Transfer-Encoding");
        if (transfer_encodings_ < 255) ++transfer_encodings_;
        // "chunked" then a tab is valid (OWS), but a classic Transfer-Encoding obfuscation that
        // other servers read differently: not taken for chunked, so the request is refused.
        te_chunked_ = te_chunked_ && iequals(value, "chunked") && !tab_after(b, sl.vo + sl.vl, e);
      }
      break;
    default:
      break;
  }
  slots_.push_back(sl);
  return true;
}

bool Parser::head_complete(const char* b) {
  const bool request = kind_ == Kind::Request;
  const bool plain_chunked = transfer_encodings_ == 1 && te_chunked_;
  bool no_body = false;
  if (!request) no_body = no_body_expected_ || status_ < 200 || status_ == 204 || status_ == 304;
  if (transfer_encodings_) {
    if (content_lengths_) return fail_head("Content-Length with Transfer-Encoding");
    if (request) {
      // Decided here, before the head is handed to the hooks: such a request must never start
      // its way upstream.
      if (minor_ == 0) return fail_head("Transfer-Encoding in an HTTP/1.0 request");
      // Only "chunked" alone: a coding before it would be lost when the body is re-chunked,
      // and portico does not decode transfer codings.
      if (!plain_chunked)
        return fail(501, ErrorType::InvalidHTTPHeader, "Transfer-Encoding other than chunked");
    } else if (!plain_chunked && !no_body) {
      return fail_head("response Transfer-Encoding other than chunked");
    }
  }
  if (request) {
    if (hosts_ > 1) return fail_head("more than one Host field");
    if (hosts_ == 0 && minor_ == 1) return fail_head("HTTP/1.1 request without Host");
    if (hosts_ == 1) {
      const Slot& h = slots_[first_host_];
      if (!valid_host(std::string_view(b + h.vo, h.vl))) return fail_head("invalid Host");
    }
    upgrade_ = upgrade_ || (has_upgrade_ && conn_upgrade_);
  } else {
    upgrade_ = status_ == 101;
  }
  if (no_body) {
    framing_ = Framing::None;
  } else if (transfer_encodings_) {
    framing_ = Framing::Chunked;
  } else if (content_lengths_) {
    framing_ = content_length_ ? Framing::ContentLength : Framing::None;
  } else {
    framing_ = request ? Framing::None : Framing::UntilClose;
  }
  if (framing_ != Framing::ContentLength) content_length_ = 0;
  keep_alive_ = (minor_ == 1 ? !conn_close_ : conn_keep_alive_ && !conn_close_) &&
                framing_ != Framing::UntilClose;
  in_body_ = true;
  switch (framing_) {
    case Framing::None: state_ = State::BodyNone; break;
    case Framing::ContentLength:
      state_ = State::BodyLength;
      remaining_ = content_length_;
      break;
    case Framing::Chunked:
      state_ = State::ChunkSize;
      remaining_ = 0;
      size_digits_ = 0;
      size_line_bytes_ = 0;
      break;
    case Framing::UntilClose: state_ = State::BodyClose; break;
  }
  return true;
}

Parser::Step Parser::feed_chunked(const char* data, std::size_t len) {
  const char* p = data;
  const char* const end = data + len;
  auto error = [this](std::string_view why) {
    fail_chunk(why);
    return Step{Event::Error, 0};
  };
  while (p < end) {
    if (state_ == State::ChunkData) {
      const std::size_t avail = static_cast<std::size_t>(end - p);
      const std::size_t n = avail < remaining_ ? avail : static_cast<std::size_t>(remaining_);
      body_.emplace_back(p, n);
      p += n;
      remaining_ -= n;
      if (remaining_ == 0) state_ = State::ChunkDataCr;
      continue;
    }
    if (state_ == State::Trailers) {
      // Trailer lines are gathered whole, then parsed like field lines.
      const auto* lf = static_cast<const char*>(std::memchr(p, '\n', static_cast<std::size_t>(end - p)));
      const std::size_t take = lf ? static_cast<std::size_t>(lf - p) + 1 : static_cast<std::size_t>(end - p);
      if (traw_.size() + take > limits_.max_header_bytes) return error("trailer section too large");
      traw_.append(p, take);
      p += take;
      if (!lf) break;
      const std::size_t at = traw_.size() - 1;
      if (at == tline_pos_ || traw_[at - 1] != '\r') return error("bare LF as a line end in the trailers");
      if (at - 1 == tline_pos_) {  // the blank line: the message ends
        for (const Slot& s : tslots_)
          trailers_.append(std::string_view(traw_.data() + s.no, s.nl),
                           std::string_view(traw_.data() + s.vo, s.vl));
        return complete(static_cast<std::size_t>(p - data));
      }
      if (!trailer_line()) return {Event::Error, 0};
      tline_pos_ = traw_.size();
      continue;
    }
    const char c = *p++;
    if (++size_line_bytes_ > limits_.max_header_bytes) return error("chunk-size line too long");
    switch (state_) {
      case State::ChunkSize:
        if (kClass[static_cast<unsigned char>(c)] & kHex) {
          if (remaining_ > (std::numeric_limits<std::uint64_t>::max() >> 4))
            return error("chunk size too large");
          remaining_ = remaining_ * 16 + static_cast<std::uint64_t>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
          ++size_digits_;
          break;
        }
        if (size_digits_ == 0) return error("invalid chunk size");
        if (c == '\r') state_ = State::ChunkSizeLf;
        else if (c == ';') state_ = State::ChunkExt;
        else return error("invalid chunk size");
        break;
      // chunk-ext = *( ";" ext-name [ "=" ( token / quoted-string ) ] ). The whitespace RFC 9112
      // tolerates around its parts (BWS) is refused, as llhttp's strict mode does: servers
      // disagree on where such a size line ends.
      case State::ChunkExt:  // after ";": the first byte of a name
        if (!is_tchar(c)) return error("invalid chunk extension");
        state_ = State::ChunkExtName;
        break;
      case State::ChunkExtName:
      case State::ChunkExtToken:
        if (c == '\r') state_ = State::ChunkSizeLf;
        else if (c == ';') state_ = State::ChunkExt;
        else if (c == '=' && state_ == State::ChunkExtName) state_ = State::ChunkExtValue;
        else if (!is_tchar(c)) return error("invalid chunk extension");
        break;
      case State::ChunkExtValue:  // after "="
        if (c == '"') state_ = State::ChunkExtQuoted;
        else if (is_tchar(c)) state_ = State::ChunkExtToken;
        else return error("invalid chunk extension");
        break;
      case State::ChunkExtQuoted:  // qdtext only: a quoted-pair is refused, as llhttp does
        if (c == '"') state_ = State::ChunkExtQuotedEnd;
        else if (c == '\\' || !(kClass[static_cast<unsigned char>(c)] & kQdtext))
          return error("invalid chunk extension");
        break;
      case State::ChunkExtQuotedEnd:
        if (c == '\r') state_ = State::ChunkSizeLf;
        else if (c == ';') state_ = State::ChunkExt;
        else return error("invalid chunk extension");
        break;
      case State::ChunkSizeLf:
        if (c != '\n') return error("CR without LF after the chunk size");
        size_line_bytes_ = 0;
        if (remaining_ == 0) {
          state_ = State::Trailers;
          traw_.clear();
          tslots_.clear();
          tline_pos_ = 0;
        } else {
          state_ = State::ChunkData;
        }
        break;
      case State::ChunkDataCr:
        if (c != '\r') return error("chunk data not followed by CRLF");
        state_ = State::ChunkDataLf;
        break;
      case State::ChunkDataLf:
        if (c != '\n') return error("chunk data not followed by CRLF");
        state_ = State::ChunkSize;
        size_digits_ = 0;
        size_line_bytes_ = 0;
        break;
      default:
        return error("invalid chunked body state");
    }
  }
  return {body_.empty() ? Event::NeedMore : Event::Body, len};
}

bool Parser::trailer_line() {
  if (tslots_.size() >= limits_.max_header_count)
    return fail(431, ErrorType::InvalidHTTPHeader, "too many trailer fields");
  const std::size_t s = tline_pos_, e = traw_.size() - 2;  // without CRLF
  Slot sl{static_cast<std::uint32_t>(s), 0, 0, 0};
  if (const char* why = split_field(traw_.data() + s, e - s, sl.nl, sl.vo, sl.vl)) return fail_head(why);
  sl.vo += static_cast<std::uint32_t>(s);
  // Fields that frame or route the message have no place after it (RFC 9110 §6.5.1); a
  // recipient that merged them into the head would read the message differently.
  const std::string_view name(traw_.data() + s, sl.nl);
  if (iequals(name, "transfer-encoding") || iequals(name, "content-length") || iequals(name, "host"))
    return fail_head("Transfer-Encoding, Content-Length or Host in the trailers");
  tslots_.push_back(sl);
  return true;
}

void Parser::hand_over_fields(HeaderMap& h) {
  // The start line's bytes stay in front of the fields, unused.
  if (!h.empty()) {  // not the usual order: copy
    for (const Slot& s : slots_)
      h.append(std::string_view(raw_.data() + s.no, s.nl), std::string_view(raw_.data() + s.vo, s.vl));
    return;
  }
  h.buf_.swap(raw_);
  raw_.clear();
  const std::size_t n = slots_.size();
  h.fields_.resize(n);
  std::size_t bytes = 0;
  for (std::size_t k = 0; k < n; ++k) {
    const Slot& s = slots_[k];
    h.fields_[k] = {s.no, s.nl, s.vo, s.vl};
    bytes += s.nl + s.vl;
  }
  h.bytes_ = bytes;
  slots_.clear();
}

void Parser::take_request(RequestHeader& out) {
  out.clear();
  out.set_method(std::string_view(raw_.data() + method_off_, method_len_));
  out.set_uri(std::string_view(raw_.data() + target_off_, target_len_));
  out.set_version(minor_ == 0 ? Version::Http10 : Version::Http11);
  hand_over_fields(out.headers());
  // Absolute-form (RFC 9112 §3.2.2): the authority of the target replaces any Host, and the
  // request goes on in origin-form.
  std::string_view authority, after;
  if (split_absolute(out.uri(), authority, after)) {
    std::string path = after.empty() || after.front() == '?' ? "/" : "";
    path.append(after);
    out.headers().insert("Host", std::string(authority));
    out.set_uri(path);
  }
}

void Parser::take_response(ResponseHeader& out) {
  out.clear();
  out.set_status(status_);
  if (reason_len_) out.set_reason(std::string_view(raw_.data() + reason_off_, reason_len_));
  out.set_version(minor_ == 0 ? Version::Http10 : Version::Http11);
  hand_over_fields(out.headers());
}

namespace {
void append_version(Version v, std::string& out) {
  out.append(v == Version::Http10 ? "HTTP/1.0" : "HTTP/1.1");
}
void append_fields(const HeaderMap& h, std::string& out) {
  // One resize, then plain copies: four appends per field each checked the capacity.
  std::size_t n = 0;
  for (auto f : h) n += f.name.size() + f.value.size() + 4;
  const std::size_t at = out.size();
  out.resize(at + n);
  char* d = out.data() + at;
  for (auto f : h) {
    std::memcpy(d, f.name.data(), f.name.size());
    d += f.name.size();
    *d++ = ':';
    *d++ = ' ';
    std::memcpy(d, f.value.data(), f.value.size());
    d += f.value.size();
    *d++ = '\r';
    *d++ = '\n';
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
  return (n.size() == 2 && iequals(n, "te")) || is_connection_specific(n);
}

}  // namespace

void strip_hop_by_hop(HeaderMap& h) {
  // One pass removes the fields hop-by-hop by name and notes what else is needed. Fields named
  // by Connection are hop-by-hop too (RFC 9110 §7.6.1); most messages carry no Connection field
  // or only "keep-alive"/"close", so the common path allocates nothing. The values of removed
  // fields stay readable: remove_if and remove move no bytes of the map's buffer.
  bool te_trailers = false;
  std::vector<std::string_view> naming;  // Connection values that may name other fields
  const std::size_t removed = h.remove_if([&](const HeaderMap::Field& f) {
    if (!is_hop_by_hop(f.name)) return false;
    if (f.name.size() == 2)  // TE, re-added when it asked for trailers
      te_trailers = te_trailers ||
                    any_list_item(f.value, [](std::string_view i) { return iequals(i, "trailers"); });
    else if (f.name.size() == 10 && iequals(f.name, "connection") && !iequals(f.value, "close") &&
             !iequals(f.value, "keep-alive"))
      naming.push_back(f.value);
    return true;
  });
  if (removed == 0) return;
  for (std::string_view v : naming)
    any_list_item(v, [&h](std::string_view item) {
      if (!item.empty() && !iequals(item, "close") && !iequals(item, "keep-alive")) h.remove(item);
      return false;  // every item
    });
  if (te_trailers) h.append("TE", "trailers");
}

}  // namespace portico::http1
