#include "http2/translate.hpp"

#include <array>
#include <charconv>
#include <cstring>

#include "http/chars.hpp"

namespace portico::h2 {

namespace {

// RFC 9110 §5.6.2 tchar, lowercase letters only (RFC 9113 §8.2.1).
constexpr std::array<bool, 256> make_name_table() {
  std::array<bool, 256> t{};
  for (int c = 'a'; c <= 'z'; ++c) t[static_cast<std::size_t>(c)] = true;
  for (int c = '0'; c <= '9'; ++c) t[static_cast<std::size_t>(c)] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}
constexpr auto kNameChar = make_name_table();

Error malformed(bool upstream, std::string_view why) {
  return upstream ? Error::upstream(ErrorType::InvalidH2, why)
                  : Error::downstream(ErrorType::InvalidH2, why);
}

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool has_upper(std::string_view s) noexcept {
  for (char c : s)
    if (c >= 'A' && c <= 'Z') return true;
  return false;
}

void append_lower(HeaderMap& out, std::string_view name, std::string_view value, bool sensitive) {
  if (!has_upper(name)) {
    out.append(name, value, sensitive);
    return;
  }
  char small[128];
  std::string big;
  char* n = small;
  if (name.size() > sizeof small) {
    big.resize(name.size());
    n = big.data();
  }
  to_lower_ascii(name, n);
  out.append(std::string_view(n, name.size()), value, sensitive);
}

/// The regular-field rules shared by requests, responses and trailers: why the field breaks them,
/// or null. `te_ok`: TE: trailers is allowed (requests only).
const char* field_problem(std::string_view name, std::string_view value, bool te_ok) noexcept {
  if (!valid_field_name(name))
    return has_upper(name) ? "uppercase field name" : "invalid field name";
  if (!valid_field_value(value)) return "invalid field value";
  if (is_connection_specific(name)) return "connection-specific field";
  if (name == "te" && !(te_ok && iequals(trim(value), "trailers"))) return "TE other than trailers";
  return nullptr;
}

/// The pseudo-header fields of a request (RFC 9113 §8.3.1), in a field list that passed
/// request_problem() or is being checked by it.
struct RequestPseudo {
  std::string_view method, scheme, authority, path;
  bool has_method = false, has_scheme = false, has_authority = false, has_path = false;
};

}  // namespace

bool for_each_h2_field(const HeaderMap& h, bool skip_host, bool split_cookies, FieldSink sink,
                       void* ctx) {
  // Fields named in Connection are hop-by-hop (RFC 9110 §7.6.1). Only a Connection field
  // naming more than the options every proxy knows (close, keep-alive) makes any of them so.
  const bool has_connection = h.any_token("connection", [](std::string_view item) {
    return !item.empty() && !iequals(item, "close") && !iequals(item, "keep-alive");
  });
  bool te_trailers = false;
  for (auto f : h) {
    if (f.name.empty() || f.name.front() == ':') continue;
    // The names looked for, told apart by length first: most fields are none of them.
    switch (f.name.size()) {
      case 2:
        if (iequals(f.name, "te")) {
          te_trailers = te_trailers || h.has_token("te", "trailers");
          continue;
        }
        break;
      case 4:
        if (skip_host && iequals(f.name, "host")) continue;
        break;
      default:
        if (is_connection_specific(f.name)) continue;
        break;
    }
    if (has_connection && h.has_token("connection", f.name)) continue;
    if (split_cookies && f.name.size() == 6 && iequals(f.name, "cookie")) {
      std::string_view v = f.value;
      while (!v.empty()) {
        auto semi = v.find(';');
        auto crumb = trim(v.substr(0, semi));
        if (!crumb.empty()) sink(ctx, "cookie", crumb, f.sensitive);
        if (semi == std::string_view::npos) break;
        v.remove_prefix(semi + 1);
      }
      continue;
    }
    sink(ctx, f.name, f.value, f.sensitive);
  }
  return te_trailers;
}

namespace {

/// Appends the regular fields of `h` for an HTTP/2 peer, lowercased. Returns whether TE listed
/// trailers.
bool copy_fields(const HeaderMap& h, HeaderMap& out, bool skip_host, bool split_cookies) {
  return for_each_h2_field(
      h, skip_host, split_cookies,
      [](void* o, std::string_view n, std::string_view v, bool sensitive) {
        append_lower(*static_cast<HeaderMap*>(o), n, v, sensitive);
      },
      &out);
}

/// The authority of an absolute-form target ("http://host:port/path"), else empty.
std::string_view absolute_authority(std::string_view target, std::string_view* path) {
  auto sep = target.find("://");
  if (sep == std::string_view::npos || target.front() == '/') return {};
  auto rest = target.substr(sep + 3);
  auto slash = rest.find_first_of("/?");
  if (path) *path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  return rest.substr(0, slash);
}

/// scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC 3986 §3.1).
bool valid_scheme(std::string_view s) noexcept {
  auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  if (s.empty() || !alpha(s[0])) return false;
  for (char c : s.substr(1))
    if (!alpha(c) && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.') return false;
  return true;
}

}  // namespace

bool valid_field_name(std::string_view name) noexcept {
  if (name.empty()) return false;
  for (char c : name)
    if (!kNameChar[static_cast<unsigned char>(c)]) return false;
  return true;
}

bool valid_field_value(std::string_view value) noexcept {
  if (value.empty()) return true;
  if (value.front() == ' ' || value.front() == '\t' || value.back() == ' ' || value.back() == '\t')
    return false;
  return http::chars::value_chars_ok(value.data(), value.size());
}

const char* request_problem(const HeaderMap& in, HeadSeen* seen) noexcept {
  RequestPseudo p;
  bool regular_seen = false, content_length = false;
  for (auto f : in) {
    if (!f.name.empty() && f.name.front() == ':') {
      if (regular_seen) return "pseudo-header field after a regular field";
      auto set = [&](bool& has, std::string_view& v) -> bool {
        if (has) return false;
        has = true;
        v = f.value;
        return true;
      };
      bool ok;
      if (f.name == ":method")
        ok = set(p.has_method, p.method);
      else if (f.name == ":scheme")
        ok = set(p.has_scheme, p.scheme);
      else if (f.name == ":authority")
        ok = set(p.has_authority, p.authority);
      else if (f.name == ":path")
        ok = set(p.has_path, p.path);
      else
        return "unknown or response pseudo-header field in a request";
      if (!ok) return "duplicated pseudo-header field";
      if (!valid_field_value(f.value)) return "invalid pseudo-header value";
      continue;
    }
    regular_seen = true;
    if (const char* why = field_problem(f.name, f.value, true)) return why;
    content_length = content_length || (f.name.size() == 14 && f.name == "content-length");
  }
  if (!p.has_method || p.method.empty()) return "missing :method";
  for (char c : p.method)
    if (!http::chars::is_tchar(c)) return "invalid :method";
  // What becomes the upstream's Host: host [":" port], as the HTTP/1 parser takes Host.
  if (p.has_authority && (p.authority.empty() || p.authority.find('@') != std::string_view::npos ||
                          !http::chars::valid_host(p.authority)))
    return "invalid :authority";
  if (p.has_scheme && !valid_scheme(p.scheme)) return "invalid :scheme";
  // What becomes the upstream's request-target: visible ASCII, no fragment (as HTTP/1 takes it).
  if (p.has_path && (!http::chars::target_chars_ok(p.path.data(), p.path.size()) ||
                     std::memchr(p.path.data(), '#', p.path.size())))
    return "invalid character in :path";
  if (p.method == "CONNECT") {
    if (p.has_scheme || p.has_path) return "CONNECT with :scheme or :path";
    if (!p.has_authority) return "CONNECT without :authority";
  } else {
    if (!p.has_scheme || p.scheme.empty()) return "missing :scheme";
    if (!p.has_path || p.path.empty()) return "missing or empty :path";
    if (p.path.front() != '/' && !(p.path == "*" && p.method == "OPTIONS")) return "invalid :path";
  }
  if (seen) {
    seen->content_length = content_length;
    seen->head = p.method == "HEAD";
  }
  return nullptr;
}

Result<void> to_request(const HeaderMap& in, RequestHeader& out, std::string* scheme,
                        bool checked) {
  HeaderMap copy = in;
  return take_request(copy, out, scheme, checked);
}

Result<void> take_request(HeaderMap& in, RequestHeader& out, std::string* scheme, bool checked) {
  if (!checked)
    if (const char* why = request_problem(in)) return malformed(false, why);
  RequestPseudo p;
  std::size_t cookies = 0, first_cookie = 0, authority_at = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const auto f = in[i];
    if (f.name.front() != ':') {
      if (f.name == "cookie" && cookies++ == 0) first_cookie = i;
      continue;
    }
    std::string_view n = f.name.substr(1);
    if (n == "method")
      p.method = f.value;
    else if (n == "scheme")
      p.scheme = f.value, p.has_scheme = true;
    else if (n == "authority")
      p.authority = f.value, p.has_authority = true, authority_at = i;
    else
      p.path = f.value;
  }
  const bool connect = p.method == "CONNECT";
  out.clear();
  out.set_version(Version::Http2);
  out.set_method(p.method);
  out.set_uri(connect ? p.authority : p.path);
  if (scheme) scheme->assign(connect ? std::string_view{} : p.scheme);
  // Edited in place, then handed over. The fields kept are told from those dropped by where
  // their values are (remove_if moves no byte): ":authority" becomes the Host field, in front
  // of the regular ones, and the crumbs of a split cookie one field where the first was.
  const char* host_value = nullptr;
  if (p.has_authority) {
    in.replace(authority_at, "host", p.authority);
    host_value = in[authority_at].value.data();
  }
  const char* cookie_value = nullptr;
  if (cookies > 1) {
    std::string joined;
    bool joined_sensitive = false;  // one never-indexed crumb makes the joined field so
    for (auto f : in) {
      if (f.name != "cookie") continue;
      if (!joined.empty()) joined.append("; ");
      joined.append(f.value);
      joined_sensitive = joined_sensitive || f.sensitive;
    }
    in.replace(first_cookie, "cookie", joined, joined_sensitive);
    cookie_value = in[first_cookie].value.data();
  }
  in.remove_if([&](const HeaderMap::Field& f) {
    if (f.name.front() == ':') return true;
    if (host_value && f.name == "host") return f.value.data() != host_value;
    if (cookie_value && f.name == "cookie") return f.value.data() != cookie_value;
    return false;
  });
  std::swap(out.headers(), in);
  return {};
}

const char* response_problem(const HeaderMap& in, std::uint16_t& code, HeadSeen* seen) noexcept {
  std::string_view status;
  bool has_status = false, regular_seen = false, content_length = false;
  for (auto f : in) {
    if (!f.name.empty() && f.name.front() == ':') {
      if (regular_seen) return "pseudo-header field after a regular field";
      if (f.name != ":status") return "unknown or request pseudo-header field";
      if (has_status) return "duplicated :status";
      has_status = true;
      status = f.value;
      continue;
    }
    regular_seen = true;
    if (const char* why = field_problem(f.name, f.value, false)) return why;
    content_length = content_length || (f.name.size() == 14 && f.name == "content-length");
  }
  if (!has_status) return "missing :status";
  code = 0;
  auto [p, ec] = std::from_chars(status.data(), status.data() + status.size(), code);
  if (status.size() != 3 || ec != std::errc{} || p != status.data() + 3 || code < 100)
    return "invalid :status";
  if (code == 101) return "101 in HTTP/2";
  if (seen) seen->content_length = content_length;
  return nullptr;
}

const char* trailers_problem(const HeaderMap& in) noexcept {
  for (auto f : in) {
    if (!f.name.empty() && f.name.front() == ':') return "pseudo-header field in trailers";
    if (const char* why = field_problem(f.name, f.value, false)) return why;
  }
  return nullptr;
}

Result<void> take_response(HeaderMap& in, ResponseHeader& out, bool checked) {
  std::uint16_t code = 0;
  if (!checked) {
    if (const char* why = response_problem(in, code)) return malformed(true, why);
  } else if (auto st = in.size() ? in[0] : HeaderMap::Field{}; st.name == ":status") {
    // Checked: ":status" comes first and holds three digits.
    std::from_chars(st.value.data(), st.value.data() + st.value.size(), code);
  }
  out.clear();
  out.set_status(code);
  out.set_version(Version::Http2);
  // The received list becomes the head; `in` keeps the memory of the head it replaces. Dropping
  // ":status" moves no byte (its bytes stay unused in the buffer).
  std::swap(out.headers(), in);
  out.headers().remove_if([](const HeaderMap::Field& f) { return f.name.front() == ':'; });
  return {};
}

Result<void> to_trailers(const HeaderMap& in, HeaderMap& out, bool from_upstream) {
  if (const char* why = trailers_problem(in)) return malformed(from_upstream, why);
  for (auto f : in) out.append(f.name, f.value, f.sensitive);
  return {};
}

void for_each_request_field(const RequestHeader& r, std::string_view scheme, bool split_cookies,
                            FieldSink sink, void* ctx) {
  std::string_view path = r.uri();
  std::string_view authority = r.host();
  std::string_view abs_path;
  auto abs = absolute_authority(path, &abs_path);
  if (!abs.empty()) {
    if (authority.empty()) authority = abs;
    path = abs_path;
  }
  sink(ctx, ":method", r.method(), false);
  if (iequals(r.method(), "CONNECT")) {
    sink(ctx, ":authority", authority.empty() ? r.uri() : authority, false);
  } else {
    sink(ctx, ":scheme", scheme, false);
    if (!authority.empty()) sink(ctx, ":authority", authority, false);
    sink(ctx, ":path", path.empty() ? std::string_view("/") : path, false);
  }
  if (for_each_h2_field(r.headers(), true, split_cookies, sink, ctx))
    sink(ctx, "te", "trailers", false);
}

void from_request(const RequestHeader& r, HeaderMap& out, std::string_view scheme,
                  bool split_cookies) {
  out.reserve(r.headers().size() + 4, r.headers().byte_size() + r.uri().size() + 64);
  for_each_request_field(
      r, scheme, split_cookies,
      [](void* o, std::string_view n, std::string_view v, bool sensitive) {
        append_lower(*static_cast<HeaderMap*>(o), n, v, sensitive);
      },
      &out);
}

bool status_expressible(std::uint16_t status) noexcept {
  return status != 101 && status >= 100 && status <= 999;
}

Result<void> from_response(const ResponseHeader& r, HeaderMap& out) {
  if (!status_expressible(r.status()))
    return Error::internal(ErrorType::H2Error, "status not expressible in HTTP/2");
  char buf[4];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, r.status());
  (void)ec;
  out.reserve(r.headers().size() + 1, r.headers().byte_size() + 16);
  out.append(":status", std::string_view(buf, static_cast<std::size_t>(p - buf)));
  copy_fields(r.headers(), out, false, false);
  return {};
}

void from_trailers(const HeaderMap& in, HeaderMap& out) { copy_fields(in, out, false, false); }

Result<ContentLength> ContentLength::from_fields(const HeaderMap& h, bool no_body,
                                                 bool from_upstream) {
  ContentLength cl;
  cl.no_body_ = no_body;
  for (auto f : h) {
    if (f.name.size() != 14 || !iequals(f.name, "content-length")) continue;
    // A list of identical values is accepted (RFC 9110 §8.6), anything else is not.
    std::string_view v = f.value;
    while (true) {
      auto comma = v.find(',');
      auto item = trim(v.substr(0, comma));
      std::int64_t n = -1;
      auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), n);
      if (item.empty() || ec != std::errc{} || p != item.data() + item.size() || n < 0 ||
          (cl.expected_ >= 0 && cl.expected_ != n))
        return malformed(from_upstream, "invalid content-length");
      cl.expected_ = n;
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  return cl;
}

bool ContentLength::fits(std::uint64_t n) const noexcept {
  if (no_body_) return n == 0;
  return expected_ < 0 || received_ + n <= static_cast<std::uint64_t>(expected_);
}

bool ContentLength::add(std::uint64_t n) noexcept {
  bool ok = fits(n);
  received_ += n;
  return ok;
}

bool ContentLength::complete() const noexcept {
  if (no_body_) return received_ == 0;
  return expected_ < 0 || received_ == static_cast<std::uint64_t>(expected_);
}

}  // namespace portico::h2
