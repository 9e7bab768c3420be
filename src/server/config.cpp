#include <portico/server/config.hpp>

#include <arpa/inet.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <concepts>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <tuple>
#include <utility>

#include <yaml-cpp/yaml.h>

#include <portico/observe/access_log.hpp>
#include <portico/proxy/service.hpp>
#include <portico/server/server.hpp>

#include "core/log.hpp"
#include "tls/tls.hpp"

namespace portico {

std::string_view to_string(LogLevel l) noexcept {
  switch (l) {
    case LogLevel::Trace:
      return "trace";
    case LogLevel::Debug:
      return "debug";
    case LogLevel::Info:
      return "info";
    case LogLevel::Warn:
      return "warn";
    case LogLevel::Error:
      return "error";
    case LogLevel::Critical:
      return "critical";
    case LogLevel::Off:
      return "off";
  }
  return "info";
}

namespace {

using ms = std::chrono::milliseconds;
using seconds = std::chrono::seconds;

// The same bound as the example binaries' *-ms flags: a day.
constexpr std::uint64_t kMaxMs = 86'400'000;
constexpr std::uint64_t kMaxSeconds = 7 * 86'400;
constexpr std::uint64_t kMaxThreads = 1024;
constexpr std::uint64_t kUnbounded = std::numeric_limits<std::uint64_t>::max();

Error config_error(std::string message) {
  return Error::internal(ErrorType::InternalError, message);
}

// ---- problems, positions, messages -------------------------------------------------------------

/// Collects every problem of one document; the error lists them in file order.
class Reader {
 public:
  explicit Reader(std::string name) : name_(std::move(name)) {}

  void fail(const YAML::Mark& m, std::string what) {
    const bool known = !m.is_null() && m.line >= 0;
    problems_.push_back({known ? m.line + 1 : 0, known ? m.column + 1 : 0, std::move(what)});
  }
  /// "conf.yaml:12:5".
  std::string where(const YAML::Mark& m) const {
    if (m.is_null() || m.line < 0) return name_;
    return name_ + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
  }
  bool ok() const noexcept { return problems_.empty(); }
  const std::string& name() const noexcept { return name_; }

  Error error() const {
    auto sorted = problems_;
    std::stable_sort(sorted.begin(), sorted.end(), [](const Problem& a, const Problem& b) {
      return std::pair(a.line, a.column) < std::pair(b.line, b.column);
    });
    std::string text;
    for (const auto& p : sorted) {
      if (!text.empty()) text += '\n';
      text += name_;
      if (p.line > 0) text += ":" + std::to_string(p.line) + ":" + std::to_string(p.column);
      text += ": " + p.what;
    }
    return config_error(std::move(text));
  }

 private:
  struct Problem {
    int line;
    int column;
    std::string what;
  };
  std::string name_;
  std::vector<Problem> problems_;
};

std::string quoted(std::string_view s) {
  constexpr std::size_t kMax = 60;
  std::string out = "\"";
  for (char c : s.substr(0, kMax)) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += c == '\n' ? "\\n" : c == '\t' ? "\\t" : "?";
      continue;
    }
    out += c;
  }
  if (s.size() > kMax) out += "...";
  return out + "\"";
}

/// How a value is named in "must be X, got Y".
std::string got(const YAML::Node& v) {
  switch (v.Type()) {
    case YAML::NodeType::Scalar:
      return quoted(v.Scalar());
    case YAML::NodeType::Sequence:
      return v.size() == 0 ? "an empty list" : "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    default:
      return "nothing";
  }
}

/// Optimal string alignment distance: edits, with a swap of neighbours counting as one.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// ---- one mapping of the document ---------------------------------------------------------------

/// A key of a mapping with its value and its full name ("timeouts.header_read_ms").
struct Field {
  std::string name;
  YAML::Node key;
  YAML::Node value;
  /// Where a problem with the value is reported: the value, or the key when there is none.
  YAML::Mark mark() const { return value.IsNull() ? key.Mark() : value.Mark(); }
};

/// A mapping being read. Each take() names a key the mapping may have; finish() reports the
/// keys nobody took, with the closest known key as a suggestion. Duplicates are reported as
/// soon as the mapping is opened; the first occurrence is the one read.
class Section {
 public:
  Section(Reader& r, const YAML::Node& map, std::string path) : r_(r), path_(std::move(path)) {
    std::map<std::string, int, std::less<>> first_line;
    for (auto it = map.begin(); it != map.end(); ++it) {
      // By value: yaml-cpp's iterator hands out a temporary pair, and `it->first` dies with it.
      const YAML::Node k = it->first;
      const YAML::Node v = it->second;
      if (!k.IsScalar()) {
        r_.fail(k.Mark(), "keys must be plain names, got " + got(k) + " in " + context());
        continue;
      }
      const std::string& name = k.Scalar();
      if (auto seen = first_line.find(name); seen != first_line.end()) {
        r_.fail(k.Mark(), "duplicate key '" + qualify(name) + "' (first at line " +
                              std::to_string(seen->second) + ")");
        continue;
      }
      first_line.emplace(name, k.Mark().line + 1);
      entries_.push_back({name, k, v, false});
    }
  }
  Section(const Section&) = delete;
  Section& operator=(const Section&) = delete;

  std::string qualify(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }
  const std::string& path() const noexcept { return path_; }
  Reader& reader() noexcept { return r_; }

  std::optional<Field> take(std::string_view key) {
    known_.emplace_back(key);
    for (auto& e : entries_) {
      if (e.name == key) {
        e.taken = true;
        return Field{qualify(key), e.key, e.value};
      }
    }
    return std::nullopt;
  }

  void finish() {
    for (const auto& e : entries_) {
      if (e.taken) continue;
      std::string msg = "unknown key '" + qualify(e.name) + "'";
      const std::string wrong = lower(e.name);
      std::string_view best;
      std::size_t best_d = std::max<std::size_t>(1, e.name.size() / 3) + 1;
      for (const auto& k : known_) {
        const std::size_t d = edit_distance(wrong, k);
        if (d < best_d) best_d = d, best = k;
      }
      if (!best.empty()) msg += " (did you mean '" + qualify(best) + "'?)";
      r_.fail(e.key.Mark(), std::move(msg));
    }
  }

 private:
  std::string context() const { return path_.empty() ? "the configuration" : "'" + path_ + "'"; }

  struct Entry {
    std::string name;
    YAML::Node key;
    YAML::Node value;
    bool taken;
  };
  Reader& r_;
  std::string path_;
  std::vector<Entry> entries_;
  std::vector<std::string> known_;
};

// ---- scalar readers: each reports its own problem and leaves `out` as it was on failure ------

void must_be(Reader& r, const Field& f, std::string_view what) {
  r.fail(f.mark(), "'" + f.name + "' must be " + std::string(what) + ", got " + got(f.value));
}

bool read_uint(Reader& r, const Field& f, std::uint64_t min, std::uint64_t max,
               std::uint64_t& out) {
  const std::string_view what = min == 0 ? "a non-negative integer" : "a positive integer";
  if (!f.value.IsScalar()) return must_be(r, f, what), false;
  const std::string& s = f.value.Scalar();
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || s[0] == '+' || ec == std::errc::invalid_argument || end != s.data() + s.size())
    return must_be(r, f, what), false;
  if (ec == std::errc::result_out_of_range || v > max) {
    r.fail(f.mark(),
           "'" + f.name + "' must be at most " + std::to_string(max) + ", got " + got(f.value));
    return false;
  }
  if (v < min) return must_be(r, f, what), false;
  out = v;
  return true;
}

template <class T>
void get_uint(Section& s, std::string_view key, T& out, std::uint64_t min = 0,
              std::uint64_t max = kUnbounded) {
  auto f = s.take(key);
  if (!f) return;
  max = std::min<std::uint64_t>(max, static_cast<std::uint64_t>(std::numeric_limits<T>::max()));
  std::uint64_t v = 0;
  if (read_uint(s.reader(), *f, min, max, v)) out = static_cast<T>(v);
}

/// Pingora's optional integers: null or absent leave them unset.
void get_opt_uint(Section& s, std::string_view key, std::optional<std::size_t>& out,
                  std::uint64_t min = 0) {
  auto f = s.take(key);
  if (!f || f->value.IsNull()) return;
  std::uint64_t v = 0;
  if (read_uint(s.reader(), *f, min, kUnbounded, v)) out = static_cast<std::size_t>(v);
}

template <class Duration>
void get_duration(Section& s, std::string_view key, Duration& out, bool allow_zero,
                  std::uint64_t max) {
  auto f = s.take(key);
  if (!f) return;
  std::uint64_t v = 0;
  if (read_uint(s.reader(), *f, allow_zero ? 0 : 1, max, v))
    out = Duration(static_cast<typename Duration::rep>(v));
}

void get_bool(Section& s, std::string_view key, bool& out) {
  auto f = s.take(key);
  if (!f) return;
  const std::string v = f->value.IsScalar() ? f->value.Scalar() : std::string();
  if (f->value.IsScalar() && (v == "true" || v == "True" || v == "TRUE"))
    out = true;
  else if (f->value.IsScalar() && (v == "false" || v == "False" || v == "FALSE"))
    out = false;
  else
    must_be(s.reader(), *f, "true or false");
}

/// A string; `nullable` keys (Pingora's optional strings) also take null, meaning empty.
void get_string(Section& s, std::string_view key, std::string& out, bool nullable = false,
                bool allow_empty = true) {
  auto f = s.take(key);
  if (!f) return;
  if (nullable && f->value.IsNull()) {
    out.clear();
    return;
  }
  if (!f->value.IsScalar() || (!allow_empty && f->value.Scalar().empty()))
    return must_be(s.reader(), *f, allow_empty ? "a string" : "a non-empty string");
  out = f->value.Scalar();
}

template <class E>
using Names = std::initializer_list<std::pair<std::string_view, E>>;

template <class E>
bool read_enum(Reader& r, const Field& f, E& out, Names<E> names) {
  if (f.value.IsScalar()) {
    for (const auto& [name, value] : names) {
      if (f.value.Scalar() == name) {
        out = value;
        return true;
      }
    }
  }
  std::string what = "one of ";
  for (auto it = names.begin(); it != names.end(); ++it)
    what += std::string(it == names.begin() ? "" : ", ") + std::string(it->first);
  must_be(r, f, what);
  return false;
}

template <class E>
void get_enum(Section& s, std::string_view key, E& out, Names<E> names) {
  if (auto f = s.take(key)) read_enum(s.reader(), *f, out, names);
}

/// A list of strings, each checked by `valid`; `what` names a valid list, `what_each` an element.
template <class Valid>
void get_string_list(Section& s, std::string_view key, std::vector<std::string>& out,
                     std::string_view what, std::string_view what_each, Valid valid,
                     bool allow_empty_list = true) {
  auto f = s.take(key);
  if (!f) return;
  Reader& r = s.reader();
  if (!f->value.IsSequence() || (!allow_empty_list && f->value.size() == 0))
    return must_be(r, *f, what);
  std::vector<std::string> v;
  bool good = true;
  for (std::size_t i = 0; i < f->value.size(); ++i) {
    const YAML::Node item = f->value[i];
    if (!item.IsScalar() || !valid(item.Scalar())) {
      r.fail(item.Mark(), "'" + f->name + "[" + std::to_string(i) + "]' must be " +
                              std::string(what_each) + ", got " + got(item));
      good = false;
      continue;
    }
    v.push_back(item.Scalar());
  }
  if (good) out = std::move(v);
}

bool is_ip(const std::string& s, int family) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(family, s.c_str(), buf) == 1;
}

// ---- sections ----------------------------------------------------------------------------------

void read_limits(Section& s, HttpServerOptions& o) {
  get_uint(s, "max_header_bytes", o.max_header_bytes, 1);
  get_uint(s, "max_header_count", o.max_header_count, 1);
  get_uint(s, "max_request_target_bytes", o.max_request_target_bytes, 1);
  get_uint(s, "max_response_header_bytes", o.max_response_header_bytes, 1);
  get_uint(s, "max_response_header_count", o.max_response_header_count, 1);
  get_uint(s, "body_buffer_bytes", o.body_buffer_bytes, 1);
  get_uint(s, "splice_min_body_bytes", o.splice_min_body_bytes);
  get_uint(s, "retry_buffer_bytes", o.retry_buffer_bytes);
  get_uint(s, "keepalive_request_limit", o.keepalive_request_limit);
  get_uint(s, "upstream_request_limit", o.upstream_request_limit);
  get_uint(s, "pool_max_idle_total", o.pool_max_idle_total);
}

void read_timeouts(Section& s, HttpServerOptions& o) {
  get_duration(s, "header_read_ms", o.header_read_timeout, false, kMaxMs);
  get_duration(s, "keepalive_ms", o.keepalive_timeout, false, kMaxMs);
  get_duration(s, "keepalive_park_ms", o.keepalive_park_after, true, kMaxMs);
  get_duration(s, "body_read_ms", o.body_read_timeout, false, kMaxMs);
  get_duration(s, "write_ms", o.write_timeout, false, kMaxMs);
  get_duration(s, "request_ms", o.request_timeout, true, kMaxMs);
  get_duration(s, "tunnel_idle_ms", o.tunnel_idle_timeout, false, kMaxMs);
  get_duration(s, "pool_steal_ms", o.pool_steal_timeout, true, kMaxMs);
}

/// Reads the mapping in `f` with `read` when it is one.
template <class Read>
void section(Reader& r, const std::optional<Field>& f, Read read) {
  if (!f) return;
  if (!f->value.IsMap()) return must_be(r, *f, "a mapping");
  Section s(r, f->value, f->name);
  read(s);
  s.finish();
}

/// A certificate and its key; `at` is where a missing one is reported.
void read_pair(Reader& r, const std::optional<Field>& cert, const std::optional<Field>& key,
               const std::string& path, const YAML::Mark& at, TlsSettings::Files& out) {
  for (auto [f, name, value] :
       {std::tuple{&cert, "cert_file", &out.cert_file}, {&key, "key_file", &out.key_file}}) {
    if (!*f)
      r.fail(at, "'" + path + "." + name + "' is required");
    else if (!(*f)->value.IsScalar() || (*f)->value.Scalar().empty())
      must_be(r, **f, "a file name");
    else
      *value = (*f)->value.Scalar();
  }
}

/// A `tls:` block; `at` is where "no certificate" is reported.
void read_tls(Section& s, const YAML::Mark& at, TlsSettings& t) {
  Reader& r = s.reader();
  auto certs = s.take("certificates");
  auto cert = s.take("cert_file");
  auto key = s.take("key_file");
  if (certs && (cert || key)) {
    const Field& f = cert ? *cert : *key;
    r.fail(f.key.Mark(), "'" + f.name + "' and '" + certs->name +
                             "' cannot both be set: list every pair under 'certificates'");
  } else if (certs) {
    if (!certs->value.IsSequence() || certs->value.size() == 0)
      must_be(r, *certs, "a list of {cert_file, key_file} pairs");
    for (std::size_t i = 0; certs->value.IsSequence() && i < certs->value.size(); ++i) {
      const YAML::Node item = certs->value[i];
      const std::string name = certs->name + "[" + std::to_string(i) + "]";
      if (!item.IsMap()) {
        r.fail(
            item.Mark(),
            "'" + name + "' must be a mapping with 'cert_file' and 'key_file', got " + got(item));
        continue;
      }
      Section c(r, item, name);
      TlsSettings::Files files;
      auto item_cert = c.take("cert_file");
      auto item_key = c.take("key_file");
      read_pair(r, item_cert, item_key, name, item.Mark(), files);
      c.finish();
      t.certificates.push_back(std::move(files));
    }
  } else if (cert || key) {
    // Shorthand for a single pair: cert_file and key_file in the tls block itself.
    TlsSettings::Files files;
    read_pair(r, cert, key, s.path(), (cert ? cert : key)->key.Mark(), files);
    t.certificates.push_back(std::move(files));
  } else {
    r.fail(at,
           "'" + s.path() + "' needs a certificate: 'cert_file' and 'key_file', or 'certificates'");
  }

  get_string(s, "ca_file", t.client_ca_file, true);
  auto auth = s.take("client_auth");
  if (auth)
    read_enum(r, *auth, t.client_auth,
              {{"none", ClientAuth::None},
               {"optional", ClientAuth::Optional},
               {"required", ClientAuth::Required}});
  auto min = s.take("min_version");
  auto max = s.take("max_version");
  for (auto [f, out] : {std::pair{&min, &t.min_version}, {&max, &t.max_version}}) {
    if (*f)
      read_enum(r, **f, *out,
                {{"1.2", TlsVersion::Tls12},
                 {"1.3", TlsVersion::Tls13},
                 {"TLSv1.2", TlsVersion::Tls12},
                 {"TLSv1.3", TlsVersion::Tls13}});
  }
  get_string_list(
      s, "alpn", t.alpn, "a non-empty list of protocol names", "a protocol name of 1 to 255 bytes",
      [](const std::string& p) { return !p.empty() && p.size() <= 255; }, false);
  get_string(s, "ciphers", t.ciphers);
  get_string(s, "ciphersuites", t.ciphersuites);
  get_bool(s, "session_tickets", t.session_tickets);
  get_duration(s, "ticket_key_rotation_ms", t.ticket_key_rotation, false, kMaxMs);
  get_uint(s, "session_cache_size", t.session_cache_size);
  get_duration(s, "session_lifetime_ms", t.session_lifetime, false, kMaxMs);
  get_duration(s, "handshake_timeout_ms", t.handshake_timeout, false, kMaxMs);

  if (auth && t.client_auth != ClientAuth::None && t.client_ca_file.empty())
    r.fail(auth->value.Mark(), "'" + auth->name + ": " + auth->value.Scalar() + "' needs '" +
                                   s.qualify("ca_file") +
                                   "', the CA client certificates must chain to");
  if (min && max && t.min_version > t.max_version)
    r.fail(min->value.Mark(), "'" + min->name + "' is above '" + max->name + "'");
}

/// "must be a literal IP:port..." or empty when `text` is a listening address.
std::string address_problem(const std::string& text) {
  if (SocketAddr::parse(text)) return {};
  const auto colon = text.rfind(':');
  if (!text.starts_with("unix:") && colon != std::string::npos) {
    const std::string port = text.substr(colon + 1);
    if (!port.empty() && port.size() < 10 &&
        std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
        std::stoul(port) > 65535)
      return "a port in 0..65535";
  }
  return "an IP:port address (\"127.0.0.1:6188\", \"[::1]:6188\") or \"unix:/path\"";
}

void read_listeners(Reader& r, const std::optional<Field>& f, std::vector<ListenerConfig>& out) {
  if (!f) return;
  if (!f->value.IsSequence()) return must_be(r, *f, "a list of listeners");
  std::map<std::string, std::size_t> seen;
  for (std::size_t i = 0; i < f->value.size(); ++i) {
    const YAML::Node item = f->value[i];
    const std::string name = "listeners[" + std::to_string(i) + "]";
    if (!item.IsMap()) {
      r.fail(item.Mark(), "'" + name + "' must be a mapping with an 'address', got " + got(item));
      continue;
    }
    Section s(r, item, name);
    ListenerConfig l;
    l.origin = r.where(item.Mark());
    if (auto a = s.take("address")) {
      if (!a->value.IsScalar()) {
        must_be(r, *a, "an IP:port address or \"unix:/path\"");
      } else if (auto problem = address_problem(a->value.Scalar()); !problem.empty()) {
        must_be(r, *a, problem);
      } else {
        l.address = a->value.Scalar();
        auto parsed = SocketAddr::parse(l.address);
        // Several listeners may ask for port 0: each gets its own free port.
        if (parsed->is_unix() || parsed->port() != 0) {
          auto [it, fresh] = seen.emplace(parsed->to_string(), i);
          if (!fresh)
            r.fail(a->value.Mark(), "'" + a->name + "' " + quoted(l.address) +
                                        " is already used by 'listeners[" +
                                        std::to_string(it->second) + "]'");
        }
      }
    } else {
      r.fail(item.Mark(), "'" + name + ".address' is required");
    }
    get_bool(s, "h2c", l.h2c);
    get_bool(s, "proxy_protocol", l.proxy_protocol);
    auto tls = s.take("tls");
    section(r, tls, [&](Section& ts) {
      TlsSettings t;
      read_tls(ts, tls->key.Mark(), t);
      l.tls = std::move(t);
    });
    if (l.tls && l.h2c)
      r.fail(item.Mark(),
             "'" + name +
                 ".h2c' is for cleartext listeners; a TLS listener offers h2 with 'tls.alpn'");
    s.finish();
    out.push_back(std::move(l));
  }
}

void read_access_log(Reader& r, const std::optional<Field>& f, AccessLogConfig& out) {
  if (!f) return;
  if (f->value.IsScalar()) {  // shorthand: just the path
    out.path = f->value.Scalar();
    return;
  }
  section(r, f, [&](Section& s) {
    get_string(s, "path", out.path);
    get_string(s, "format", out.format);
  });
}

void read_document(Reader& r, const YAML::Node& root, ServerConfig& c) {
  Section s(r, root, "");
  // Pingora's keys.
  if (auto v = s.take("version")) {
    std::uint64_t n = 0;
    if (read_uint(r, *v, 0, kUnbounded, n) && n != 1)
      r.fail(v->mark(), "'version' must be 1 (the format portico reads), got " + got(v->value));
  }
  get_bool(s, "daemon", c.daemon);
  get_string(s, "error_log", c.error_log, true);
  get_string(s, "pid_file", c.pid_file, false, false);
  get_string(s, "upgrade_sock", c.upgrade_sock, false, false);
  get_string(s, "user", c.user, true);
  get_string(s, "group", c.group, true);
  get_string(s, "working_directory", c.working_directory, true);
  get_uint(s, "threads", c.threads, 1, kMaxThreads);
  get_uint(s, "listener_tasks_per_fd", c.listener_tasks_per_fd, 1);
  get_bool(s, "work_stealing", c.work_stealing);
  get_string(s, "ca_file", c.ca_file, true);
  get_opt_uint(s, "s2n_config_cache_size", c.s2n_config_cache_size);
  get_duration(s, "grace_period_seconds", c.grace_period, true, kMaxSeconds);
  get_duration(s, "graceful_shutdown_timeout_seconds", c.graceful_shutdown_timeout, true,
               kMaxSeconds);
  get_string_list(s, "client_bind_to_ipv4", c.client_bind_to_ipv4, "a list of IPv4 addresses",
                  "an IPv4 address", [](const std::string& a) { return is_ip(a, AF_INET); });
  get_string_list(s, "client_bind_to_ipv6", c.client_bind_to_ipv6, "a list of IPv6 addresses",
                  "an IPv6 address", [](const std::string& a) { return is_ip(a, AF_INET6); });
  get_uint(s, "upstream_keepalive_pool_size", c.http.pool_max_idle_per_key);
  auto pools = s.take("upstream_connect_offload_threadpools");
  auto per_pool = s.take("upstream_connect_offload_thread_per_pool");
  for (auto [f, out] : {std::pair{&pools, &c.upstream_connect_offload_threadpools},
                        {&per_pool, &c.upstream_connect_offload_thread_per_pool}}) {
    std::uint64_t n = 0;
    if (*f && !(*f)->value.IsNull() && read_uint(r, **f, 1, kUnbounded, n)) *out = n;
  }
  if (c.upstream_connect_offload_threadpools.has_value() !=
      c.upstream_connect_offload_thread_per_pool.has_value()) {
    const Field& set = c.upstream_connect_offload_threadpools ? *pools : *per_pool;
    const char* other = c.upstream_connect_offload_threadpools
                            ? "upstream_connect_offload_thread_per_pool"
                            : "upstream_connect_offload_threadpools";
    r.fail(set.key.Mark(), "'" + set.name + "' needs '" + other + "' too");
  }
  get_bool(s, "upstream_debug_ssl_keylog", c.upstream_debug_ssl_keylog);
  get_uint(s, "max_retries", c.http.max_retries);
  get_opt_uint(s, "upgrade_sock_connect_accept_max_retries",
               c.upgrade_sock_connect_accept_max_retries);
  get_opt_uint(s, "max_blocking_threads", c.max_blocking_threads, 1);
  if (auto f = s.take("blocking_threads_ttl_seconds"); f && !f->value.IsNull()) {
    std::uint64_t n = 0;
    if (read_uint(r, *f, 0, kMaxSeconds, n)) c.blocking_threads_ttl = seconds(n);
  }
  get_bool(s, "daemon_wait_for_ready", c.daemon_wait_for_ready);
  get_duration(s, "daemon_ready_timeout_seconds", c.daemon_ready_timeout, false, kMaxSeconds);
  get_duration(s, "daemon_notify_timeout_seconds", c.daemon_notify_timeout, false, kMaxSeconds);

  // portico's keys.
  get_uint(s, "backlog", c.backlog, 1, 1u << 20);
  get_duration(s, "defer_accept_seconds", c.defer_accept, true, 3600);
  get_enum(s, "log_level", c.log_level,
           {{"trace", LogLevel::Trace},
            {"debug", LogLevel::Debug},
            {"info", LogLevel::Info},
            {"warn", LogLevel::Warn},
            {"error", LogLevel::Error},
            {"critical", LogLevel::Critical},
            {"off", LogLevel::Off}});
  read_access_log(r, s.take("access_log"), c.access_log);
  get_bool(s, "allow_connect_method", c.http.allow_connect_method);
  get_bool(s, "pool_cross_worker", c.http.pool_cross_worker);
  get_bool(s, "batch_upstream_sends", c.http.batch_upstream_sends);
  get_bool(s, "batch_response_sends", c.http.batch_response_sends);
  section(r, s.take("limits"), [&](Section& l) { read_limits(l, c.http); });
  section(r, s.take("timeouts"), [&](Section& t) { read_timeouts(t, c.http); });
  read_listeners(r, s.take("listeners"), c.listeners);
  s.finish();
}

// ---- keys as text, for diffs and warnings ------------------------------------------------------

std::string text(bool v) { return v ? "true" : "false"; }
template <std::integral T>
std::string text(T v) {
  return std::to_string(v);
}
std::string text(const std::string& v) { return v; }
std::string text(ms v) { return std::to_string(v.count()); }
std::string text(seconds v) { return std::to_string(v.count()); }
std::string text(LogLevel v) { return std::string(to_string(v)); }
std::string text(TlsVersion v) { return v == TlsVersion::Tls12 ? "1.2" : "1.3"; }
std::string text(ClientAuth v) {
  return v == ClientAuth::None ? "none" : v == ClientAuth::Optional ? "optional" : "required";
}
template <class T>
std::string text(const std::optional<T>& v) {
  return v ? text(*v) : std::string();
}
std::string text(const std::vector<std::string>& v) {
  std::string out = "[";
  for (const auto& s : v) out += (out.size() > 1 ? ", " : "") + s;
  return out + "]";
}
std::string text(const std::vector<TlsSettings::Files>& v) {
  std::string out = "[";
  for (const auto& f : v) out += (out.size() > 1 ? ", " : "") + f.cert_file + " " + f.key_file;
  return out + "]";
}

class Entries {
 public:
  static constexpr bool kReload = true, kRestart = false, kEffect = true, kNoEffect = false;

  template <class T>
  void add(std::string key, const T& value, const T& fallback, bool reloadable, bool effective) {
    std::string v = text(value);
    const bool is_default = v == text(fallback);
    out.push_back({std::move(key), std::move(v), is_default, reloadable, effective});
  }
  std::vector<ConfigEntry> out;
};

std::vector<std::string> keys_where(const std::vector<ConfigEntry>& a,
                                    const std::vector<ConfigEntry>& b, bool only_non_reloadable) {
  std::map<std::string_view, const ConfigEntry*> before;
  for (const auto& e : a) before.emplace(e.key, &e);
  std::vector<std::string> out;
  for (const auto& e : b) {
    auto it = before.find(e.key);
    const bool changed = it == before.end() || it->second->value != e.value;
    if (it != before.end()) before.erase(it);
    if (changed && (!only_non_reloadable || !e.reloadable)) out.push_back(e.key);
  }
  for (const auto& [key, e] : before)  // keys gone in `b`
    if (!only_non_reloadable || !e->reloadable) out.emplace_back(key);
  return out;
}

Result<ServerConfig> parse(std::string_view yaml, std::string name) {
  Reader r(std::move(name));
  try {
    std::vector<YAML::Node> docs = YAML::LoadAll(std::string(yaml));
    ServerConfig c;
    c.source = r.name();
    if (docs.size() > 1) r.fail(docs[1].Mark(), "only one YAML document is allowed");
    if (!docs.empty() && !docs[0].IsNull()) {
      if (!docs[0].IsMap())
        r.fail(docs[0].Mark(),
               "the configuration must be a mapping of keys to values, got " + got(docs[0]));
      else
        read_document(r, docs[0], c);
    }
    if (!r.ok()) return r.error();
    return c;
  } catch (const YAML::Exception& e) {
    r.fail(e.mark, e.msg);
    return r.error();
  } catch (const std::exception& e) {
    return config_error(r.name() + ": " + e.what());
  } catch (...) {
    return config_error(r.name() + ": unexpected error while reading the configuration");
  }
}

Error at(const std::string& origin, const Error& e) {
  const std::string why =
      e.context().empty() ? std::string(to_string(e.type())) : std::string(e.context());
  return Error::internal(e.type(), origin + ": " + why);
}

}  // namespace

Result<ServerConfig> load_config_string(std::string_view yaml, std::string_view name) {
  return parse(yaml, std::string(name));
}

Result<ServerConfig> load_config_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f)
    return config_error("cannot read configuration file '" + path + "': " + std::strerror(errno));
  std::string text;
  char buf[8192];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  const int err = std::ferror(f) ? errno : 0;
  std::fclose(f);
  if (err != 0)
    return config_error("cannot read configuration file '" + path + "': " + std::strerror(err));
  return parse(text, path);
}

Result<void> verify_config(const ServerConfig& cfg) {
  try {
    for (std::size_t i = 0; i < cfg.listeners.size(); ++i) {
      const ListenerConfig& l = cfg.listeners[i];
      const std::string origin =
          l.origin.empty() ? "listeners[" + std::to_string(i) + "]" : l.origin;
      auto addr = SocketAddr::parse(l.address);
      if (!addr || !addr->is_ip())
        return config_error(
            origin + ": " + quoted(l.address) +
            ": only IP:port listeners can be served yet (no Unix listening sockets)");
      if (l.tls) {
        auto tls = detail::ServerTls::create(*l.tls);
        if (!tls) return at(origin, tls.error());
      }
    }
    if (!cfg.ca_file.empty()) {
      std::FILE* f = std::fopen(cfg.ca_file.c_str(), "rb");
      if (!f) return config_error("'ca_file' " + quoted(cfg.ca_file) + ": " + std::strerror(errno));
      std::fclose(f);
    }
    return ok();
  } catch (const std::exception& e) {
    return config_error(std::string("verifying the configuration: ") + e.what());
  }
}

ServerConf to_server_conf(const ServerConfig& cfg) {
  ServerConf c;
  c.threads = cfg.threads;
  c.grace_period = std::chrono::duration_cast<ms>(cfg.grace_period);
  c.graceful_shutdown_timeout = std::chrono::duration_cast<ms>(cfg.graceful_shutdown_timeout);
  c.backlog = cfg.backlog;
  c.defer_accept = cfg.defer_accept;
  c.upgrade_sock = cfg.upgrade_sock;
  if (cfg.upgrade_sock_connect_accept_max_retries)
    c.upgrade_retries = *cfg.upgrade_sock_connect_accept_max_retries;
  c.daemon = cfg.daemon;
  c.pid_file = cfg.pid_file;
  c.working_directory = cfg.working_directory;
  c.daemon_ready_timeout = cfg.daemon_ready_timeout;
  c.error_log = cfg.error_log;
  c.user = cfg.user;
  c.group = cfg.group;
  c.config = std::make_shared<const ServerConfig>(cfg);
  return c;
}

HttpServerOptions to_http_server_options(const ServerConfig& cfg) { return cfg.http; }

PeerOptions default_peer_options(const ServerConfig& cfg) {
  PeerOptions o;
  o.ca_file = cfg.ca_file;
  return o;
}

Result<void> add_listeners(Service& svc, const ServerConfig& cfg) {
  for (std::size_t i = 0; i < cfg.listeners.size(); ++i) {
    const ListenerConfig& l = cfg.listeners[i];
    ListenerOptions lo;
    lo.proxy_protocol = l.proxy_protocol;
    lo.h2c = l.h2c;
    auto r = l.tls ? svc.add_tls(l.address, *l.tls, lo) : svc.add_tcp(l.address, lo);
    if (!r)
      return at(l.origin.empty() ? "listeners[" + std::to_string(i) + "]" : l.origin, r.error());
  }
  return ok();
}

Result<void> configure_service(HttpProxyService& svc, const ServerConfig& cfg) {
  if (auto r = add_listeners(svc, cfg); !r) return r;
  auto log = observe::open_access_log(cfg.access_log);
  if (!log) return at("access_log", log.error());
  if (*log) svc.set_access_log(std::move(*log));
  return ok();
}

void apply_logging(const ServerConfig& cfg) {
  static constexpr spdlog::level::level_enum kLevels[] = {
      spdlog::level::trace, spdlog::level::debug,    spdlog::level::info, spdlog::level::warn,
      spdlog::level::err,   spdlog::level::critical, spdlog::level::off};
  log::error_log().set_level(kLevels[static_cast<std::size_t>(cfg.log_level)]);
}

std::vector<ConfigEntry> config_entries(const ServerConfig& c) {
  const ServerConfig d;
  Entries e;
  constexpr bool R = Entries::kReload, X = Entries::kRestart, E = Entries::kEffect,
                 N = Entries::kNoEffect;
  e.add("version", c.version, d.version, R, E);
  e.add("daemon", c.daemon, d.daemon, X, E);
  e.add("error_log", c.error_log, d.error_log, R, E);
  e.add("pid_file", c.pid_file, d.pid_file, X, E);
  e.add("upgrade_sock", c.upgrade_sock, d.upgrade_sock, X, E);
  e.add("user", c.user, d.user, X, E);
  e.add("group", c.group, d.group, X, E);
  e.add("working_directory", c.working_directory, d.working_directory, X, E);
  e.add("threads", c.threads, d.threads, X, E);
  e.add("listener_tasks_per_fd", c.listener_tasks_per_fd, d.listener_tasks_per_fd, X, N);
  e.add("work_stealing", c.work_stealing, d.work_stealing, X, N);
  e.add("ca_file", c.ca_file, d.ca_file, R, E);
  e.add("s2n_config_cache_size", c.s2n_config_cache_size, d.s2n_config_cache_size, R, N);
  e.add("grace_period_seconds", c.grace_period, d.grace_period, R, E);
  e.add("graceful_shutdown_timeout_seconds", c.graceful_shutdown_timeout,
        d.graceful_shutdown_timeout, R, E);
  e.add("client_bind_to_ipv4", c.client_bind_to_ipv4, d.client_bind_to_ipv4, R, N);
  e.add("client_bind_to_ipv6", c.client_bind_to_ipv6, d.client_bind_to_ipv6, R, N);
  e.add("upstream_keepalive_pool_size", c.http.pool_max_idle_per_key, d.http.pool_max_idle_per_key,
        R, E);
  e.add("upstream_connect_offload_threadpools", c.upstream_connect_offload_threadpools,
        d.upstream_connect_offload_threadpools, X, N);
  e.add("upstream_connect_offload_thread_per_pool", c.upstream_connect_offload_thread_per_pool,
        d.upstream_connect_offload_thread_per_pool, X, N);
  e.add("upstream_debug_ssl_keylog", c.upstream_debug_ssl_keylog, d.upstream_debug_ssl_keylog, R,
        N);
  e.add("max_retries", c.http.max_retries, d.http.max_retries, R, E);
  e.add("upgrade_sock_connect_accept_max_retries", c.upgrade_sock_connect_accept_max_retries,
        d.upgrade_sock_connect_accept_max_retries, X, E);
  e.add("max_blocking_threads", c.max_blocking_threads, d.max_blocking_threads, X, N);
  e.add("blocking_threads_ttl_seconds", c.blocking_threads_ttl, d.blocking_threads_ttl, X, N);
  e.add("daemon_wait_for_ready", c.daemon_wait_for_ready, d.daemon_wait_for_ready, X, N);
  e.add("daemon_ready_timeout_seconds", c.daemon_ready_timeout, d.daemon_ready_timeout, X, E);
  e.add("daemon_notify_timeout_seconds", c.daemon_notify_timeout, d.daemon_notify_timeout, X, N);

  e.add("backlog", c.backlog, d.backlog, X, E);
  e.add("defer_accept_seconds", c.defer_accept, d.defer_accept, X, E);
  e.add("log_level", c.log_level, d.log_level, R, E);
  e.add("access_log.path", c.access_log.path, d.access_log.path, X, E);
  e.add("access_log.format", c.access_log.format, d.access_log.format, X, E);
  e.add("allow_connect_method", c.http.allow_connect_method, d.http.allow_connect_method, R, E);
  e.add("pool_cross_worker", c.http.pool_cross_worker, d.http.pool_cross_worker, X, E);
  e.add("batch_upstream_sends", c.http.batch_upstream_sends, d.http.batch_upstream_sends, X, E);
  e.add("batch_response_sends", c.http.batch_response_sends, d.http.batch_response_sends, X, E);

  const HttpServerOptions& h = c.http;
  const HttpServerOptions& hd = d.http;
  e.add("limits.max_header_bytes", h.max_header_bytes, hd.max_header_bytes, R, E);
  e.add("limits.max_header_count", h.max_header_count, hd.max_header_count, R, E);
  e.add("limits.max_request_target_bytes", h.max_request_target_bytes, hd.max_request_target_bytes,
        R, E);
  e.add("limits.max_response_header_bytes", h.max_response_header_bytes,
        hd.max_response_header_bytes, R, E);
  e.add("limits.max_response_header_count", h.max_response_header_count,
        hd.max_response_header_count, R, E);
  e.add("limits.body_buffer_bytes", h.body_buffer_bytes, hd.body_buffer_bytes, R, E);
  e.add("limits.splice_min_body_bytes", h.splice_min_body_bytes, hd.splice_min_body_bytes, R, E);
  e.add("limits.retry_buffer_bytes", h.retry_buffer_bytes, hd.retry_buffer_bytes, R, E);
  e.add("limits.keepalive_request_limit", h.keepalive_request_limit, hd.keepalive_request_limit, R,
        E);
  e.add("limits.upstream_request_limit", h.upstream_request_limit, hd.upstream_request_limit, R, E);
  e.add("limits.pool_max_idle_total", h.pool_max_idle_total, hd.pool_max_idle_total, R, E);
  e.add("timeouts.header_read_ms", h.header_read_timeout, hd.header_read_timeout, R, E);
  e.add("timeouts.keepalive_ms", h.keepalive_timeout, hd.keepalive_timeout, R, E);
  e.add("timeouts.keepalive_park_ms", h.keepalive_park_after, hd.keepalive_park_after, R, E);
  e.add("timeouts.body_read_ms", h.body_read_timeout, hd.body_read_timeout, R, E);
  e.add("timeouts.write_ms", h.write_timeout, hd.write_timeout, R, E);
  e.add("timeouts.request_ms", h.request_timeout, hd.request_timeout, R, E);
  e.add("timeouts.tunnel_idle_ms", h.tunnel_idle_timeout, hd.tunnel_idle_timeout, R, E);
  e.add("timeouts.pool_steal_ms", h.pool_steal_timeout, hd.pool_steal_timeout, R, E);

  const ListenerConfig dl;
  const TlsSettings dt;
  for (std::size_t i = 0; i < c.listeners.size(); ++i) {
    const ListenerConfig& l = c.listeners[i];
    const std::string p = "listeners[" + std::to_string(i) + "].";
    e.add(p + "address", l.address, dl.address, X, E);
    e.add(p + "h2c", l.h2c, dl.h2c, X, E);
    e.add(p + "proxy_protocol", l.proxy_protocol, dl.proxy_protocol, X, E);
    e.add(p + "tls", l.tls.has_value(), false, X, E);
    if (!l.tls) continue;
    const TlsSettings& t = *l.tls;
    e.add(p + "tls.certificates", t.certificates, dt.certificates, R, E);
    e.add(p + "tls.ca_file", t.client_ca_file, dt.client_ca_file, R, E);
    e.add(p + "tls.client_auth", t.client_auth, dt.client_auth, R, E);
    e.add(p + "tls.min_version", t.min_version, dt.min_version, R, E);
    e.add(p + "tls.max_version", t.max_version, dt.max_version, R, E);
    e.add(p + "tls.alpn", t.alpn, dt.alpn, R, E);
    e.add(p + "tls.ciphers", t.ciphers, dt.ciphers, R, E);
    e.add(p + "tls.ciphersuites", t.ciphersuites, dt.ciphersuites, R, E);
    e.add(p + "tls.session_tickets", t.session_tickets, dt.session_tickets, R, E);
    e.add(p + "tls.ticket_key_rotation_ms", t.ticket_key_rotation, dt.ticket_key_rotation, R, E);
    e.add(p + "tls.session_cache_size", t.session_cache_size, dt.session_cache_size, R, E);
    e.add(p + "tls.session_lifetime_ms", t.session_lifetime, dt.session_lifetime, R, E);
    e.add(p + "tls.handshake_timeout_ms", t.handshake_timeout, dt.handshake_timeout, R, E);
  }
  return std::move(e.out);
}

std::vector<std::string> changed_keys(const ServerConfig& before, const ServerConfig& after) {
  return keys_where(config_entries(before), config_entries(after), false);
}

std::vector<std::string> non_reloadable_changes(const ServerConfig& before,
                                                const ServerConfig& after) {
  return keys_where(config_entries(before), config_entries(after), true);
}

std::vector<std::string> ineffective_keys(const ServerConfig& cfg) {
  std::vector<std::string> out;
  for (auto& e : config_entries(cfg))
    if (!e.effective && !e.is_default) out.push_back(std::move(e.key));
  return out;
}

}  // namespace portico
