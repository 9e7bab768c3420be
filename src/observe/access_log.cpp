#include <portico/observe/access_log.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include <portico/proxy/session.hpp>

#include "core/log.hpp"

namespace portico::observe {

namespace {

std::atomic<std::uint64_t> g_reopen_generation{0};
std::atomic<std::uint64_t> g_next_log_id{1};

enum class Var : std::uint8_t {
  Literal,
  TimeIso8601,
  Msec,
  RemoteAddr,
  RemotePort,
  ServerAddr,
  ServerPort,
  Method,
  Path,
  Args,
  RequestUri,
  Request,
  ServerProtocol,
  Scheme,
  Host,
  Status,
  BytesSent,
  BodyBytesSent,
  BodyBytesReceived,
  RequestTime,
  UpstreamAddr,
  UpstreamConnectTime,
  UpstreamHeaderTime,
  UpstreamReused,
  Error,
  ErrorSource,
  Retries,
  Service,
  ConnectionRequests,
  SslProtocol,
  SslCipher,
  SslServerName,
  SslSessionReused,
  HttpHeader,
};

struct NamedVar {
  std::string_view name;
  Var var;
};

constexpr NamedVar kVars[] = {
    {"time_iso8601", Var::TimeIso8601},
    {"msec", Var::Msec},
    {"remote_addr", Var::RemoteAddr},
    {"remote_port", Var::RemotePort},
    {"server_addr", Var::ServerAddr},
    {"server_port", Var::ServerPort},
    {"method", Var::Method},
    {"request_method", Var::Method},
    {"path", Var::Path},
    {"uri", Var::Path},
    {"args", Var::Args},
    {"query_string", Var::Args},
    {"request_uri", Var::RequestUri},
    {"request", Var::Request},
    {"server_protocol", Var::ServerProtocol},
    {"scheme", Var::Scheme},
    {"host", Var::Host},
    {"status", Var::Status},
    {"bytes_sent", Var::BytesSent},
    {"body_bytes_sent", Var::BodyBytesSent},
    {"body_bytes_received", Var::BodyBytesReceived},
    {"request_time", Var::RequestTime},
    {"upstream_addr", Var::UpstreamAddr},
    {"upstream_connect_time", Var::UpstreamConnectTime},
    {"upstream_header_time", Var::UpstreamHeaderTime},
    {"upstream_reused", Var::UpstreamReused},
    {"error", Var::Error},
    {"error_source", Var::ErrorSource},
    {"retries", Var::Retries},
    {"service", Var::Service},
    {"connection_requests", Var::ConnectionRequests},
    {"ssl_protocol", Var::SslProtocol},
    {"ssl_cipher", Var::SslCipher},
    {"ssl_server_name", Var::SslServerName},
    {"ssl_session_reused", Var::SslSessionReused},
};

struct Segment {
  Var var;
  std::string text;  // the literal, or the header name of $http_*
};

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

Result<std::vector<Segment>> parse_format(std::string_view f) {
  std::vector<Segment> out;
  std::string lit;
  auto flush_literal = [&] {
    if (!lit.empty()) out.push_back({Var::Literal, std::move(lit)});
    lit.clear();
  };
  for (std::size_t i = 0; i < f.size();) {
    if (f[i] != '$') {
      lit += f[i++];
      continue;
    }
    std::string_view name;
    std::size_t next;
    if (i + 1 < f.size() && f[i + 1] == '{') {
      const std::size_t close = f.find('}', i + 2);
      if (close == std::string_view::npos)
        return Error::internal(ErrorType::InternalError,
                               "access log format: unterminated ${ at offset " + std::to_string(i));
      name = f.substr(i + 2, close - i - 2);
      next = close + 1;
    } else {
      std::size_t j = i + 1;
      while (j < f.size() && name_char(f[j])) ++j;
      name = f.substr(i + 1, j - i - 1);
      next = j;
    }
    if (name.empty()) {  // a lone '$' is text
      lit += '$';
      i = next == i + 1 ? i + 1 : next;
      continue;
    }
    flush_literal();
    if (name.starts_with("http_") && name.size() > 5) {
      std::string header(name.substr(5));
      std::replace(header.begin(), header.end(), '_', '-');
      out.push_back({Var::HttpHeader, std::move(header)});
    } else {
      const auto it = std::find_if(std::begin(kVars), std::end(kVars),
                                   [&](const NamedVar& v) { return v.name == name; });
      if (it == std::end(kVars))
        return Error::internal(ErrorType::InternalError,
                               "access log format: unknown variable $" + std::string(name));
      out.push_back({it->var, {}});
    }
    i = next;
  }
  flush_literal();
  return out;
}

// -- formatting helpers ------------------------------------------------------------------------

void append_u64(std::string& out, std::uint64_t v) {
  char b[24];
  auto r = std::to_chars(b, b + sizeof b, v);
  out.append(b, r.ptr);
}

/// nginx's escaping of logged values: `"`, `\`, control and non-ASCII bytes become \xHH.
void append_escaped(std::string& out, std::string_view v) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (unsigned char c : v) {
    if (c == '"' || c == '\\' || c < 0x20 || c >= 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
}

void append_or_dash(std::string& out, std::string_view v) {
  if (v.empty())
    out += '-';
  else
    append_escaped(out, v);
}

/// Seconds with millisecond resolution, "0.012".
void append_seconds(std::string& out, std::chrono::nanoseconds d) {
  if (d.count() < 0) d = {};
  const auto ms = static_cast<std::uint64_t>(d.count() / 1'000'000);
  append_u64(out, ms / 1000);
  out += '.';
  const auto frac = static_cast<unsigned>(ms % 1000);
  out += static_cast<char>('0' + frac / 100);
  out += static_cast<char>('0' + frac / 10 % 10);
  out += static_cast<char>('0' + frac % 10);
}

void append_addr(std::string& out, const SocketAddr& a, bool host, bool port) {
  if (a.empty()) {
    out += '-';
    return;
  }
  char b[INET6_ADDRSTRLEN];
  switch (a.family()) {
    case AF_INET: {
      const auto* in = reinterpret_cast<const sockaddr_in*>(a.data());
      if (host && inet_ntop(AF_INET, &in->sin_addr, b, sizeof b)) out += b;
      if (host && port) out += ':';
      if (port) append_u64(out, ntohs(in->sin_port));
      return;
    }
    case AF_INET6: {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(a.data());
      if (host && port) out += '[';
      if (host && inet_ntop(AF_INET6, &in6->sin6_addr, b, sizeof b)) out += b;
      if (host && port) out += "]:";
      if (port) append_u64(out, ntohs(in6->sin6_port));
      return;
    }
    case AF_UNIX: {
      if (!host) {
        out += '-';
        return;
      }
      const auto* un = reinterpret_cast<const sockaddr_un*>(a.data());
      const std::size_t max = a.size() > offsetof(sockaddr_un, sun_path)
                                  ? a.size() - offsetof(sockaddr_un, sun_path)
                                  : 0;
      out += "unix:";
      out.append(un->sun_path, strnlen(un->sun_path, std::min(max, sizeof un->sun_path)));
      return;
    }
    default:
      out += '-';
  }
}

std::string_view protocol_name(Version v) {
  switch (v) {
    case Version::Http10: return "HTTP/1.0";
    case Version::Http11: return "HTTP/1.1";
    case Version::Http2: return "HTTP/2.0";
  }
  return "-";
}

/// "2026-11-26T10:00:00+00:00" (UTC), recomputed once a second per thread.
void append_iso8601(std::string& out, std::time_t now) {
  thread_local std::time_t last = -1;
  thread_local char text[32];
  thread_local std::size_t len = 0;
  if (now != last) {
    std::tm t{};
    gmtime_r(&now, &t);
    len = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S+00:00", &t);
    last = now;
  }
  out.append(text, len);
}

/// A thread's queue of formatted lines: a byte ring with one producer (the thread) and one
/// consumer (the writer). head and tail only grow; the ring index is their value modulo cap.
struct Ring {
  explicit Ring(std::size_t c) : buf(new char[c]), cap(c) {}
  std::unique_ptr<char[]> buf;
  const std::size_t cap;
  alignas(64) std::atomic<std::uint64_t> head{0};
  std::atomic<std::uint64_t> queued{0};
  std::atomic<std::uint64_t> dropped{0};
  std::atomic<bool> woke{false};
  alignas(64) std::atomic<std::uint64_t> tail{0};
};

}  // namespace

struct AccessLog::Impl {
  AccessLogOptions opts;
  std::vector<Segment> segments;
  bool needs_wall_clock = false;
  const std::uint64_t id = g_next_log_id.fetch_add(1, std::memory_order_relaxed);
  int fd = -1;
  bool own_fd = false;

  std::mutex mu;
  std::condition_variable cv;       // wakes the writer
  std::condition_variable done_cv;  // a writer cycle ended
  std::vector<std::unique_ptr<Ring>> rings;  // under mu; never shrinks
  std::uint64_t cycles = 0;                  // under mu
  std::uint64_t flush_until = 0;             // under mu: run cycles until this many
  bool stop = false;                         // under mu
  std::atomic<bool> wake{false};
  std::atomic<bool> reopen_requested{false};
  std::uint64_t seen_generation = g_reopen_generation.load(std::memory_order_acquire);
  std::atomic<std::uint64_t> write_errors{0};
  std::atomic<std::uint64_t> unqueued{0};  // lines lost before reaching a ring (no memory)
  std::thread writer;

  ~Impl() {
    if (own_fd && fd >= 0) ::close(fd);
  }

  Ring* ring() noexcept {
    thread_local std::vector<std::pair<std::uint64_t, Ring*>> mine;
    for (const auto& [log, r] : mine)
      if (log == id) return r;
    try {
      auto r = std::make_unique<Ring>(opts.buffer_bytes);
      Ring* p = r.get();
      {
        std::lock_guard lk(mu);
        rings.push_back(std::move(r));
      }
      mine.emplace_back(id, p);
      return p;
    } catch (...) {
      return nullptr;
    }
  }

  void enqueue(std::string_view line) noexcept {
    Ring* r = ring();
    if (!r) {
      unqueued.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    const std::uint64_t h = r->head.load(std::memory_order_relaxed);
    const std::uint64_t t = r->tail.load(std::memory_order_acquire);
    const std::size_t n = line.size();
    if (n > r->cap - (h - t)) {
      r->dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    const std::size_t pos = h % r->cap;
    const std::size_t first = std::min(n, r->cap - pos);
    std::memcpy(r->buf.get() + pos, line.data(), first);
    std::memcpy(r->buf.get(), line.data() + first, n - first);
    r->head.store(h + n, std::memory_order_release);
    r->queued.fetch_add(1, std::memory_order_relaxed);
    if (opts.wake_bytes && h + n - t >= opts.wake_bytes &&
        !r->woke.exchange(true, std::memory_order_relaxed)) {
      // Once per fill: no lock here, so a wake racing the writer's wait may wait for the
      // interval instead.
      wake.store(true, std::memory_order_release);
      cv.notify_one();
    }
  }

  void write_all(iovec* iov, int cnt) noexcept {
    while (cnt > 0) {
      const ssize_t w = ::writev(fd, iov, cnt);
      if (w < 0) {
        if (errno == EINTR) continue;
        write_errors.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      auto left = static_cast<std::size_t>(w);
      while (cnt > 0 && left >= iov->iov_len) {
        left -= iov->iov_len;
        ++iov;
        --cnt;
      }
      if (cnt > 0) {
        iov->iov_base = static_cast<char*>(iov->iov_base) + left;
        iov->iov_len -= left;
      }
    }
  }

  void maybe_reopen() noexcept {
    const std::uint64_t g = g_reopen_generation.load(std::memory_order_acquire);
    const bool asked = reopen_requested.exchange(false, std::memory_order_acq_rel);
    if (g == seen_generation && !asked) return;
    seen_generation = g;
    if (!own_fd) return;
    const int nfd = ::open(opts.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (nfd < 0) {
      log::error_log().error("access log: cannot reopen {}: {}", opts.path, std::strerror(errno));
      return;
    }
    ::close(fd);
    fd = nfd;
  }

  void drain(const std::vector<Ring*>& rs) noexcept {
    for (Ring* r : rs) {
      const std::uint64_t t = r->tail.load(std::memory_order_relaxed);
      const std::uint64_t h = r->head.load(std::memory_order_acquire);
      if (h == t) continue;
      const std::size_t n = h - t;
      const std::size_t pos = t % r->cap;
      const std::size_t first = std::min(n, r->cap - pos);
      iovec iov[2] = {{r->buf.get() + pos, first}, {r->buf.get(), n - first}};
      write_all(iov, n > first ? 2 : 1);
      r->tail.store(h, std::memory_order_release);
      r->woke.store(false, std::memory_order_relaxed);
    }
  }

  void run() {
    std::vector<Ring*> rs;
    std::unique_lock lk(mu);
    for (;;) {
      cv.wait_for(lk, opts.flush_interval, [&] {
        return stop || cycles < flush_until || wake.load(std::memory_order_acquire);
      });
      wake.store(false, std::memory_order_relaxed);
      const bool stopping = stop;
      rs.clear();
      for (auto& r : rings) rs.push_back(r.get());
      lk.unlock();
      maybe_reopen();
      drain(rs);
      lk.lock();
      ++cycles;
      done_cv.notify_all();
      if (stopping) return;
    }
  }

  void format(std::string& out, const Session& s, const Error* err, std::string_view service) {
    const auto steady_now = Session::clock::now();
    std::chrono::system_clock::time_point wall{};
    if (needs_wall_clock) wall = std::chrono::system_clock::now();
    const RequestHeader& req = s.req_header();
    const HttpPeerPtr& peer = s.peer();
    const auto attempt = s.upstream_attempt_time();
    const auto connected = s.upstream_connected_time();
    const auto head = s.response_header_time();
    const TlsInfo* tls = s.tls();
    for (const Segment& seg : segments) {
      switch (seg.var) {
        case Var::Literal: out += seg.text; break;
        case Var::TimeIso8601: append_iso8601(out, std::chrono::system_clock::to_time_t(wall)); break;
        case Var::Msec: {
          const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              wall.time_since_epoch()).count();
          append_u64(out, static_cast<std::uint64_t>(ms / 1000));
          out += '.';
          const auto frac = static_cast<unsigned>(ms % 1000);
          out += static_cast<char>('0' + frac / 100);
          out += static_cast<char>('0' + frac / 10 % 10);
          out += static_cast<char>('0' + frac % 10);
          break;
        }
        case Var::RemoteAddr: append_addr(out, s.client_addr(), true, false); break;
        case Var::RemotePort: append_addr(out, s.client_addr(), false, true); break;
        case Var::ServerAddr: append_addr(out, s.server_addr(), true, false); break;
        case Var::ServerPort: append_addr(out, s.server_addr(), false, true); break;
        case Var::Method: append_or_dash(out, req.method()); break;
        case Var::Path: append_or_dash(out, req.path()); break;
        case Var::Args: append_or_dash(out, req.query()); break;
        case Var::RequestUri: append_or_dash(out, req.uri()); break;
        case Var::Request:
          if (req.method().empty()) {
            out += '-';
            break;
          }
          append_escaped(out, req.method());
          out += ' ';
          append_escaped(out, req.uri());
          out += ' ';
          out += protocol_name(req.version());
          break;
        case Var::ServerProtocol: out += protocol_name(req.version()); break;
        case Var::Scheme: out += tls ? "https" : "http"; break;
        case Var::Host: append_or_dash(out, req.headers().get("host").value_or("")); break;
        case Var::Status: append_u64(out, s.response_status()); break;
        case Var::BytesSent: append_u64(out, s.header_bytes_sent() + s.body_bytes_sent()); break;
        case Var::BodyBytesSent: append_u64(out, s.body_bytes_sent()); break;
        case Var::BodyBytesReceived: append_u64(out, s.body_bytes_received()); break;
        case Var::RequestTime: append_seconds(out, steady_now - s.start_time()); break;
        case Var::UpstreamAddr:
          if (peer)
            append_addr(out, peer->address, true, true);
          else
            out += '-';
          break;
        case Var::UpstreamConnectTime:
          if (peer && connected != Session::clock::time_point{})
            append_seconds(out, connected - attempt);
          else
            out += '-';
          break;
        case Var::UpstreamHeaderTime:
          if (peer && connected != Session::clock::time_point{} && head >= connected)
            append_seconds(out, head - attempt);
          else
            out += '-';
          break;
        case Var::UpstreamReused:
          out += !peer ? "-" : s.upstream_reused() ? "1" : "0";
          break;
        case Var::Error: out += err ? to_string(err->type()) : "-"; break;
        case Var::ErrorSource: out += err ? to_string(err->source()) : "-"; break;
        case Var::Retries: append_u64(out, s.retries()); break;
        case Var::Service: append_or_dash(out, service); break;
        case Var::ConnectionRequests: append_u64(out, s.requests_on_connection() + 1); break;
        case Var::SslProtocol: append_or_dash(out, tls ? std::string_view(tls->version) : ""); break;
        case Var::SslCipher: append_or_dash(out, tls ? std::string_view(tls->cipher) : ""); break;
        case Var::SslServerName: append_or_dash(out, tls ? std::string_view(tls->sni) : ""); break;
        case Var::SslSessionReused: out += !tls ? "-" : tls->resumed ? "r" : "."; break;
        case Var::HttpHeader: append_or_dash(out, req.headers().get(seg.text).value_or("")); break;
      }
    }
    out += '\n';
  }
};

thread_local std::string tl_line;  // the line being formatted, reused

Result<std::shared_ptr<AccessLog>> AccessLog::open(AccessLogOptions opts) {
  auto impl = std::make_unique<Impl>();
  if (opts.format.empty()) opts.format = kDefaultAccessLogFormat;
  auto segs = parse_format(opts.format);
  if (!segs) return segs.error();
  impl->segments = std::move(*segs);
  for (const auto& s : impl->segments)
    if (s.var == Var::TimeIso8601 || s.var == Var::Msec) impl->needs_wall_clock = true;
  if (opts.buffer_bytes < 256) opts.buffer_bytes = 256;
  opts.wake_bytes = std::min(opts.wake_bytes, opts.buffer_bytes / 2);
  if (opts.flush_interval.count() <= 0) opts.flush_interval = std::chrono::milliseconds(200);
  if (opts.path.empty() || opts.path == "-" || opts.path == "stderr") {
    impl->fd = STDERR_FILENO;
  } else if (opts.path == "stdout") {
    impl->fd = STDOUT_FILENO;
  } else {
    impl->fd = ::open(opts.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (impl->fd < 0)
      return Error::internal(ErrorType::InternalError,
                             "access log: cannot open " + opts.path + ": " + std::strerror(errno));
    impl->own_fd = true;
  }
  impl->opts = std::move(opts);
  Impl* raw = impl.get();
  impl->writer = std::thread([raw] { raw->run(); });
  return std::shared_ptr<AccessLog>(new AccessLog(std::move(impl)));
}

Result<std::shared_ptr<AccessLog>> AccessLog::open(std::string path, std::string format) {
  AccessLogOptions o;
  o.path = std::move(path);
  o.format = std::move(format);
  return open(std::move(o));
}

AccessLog::AccessLog(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AccessLog::~AccessLog() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_one();
  impl_->writer.join();  // its last cycle writes what is queued
}

void AccessLog::log(const Session& s, const Error* err, std::string_view service) noexcept {
  try {
    tl_line.clear();
    impl_->format(tl_line, s, err, service);
  } catch (...) {
    impl_->unqueued.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  impl_->enqueue(tl_line);
}

void AccessLog::write_line(std::string_view line) noexcept {
  try {
    tl_line.assign(line);
    tl_line += '\n';
  } catch (...) {
    impl_->unqueued.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  impl_->enqueue(tl_line);
}

void AccessLog::flush() {
  std::unique_lock lk(impl_->mu);
  // The cycle running now may have looked at the queues before the caller's last line: wait
  // for the one after it.
  const std::uint64_t target = impl_->cycles + 2;
  impl_->flush_until = std::max(impl_->flush_until, target);
  impl_->cv.notify_one();
  impl_->done_cv.wait(lk, [&] { return impl_->cycles >= target; });
}

void AccessLog::reopen() noexcept {
  impl_->reopen_requested.store(true, std::memory_order_release);
}

std::uint64_t AccessLog::lines_queued() const noexcept {
  std::lock_guard lk(impl_->mu);
  std::uint64_t n = 0;
  for (const auto& r : impl_->rings) n += r->queued.load(std::memory_order_relaxed);
  return n;
}

std::uint64_t AccessLog::lines_dropped() const noexcept {
  std::lock_guard lk(impl_->mu);
  std::uint64_t n = impl_->unqueued.load(std::memory_order_relaxed);
  for (const auto& r : impl_->rings) n += r->dropped.load(std::memory_order_relaxed);
  return n;
}

std::uint64_t AccessLog::write_errors() const noexcept {
  return impl_->write_errors.load(std::memory_order_relaxed);
}

const AccessLogOptions& AccessLog::options() const noexcept { return impl_->opts; }

void reopen_access_logs() noexcept {
  g_reopen_generation.fetch_add(1, std::memory_order_acq_rel);
}

Result<std::shared_ptr<AccessLog>> open_access_log(const AccessLogConfig& cfg) {
  if (cfg.path.empty()) return std::shared_ptr<AccessLog>();
  return AccessLog::open(cfg.path, cfg.format);
}

}  // namespace portico::observe
