// The conformance harness: a strict recording origin, a strict raw client reader, and run().
#include "conformance/harness.hpp"

#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>

#include <gtest/gtest.h>

#include "integration/helpers.hpp"

namespace conformance {

using namespace std::chrono_literals;
namespace pt = portico::testing;

namespace {

constexpr std::string_view kProbeTarget = "/__probe";
constexpr std::string_view kSentinel = "CONFORMANCE-SENTINEL\r\n";
constexpr std::size_t kMaxMessage = 16u << 20;
constexpr auto kIoTimeout = 5s;

bool iequal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return out;
}

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

bool is_tchar(unsigned char ch) {
  return std::isalnum(ch) ||
         std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(ch)) != std::string_view::npos;
}
bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char ch) {
    return is_tchar(static_cast<unsigned char>(ch));
  });
}
/// field-value: VCHAR, obs-text, SP and HTAB only.
bool is_field_value(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    auto ch = static_cast<unsigned char>(c);
    return ch == ' ' || ch == '\t' || (ch >= 0x21 && ch != 0x7f);
  });
}

std::size_t count_fields(const Fields& f, std::string_view name) {
  return static_cast<std::size_t>(
      std::count_if(f.begin(), f.end(), [&](const auto& kv) { return iequal(kv.first, name); }));
}
std::string joined(const Fields& f, std::string_view name) {
  std::string out;
  for (auto& [n, v] : f)
    if (iequal(n, name)) out += (out.empty() ? "" : ",") + v;
  return out;
}
std::vector<std::string> list_items(std::string_view v) {
  std::vector<std::string> out;
  for (;;) {
    auto comma = v.find(',');
    out.push_back(lower(trim(v.substr(0, comma))));
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
  return out;
}

std::string dump_fields(const Fields& f) {
  std::string out;
  for (auto& [n, v] : f) out += escape(n) + ": " + escape(v) + "\\r\\n";
  return out;
}

// ---------------------------------------------------------------------------------------------
// A buffered blocking reader over a socket whose receive timeout is set.

class Wire {
 public:
  enum class State : std::uint8_t { Open, Eof, Timeout, Error };
  explicit Wire(int fd) : fd_(fd) {}

  /// Reads more bytes; false once the connection ended (EOF, reset, timeout).
  bool fill() {
    if (state_ != State::Open) return false;
    if (buf_.size() > kMaxMessage) {
      state_ = State::Error;
      return false;
    }
    char tmp[16384];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n > 0) {
      buf_.append(tmp, static_cast<std::size_t>(n));
      return true;
    }
    if (n == 0)
      state_ = State::Eof;
    else if (errno == EAGAIN || errno == EWOULDBLOCK)
      state_ = State::Timeout;
    else if (errno == ECONNRESET)
      state_ = State::Eof;  // a reset after the data is an end too
    else
      state_ = State::Error;
    return false;
  }
  /// One line including its terminating LF; nullopt if the connection ended first.
  std::optional<std::string> line() {
    for (;;) {
      auto lf = buf_.find('\n');
      if (lf != std::string::npos) {
        std::string l = buf_.substr(0, lf + 1);
        buf_.erase(0, lf + 1);
        return l;
      }
      if (!fill()) return std::nullopt;
    }
  }
  std::optional<std::string> take(std::size_t n) {
    while (buf_.size() < n)
      if (!fill()) return std::nullopt;
    std::string out = buf_.substr(0, n);
    buf_.erase(0, n);
    return out;
  }
  /// Everything until the connection ends.
  std::string rest() {
    while (fill()) {
    }
    return std::exchange(buf_, {});
  }
  const std::string& pending() const { return buf_; }
  State state() const { return state_; }
  std::string state_name() const {
    switch (state_) {
      case State::Open:
        return "open";
      case State::Eof:
        return "closed";
      case State::Timeout:
        return "read timed out";
      case State::Error:
        return "read error";
    }
    return "?";
  }

 private:
  int fd_;
  std::string buf_;
  State state_ = State::Open;
};

enum class Outcome : std::uint8_t { Ok, Truncated, Malformed };
struct Status {
  Outcome outcome = Outcome::Ok;
  std::string why;
  static Status truncated(std::string w) { return {Outcome::Truncated, std::move(w)}; }
  static Status malformed(std::string w) { return {Outcome::Malformed, std::move(w)}; }
};

/// A line that must end in CRLF with no other CR or LF; `content` gets it without the CRLF.
std::optional<Status> read_crlf_line(Wire& w, std::string& content, std::string* raw,
                                     std::string_view what) {
  auto l = w.line();
  if (!l)
    return Status::truncated(std::string(what) + ": connection ended (" + w.state_name() + ")");
  if (raw) raw->append(*l);
  if (l->size() < 2 || (*l)[l->size() - 2] != '\r')
    return Status::malformed(std::string(what) + " ends in a bare LF: " + escape(*l));
  content = l->substr(0, l->size() - 2);
  if (content.find('\r') != std::string::npos)
    return Status::malformed(std::string(what) + " holds a bare CR: " + escape(*l));
  return std::nullopt;
}

/// Field lines up to the empty line, strictly (RFC 9112 §5).
Status read_fields(Wire& w, Fields& out, std::string* raw, std::string_view what) {
  for (std::size_t n = 0; n < 100000; ++n) {
    std::string l;
    if (auto st = read_crlf_line(w, l, raw, what)) return *st;
    if (l.empty()) return {};
    if (l.front() == ' ' || l.front() == '\t')
      return Status::malformed(std::string(what) + " has an obs-fold line: " + escape(l));
    auto colon = l.find(':');
    if (colon == std::string::npos)
      return Status::malformed(std::string(what) + " line without a colon: " + escape(l));
    std::string_view name = std::string_view(l).substr(0, colon);
    std::string_view value = trim(std::string_view(l).substr(colon + 1));
    if (!is_token(name))
      return Status::malformed(std::string(what) + " field name is not a token: " + escape(l));
    if (!is_field_value(value))
      return Status::malformed(std::string(what) + " field value has invalid bytes: " + escape(l));
    out.emplace_back(std::string(name), std::string(value));
  }
  return Status::malformed(std::string(what) + ": too many fields");
}

/// A chunked body, strictly: size lines of 1-16 hex digits, CRLF everywhere, then trailers.
Status read_chunked(Wire& w, std::string& body, Fields& trailers) {
  for (std::size_t n = 0; n < 1000000; ++n) {
    std::string l;
    if (auto st = read_crlf_line(w, l, nullptr, "chunk-size line")) return *st;
    std::string_view size = std::string_view(l).substr(0, l.find(';'));
    if (size.empty() || size.size() > 16 || !std::all_of(size.begin(), size.end(), [](char c) {
          return std::isxdigit(static_cast<unsigned char>(c));
        }))
      return Status::malformed("invalid chunk-size line: " + escape(l));
    std::uint64_t len = 0;
    std::from_chars(size.data(), size.data() + size.size(), len, 16);
    if (len == 0) return read_fields(w, trailers, nullptr, "trailer section");
    if (body.size() + len > kMaxMessage) return Status::malformed("chunked body too large");
    auto data = w.take(static_cast<std::size_t>(len));
    if (!data) return Status::truncated("chunk data: connection ended (" + w.state_name() + ")");
    body += *data;
    auto crlf = w.take(2);
    if (!crlf) return Status::truncated("chunk CRLF: connection ended (" + w.state_name() + ")");
    if (*crlf != "\r\n")
      return Status::malformed("chunk data not followed by CRLF: " + escape(*crlf));
  }
  return Status::malformed("too many chunks");
}

std::optional<std::uint64_t> parse_length(std::string_view v) {
  if (v.empty() || v.size() > 18 ||
      !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  std::uint64_t n = 0;
  std::from_chars(v.data(), v.data() + v.size(), n);
  return n;
}

// ---------------------------------------------------------------------------------------------
// The recording origin.

/// A request as the origin received it.
struct Received {
  std::string head;  // raw bytes of the request line and field lines
  std::string method, target, version;
  Fields headers;
  std::string body;
  Fields trailers;
  bool complete = false;
  bool malformed = false;
  std::string problem;
};

struct Recorder {
  std::mutex mu;
  std::vector<Received> got;
  itest::Latch done;      // one per origin connection whose function returned
  itest::Latch sentinel;  // the sentinel connection arrived
  void add(Received r) {
    std::lock_guard lk(mu);
    got.push_back(std::move(r));
  }
  std::vector<Received> snapshot() {
    std::lock_guard lk(mu);
    return got;
  }
};

std::string default_response(const Received& r) {
  std::string out =
      "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(r.target.size()) + "\r\n\r\n";
  if (r.method != "HEAD") out += r.target;
  return out;
}

/// Serves one origin connection: parses each request strictly, records it, answers it.
void serve(int fd, Recorder& rec, const std::string& custom) {
  timeval tv{static_cast<time_t>(kIoTimeout.count()), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  Wire w(fd);
  const bool custom_closes = lower(custom).find("connection: close") != std::string::npos;
  for (std::size_t k = 0; k < 1000; ++k) {
    Received r;
    auto finish = [&](Status st) {
      if (st.outcome == Outcome::Malformed) r.malformed = true;
      r.problem = std::move(st.why);
      rec.add(std::move(r));
    };
    // Request line. EOF before any byte is the clean end of a keep-alive connection.
    if (w.pending().empty() && !w.fill()) return;
    std::string line;
    if (auto st = read_crlf_line(w, line, &r.head, "request line")) return finish(*st);
    if (k == 0 && line + "\r\n" == kSentinel) {
      rec.sentinel.add();
      w.rest();
      return;
    }
    {
      auto sp1 = line.find(' ');
      auto sp2 = sp1 == std::string::npos ? sp1 : line.find(' ', sp1 + 1);
      if (sp2 == std::string::npos || line.find(' ', sp2 + 1) != std::string::npos)
        return finish(
            Status::malformed("request line is not METHOD SP target SP version: " + escape(line)));
      r.method = line.substr(0, sp1);
      r.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
      r.version = line.substr(sp2 + 1);
    }
    if (!is_token(r.method))
      return finish(Status::malformed("method is not a token: " + escape(line)));
    if (r.target.empty() || !std::all_of(r.target.begin(), r.target.end(), [](char c) {
          return static_cast<unsigned char>(c) > 0x20 && static_cast<unsigned char>(c) < 0x7f;
        }))
      return finish(Status::malformed("invalid request-target: " + escape(line)));
    if (r.version != "HTTP/1.1" && r.version != "HTTP/1.0")
      return finish(Status::malformed("invalid version: " + escape(line)));
    if (auto st = read_fields(w, r.headers, &r.head, "request header"); st.outcome != Outcome::Ok)
      return finish(st);
    // What a proxy must never forward (RFC 9112 §3.2, §6).
    const std::size_t hosts = count_fields(r.headers, "host");
    if (r.version == "HTTP/1.1" && hosts != 1)
      return finish(
          Status::malformed("HTTP/1.1 request with " + std::to_string(hosts) + " Host fields"));
    const std::size_t cls = count_fields(r.headers, "content-length");
    const std::size_t tes = count_fields(r.headers, "transfer-encoding");
    if (cls && tes) return finish(Status::malformed("both Content-Length and Transfer-Encoding"));
    if (cls > 1) return finish(Status::malformed("more than one Content-Length field"));
    bool chunked = false;
    std::uint64_t length = 0;
    if (tes) {
      if (list_items(joined(r.headers, "transfer-encoding")) != std::vector<std::string>{"chunked"})
        return finish(Status::malformed("forwarded Transfer-Encoding is not exactly \"chunked\": " +
                                        escape(joined(r.headers, "transfer-encoding"))));
      chunked = true;
    } else if (cls) {
      auto n = parse_length(joined(r.headers, "content-length"));
      if (!n)
        return finish(Status::malformed("invalid Content-Length: " +
                                        escape(joined(r.headers, "content-length"))));
      length = *n;
    }
    // A compliant origin answers "100 Continue" before reading an expected body.
    if ((chunked || length) && iequal(joined(r.headers, "expect"), "100-continue"))
      pt::write_all(fd, "HTTP/1.1 100 Continue\r\n\r\n");
    if (chunked) {
      if (auto st = read_chunked(w, r.body, r.trailers); st.outcome != Outcome::Ok)
        return finish(st);
    } else if (length) {
      if (length > kMaxMessage) return finish(Status::malformed("Content-Length too large"));
      auto b = w.take(static_cast<std::size_t>(length));
      if (!b) return finish(Status::truncated("body: connection ended (" + w.state_name() + ")"));
      r.body = std::move(*b);
    }
    r.complete = true;
    const bool probe = r.target == kProbeTarget;
    const std::string answer = custom.empty() || probe ? default_response(r) : custom;
    rec.add(std::move(r));
    if (!pt::write_all(fd, answer)) return;
    if (custom_closes && !probe) {
      ::shutdown(fd, SHUT_WR);
      w.rest();
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The client side: strict response reader.

struct Response {
  std::string head;
  std::string version;
  unsigned status = 0;
  Fields headers;
  std::string body;
  Fields trailers;
};

/// Reads one response; on failure returns the reason in `why`.
std::optional<Response> read_response(Wire& w, bool head_request, std::string& why) {
  Response r;
  std::string line;
  if (auto st = read_crlf_line(w, line, &r.head, "status line")) {
    why = st->why;
    return std::nullopt;
  }
  if (line.size() < 12 || !(line.starts_with("HTTP/1.1 ") || line.starts_with("HTTP/1.0 ")) ||
      !std::isdigit(static_cast<unsigned char>(line[9])) ||
      !std::isdigit(static_cast<unsigned char>(line[10])) ||
      !std::isdigit(static_cast<unsigned char>(line[11])) ||
      (line.size() > 12 && line[12] != ' ')) {
    why = "invalid status line: " + escape(line);
    return std::nullopt;
  }
  r.version = line.substr(0, 8);
  r.status = static_cast<unsigned>(std::stoi(line.substr(9, 3)));
  if (auto st = read_fields(w, r.headers, &r.head, "response header"); st.outcome != Outcome::Ok) {
    why = st.why;
    return std::nullopt;
  }
  const std::size_t cls = count_fields(r.headers, "content-length");
  const std::size_t tes = count_fields(r.headers, "transfer-encoding");
  if (cls && tes) {
    why = "response with both Content-Length and Transfer-Encoding: " + escape(r.head);
    return std::nullopt;
  }
  if (cls > 1) {
    why = "response with more than one Content-Length: " + escape(r.head);
    return std::nullopt;
  }
  const bool bodyless = head_request || r.status < 200 || r.status == 204 || r.status == 304;
  if (bodyless) return r;
  if (tes) {
    if (list_items(joined(r.headers, "transfer-encoding")) != std::vector<std::string>{"chunked"}) {
      why = "response Transfer-Encoding is not \"chunked\": " + escape(r.head);
      return std::nullopt;
    }
    if (auto st = read_chunked(w, r.body, r.trailers); st.outcome != Outcome::Ok) {
      why = "response body: " + st.why + " (head: " + escape(r.head) + ")";
      return std::nullopt;
    }
  } else if (cls) {
    auto n = parse_length(joined(r.headers, "content-length"));
    if (!n || *n > kMaxMessage) {
      why = "invalid response Content-Length: " + escape(r.head);
      return std::nullopt;
    }
    auto b = w.take(static_cast<std::size_t>(*n));
    if (!b) {
      why = "response body shorter than its Content-Length (" + w.state_name() +
            "): " + escape(r.head);
      return std::nullopt;
    }
    r.body = std::move(*b);
  } else {
    r.body = w.rest();
    if (w.state() != Wire::State::Eof) {
      why = "close-delimited response body did not end (" + w.state_name() + ")";
      return std::nullopt;
    }
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// Empty when the check holds, else why not.
std::string evaluate(const Check& c, const Fields& headers, const std::string& body,
                     const Fields& trailers, const Received* req) {
  using K = Check::Kind;
  switch (c.kind) {
    case K::Has:
      if (count_fields(headers, c.name) == 0) return "missing field " + c.name;
      return {};
    case K::Lacks:
      if (count_fields(headers, c.name) != 0)
        return "field " + c.name + " must be absent, got \"" + escape(joined(headers, c.name)) +
               "\"";
      return {};
    case K::Equals:
      if (count_fields(headers, c.name) != 1 || joined(headers, c.name) != c.value)
        return "field " + c.name + " must appear once as \"" + escape(c.value) + "\", got " +
               std::to_string(count_fields(headers, c.name)) + " field(s): \"" +
               escape(joined(headers, c.name)) + "\"";
      return {};
    case K::Body:
      if (body != c.value)
        return "body must be \"" + escape(c.value) + "\", got \"" + escape(body) + "\"";
      return {};
    case K::Method:
      if (!req || req->method != c.value)
        return "method must be " + c.value + ", got " + (req ? escape(req->method) : "?");
      return {};
    case K::Target:
      if (!req || req->target != c.value)
        return "target must be " + escape(c.value) + ", got " + (req ? escape(req->target) : "?");
      return {};
    case K::Order: {
      std::size_t at = 0;
      for (auto& [n, v] : headers)
        if (at < c.lines.size() && n + ": " + v == c.lines[at]) ++at;
      if (at != c.lines.size())
        return "fields must appear in this order with this case: \"" + escape(c.lines[at]) +
               "\" missing or out of order";
      return {};
    }
    case K::Trailer:
      if (count_fields(trailers, c.name) != 1 || joined(trailers, c.name) != c.value)
        return "trailer " + c.name + " must be \"" + escape(c.value) +
               "\", trailers: " + dump_fields(trailers);
      return {};
    case K::LacksTrailer:
      if (count_fields(trailers, c.name) != 0) return "trailer " + c.name + " must be absent";
      return {};
  }
  return "unknown check";
}

std::string describe(const std::vector<Received>& got) {
  std::ostringstream os;
  if (got.empty()) os << "  (nothing)\n";
  for (std::size_t i = 0; i < got.size(); ++i) {
    const auto& r = got[i];
    os << "  #" << i << (r.complete ? " complete" : r.malformed ? " MALFORMED" : " incomplete");
    if (!r.problem.empty()) os << " (" << r.problem << ")";
    os << ": " << escape(r.head);
    if (!r.body.empty()) os << " body \"" << escape(r.body.substr(0, 200)) << "\"";
    os << "\n";
  }
  return os.str();
}

/// CONFORMANCE_VERBOSE=1 prints what the client and the origin got in every case.
bool verbose() {
  static const bool v = std::getenv("CONFORMANCE_VERBOSE") != nullptr;
  return v;
}

}  // namespace

std::string escape(std::string_view bytes) {
  std::string out;
  for (char c : bytes) {
    auto ch = static_cast<unsigned char>(c);
    if (c == '\r')
      out += "\\r";
    else if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else if (c == '\\')
      out += "\\\\";
    else if (ch < 0x20 || ch >= 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", ch);
      out += b;
    } else {
      out += c;
    }
  }
  return out;
}

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name << " \"" << escape(c.send.substr(0, 300)) << (c.send.size() > 300 ? "..." : "")
      << "\"";
}

void run(const Case& c) {
  Recorder rec;
  pt::RawOrigin origin([&](int fd) {
    serve(fd, rec, c.origin_response);
    rec.done.add();
  });
  const std::string sent = escape(c.send.substr(0, 400));
  {
    portico::HttpServerOptions opts;
    if (c.limits.header_bytes) opts.max_header_bytes = c.limits.header_bytes;
    if (c.limits.header_count) opts.max_header_count = c.limits.header_count;
    if (c.limits.target_bytes) opts.max_request_target_bytes = c.limits.target_bytes;
    if (c.limits.response_header_bytes)
      opts.max_response_header_bytes = c.limits.response_header_bytes;
    pt::TestProxy px(std::make_shared<itest::Forward>(origin.addr()), opts);
    pt::Client client(px.port(), kIoTimeout);
    ASSERT_TRUE(client.connected());
    client.send(c.send);  // may fail part-way when the proxy rejects early; the reads tell
    Wire w(client.fd());
    bool in_sync = true;
    bool closed_silently = false;
    for (std::size_t i = 0; i < c.replies.size() && in_sync; ++i) {
      const Reply& want = c.replies[i];
      const bool silent_ok =
          std::find(want.statuses.begin(), want.statuses.end(), 0u) != want.statuses.end();
      if (silent_ok && w.pending().empty() && !w.fill() && w.state() == Wire::State::Eof) {
        if (verbose()) std::printf("  client: closed without a response\n");
        closed_silently = true;
        break;
      }
      std::string why;
      auto got = read_response(w, want.head_request, why);
      if (!got) {
        ADD_FAILURE() << "response #" << i << ": " << why << "\n  sent: " << sent;
        in_sync = false;
        break;
      }
      if (std::find(want.statuses.begin(), want.statuses.end(), got->status) ==
          want.statuses.end()) {
        std::string st;
        for (unsigned s : want.statuses) st += (st.empty() ? "" : " or ") + std::to_string(s);
        ADD_FAILURE() << "response #" << i << ": status must be " << st << ", got " << got->status
                      << "\n  response: " << escape(got->head) << escape(got->body.substr(0, 200))
                      << "\n  sent: " << sent;
        in_sync = false;  // the rest of the expectations assume that status
        break;
      }
      if (verbose())
        std::printf("  client got #%zu: %s%s\n", i, escape(got->head).c_str(),
                    escape(got->body.substr(0, 100)).c_str());
      for (const Check& ch : want.checks)
        if (auto e = evaluate(ch, got->headers, got->body, got->trailers, nullptr); !e.empty())
          ADD_FAILURE() << "response #" << i << ": " << e << "\n  response: " << escape(got->head);
      if (!want.then.empty()) client.send(want.then);
    }
    if (c.replies.empty() && in_sync) {
      std::string extra = w.rest();
      EXPECT_TRUE(extra.empty() && w.state() == Wire::State::Eof)
          << "the connection must close without a response; got " << w.state_name() << " after \""
          << escape(extra.substr(0, 300)) << "\"\n  sent: " << sent;
    } else if (in_sync && !closed_silently) {
      switch (c.after) {
        case After::Close: {
          std::string extra = w.rest();
          EXPECT_TRUE(extra.empty()) << "bytes after the last expected response: \""
                                     << escape(extra.substr(0, 300)) << "\"";
          EXPECT_EQ(w.state(), Wire::State::Eof)
              << "the proxy must close the connection, got: " << w.state_name();
          break;
        }
        case After::KeepAlive: {
          EXPECT_TRUE(w.pending().empty()) << "bytes after the last expected response: \""
                                           << escape(w.pending().substr(0, 300)) << "\"";
          if (!w.pending().empty()) break;
          client.send("GET " + std::string(kProbeTarget) + " HTTP/1.1\r\nHost: h\r\n\r\n");
          std::string why;
          auto probe = read_response(w, false, why);
          if (!probe)
            ADD_FAILURE()
                << "the connection must stay usable, but a probe request got no response: " << why;
          else
            EXPECT_TRUE(probe->status == 200 && probe->body == kProbeTarget)
                << "the connection must stay usable; a probe request got: " << escape(probe->head)
                << escape(probe->body.substr(0, 200));
          break;
        }
        case After::Any:
          break;
      }
    }
  }  // the proxy stops here and closes its upstream connections

  // Every connection the proxy opened was accepted before this one (the accept queue is FIFO),
  // so once the sentinel is seen, waiting for `connections()` handler exits is race-free.
  {
    pt::Client sentinel(origin.port(), kIoTimeout);
    ASSERT_TRUE(sentinel.connected());
    sentinel.send(kSentinel);
    ASSERT_TRUE(rec.sentinel.wait_for(1, 10s)) << "the origin never saw the sentinel connection";
  }
  const auto conns = static_cast<int>(origin.connections());
  ASSERT_TRUE(rec.done.wait_for(conns, 10s))
      << "an upstream connection stayed open after the proxy stopped";

  std::vector<Received> got = rec.snapshot();
  if (verbose()) std::printf("  origin got:\n%s", describe(got).c_str());
  std::vector<const Received*> complete;
  for (const Received& r : got) {
    if (r.malformed) {
      ADD_FAILURE() << "the origin received an invalid request: " << r.problem
                    << "\n  head: " << escape(r.head);
    } else if (!r.complete) {
      if (!c.partial_ok)
        ADD_FAILURE() << "the origin received an incomplete request (" << r.problem
                      << "): " << escape(r.head);
    } else if (r.target != kProbeTarget) {
      complete.push_back(&r);
    }
  }
  EXPECT_EQ(complete.size(), c.origin_requests)
      << "complete requests at the origin\n  sent: " << sent << "\n  origin got:\n"
      << describe(got);
  for (const Seen& s : c.seen) {
    if (s.index >= complete.size()) continue;  // already reported by the count
    const Received& r = *complete[s.index];
    for (const Check& ch : s.checks)
      if (auto e = evaluate(ch, r.headers, r.body, r.trailers, &r); !e.empty())
        ADD_FAILURE() << "origin request #" << s.index << ": " << e
                      << "\n  head: " << escape(r.head);
  }
}

}  // namespace conformance
