#include <portico/lb/health_check.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <strings.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "core/log.hpp"
#include "core/watchdog.hpp"
#include "tls/tls.hpp"
#include "upstream/connection.hpp"

namespace portico {

namespace asio = boost::asio;

namespace {

using generic_ep = asio::generic::stream_protocol::endpoint;

/// A socket with one deadline at a time. Shared with the timer's handler, so a timer that fires
/// while the check is finishing never touches a destroyed socket. The deadline cancels `target`:
/// `sock`, or the socket of a TLS connection (disarmed before that connection goes).
struct Probe {
  explicit Probe(const asio::any_io_executor& ex) : sock(ex), timer(ex) {}
  asio::generic::stream_protocol::socket sock;
  asio::generic::stream_protocol::socket* target = &sock;
  asio::steady_timer timer;
  unsigned generation = 0;
  bool expired = false;
};

void arm(const std::shared_ptr<Probe>& p, Millis d) {
  p->expired = false;
  const unsigned gen = ++p->generation;
  p->timer.expires_after(d);
  p->timer.async_wait([p, gen](boost::system::error_code ec) {
    if (ec || gen != p->generation) return;
    p->expired = true;
    p->target->cancel(ec);
  });
}

void disarm(const std::shared_ptr<Probe>& p) {
  ++p->generation;
  p->timer.cancel();
}

SocketAddr target(const Backend& b, const std::optional<std::uint16_t>& port) {
  return port && b.addr.is_ip() ? b.addr.with_port(*port) : b.addr;
}

/// Opens and connects `p->sock` to `addr` within `timeout`.
task<Result<void>> connect(const std::shared_ptr<Probe>& p, const SocketAddr& addr,
                           Millis timeout) {
  boost::system::error_code ec;
  const int protocol = addr.is_unix() ? 0 : IPPROTO_TCP;
  p->sock.open(asio::generic::stream_protocol(addr.family(), protocol), ec);
  if (ec) co_return Error::internal(ErrorType::SocketError, "socket(): " + ec.message());
  if (!addr.is_unix()) {
    int one = 1;
    ::setsockopt(p->sock.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  arm(p, timeout);
  co_await p->sock.async_connect(generic_ep(addr.data(), addr.size()),
                                 asio::redirect_error(asio::use_awaitable, ec));
  const bool timed_out = p->expired;
  disarm(p);
  if (timed_out)
    co_return Error::upstream(ErrorType::ConnectTimedout, "connecting to " + addr.to_string());
  if (ec) {
    const ErrorType t =
        ec == asio::error::connection_refused ? ErrorType::ConnectRefused : ErrorType::ConnectError;
    co_return Error::upstream(t, "connecting to " + addr.to_string() + ": " + ec.message());
  }
  co_return ok();
}

/// "HTTP/1.x NNN ..." -> NNN, else 0.
std::uint16_t parse_status(std::string_view head) {
  if (head.size() < 12 || head.substr(0, 7) != "HTTP/1." || head[8] != ' ') return 0;
  unsigned v = 0;
  for (int i = 9; i < 12; ++i) {
    if (head[i] < '0' || head[i] > '9') return 0;
    v = v * 10 + static_cast<unsigned>(head[i] - '0');
  }
  if (head.size() > 12 && head[12] != ' ' && head[12] != '\r') return 0;
  return static_cast<std::uint16_t>(v);
}

}  // namespace

task<Result<void>> TcpHealthCheck::check(const Backend& backend) {
  auto p = std::make_shared<Probe>(co_await asio::this_coro::executor);
  co_return co_await connect(p, target(backend, opts_.port), opts_.connect_timeout);
}

std::string_view HealthCheckResponse::header(std::string_view name) const {
  std::string_view h = head;
  std::size_t at = h.find("\r\n");
  while (at != std::string_view::npos && at + 2 < h.size()) {
    std::size_t start = at + 2;
    std::size_t end = h.find("\r\n", start);
    if (end == std::string_view::npos) end = h.size();
    std::string_view line = h.substr(start, end - start);
    std::size_t colon = line.find(':');
    if (colon == name.size() && ::strncasecmp(line.data(), name.data(), name.size()) == 0) {
      std::string_view v = line.substr(colon + 1);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
      return v;
    }
    at = end;
  }
  return {};
}

Result<std::shared_ptr<HttpHealthCheck>> HttpHealthCheck::create(HttpHealthCheckOptions opts) {
  if (opts.method.empty() || opts.method.find_first_of(" \r\n") != std::string::npos)
    return Error::internal(ErrorType::InternalError, "health check method must be one token");
  if (opts.path.empty() || opts.path[0] != '/' ||
      opts.path.find_first_of(" \r\n") != std::string::npos)
    return Error::internal(ErrorType::InternalError, "health check path must start with '/'");
  for (const auto& [k, v] : opts.headers)
    if (k.empty() || (k + v).find_first_of("\r\n") != std::string::npos)
      return Error::internal(ErrorType::InternalError, "bad health check header field");
  if ((opts.host + opts.sni).find_first_of(" \r\n") != std::string::npos)
    return Error::internal(ErrorType::InternalError, "bad health check host or SNI name");
  return std::make_shared<HttpHealthCheck>(std::move(opts));
}

HttpHealthCheck::HttpHealthCheck(HttpHealthCheckOptions opts) : opts_(std::move(opts)) {
  if (opts_.tls) tls_ = std::make_shared<detail::ClientTls>();
}

std::uint64_t HttpHealthCheck::tls_resumed() const noexcept { return tls_ ? tls_->resumed() : 0; }
std::uint64_t HttpHealthCheck::tls_full_handshakes() const noexcept {
  return tls_ ? tls_->full() : 0;
}

namespace {

// Plain and TLS I/O for exchange().
task<void> write_all(asio::generic::stream_protocol::socket& s, asio::const_buffer b,
                     boost::system::error_code& ec) {
  co_await asio::async_write(s, b, asio::redirect_error(asio::use_awaitable, ec));
}
task<void> write_all(detail::tls_stream& s, asio::const_buffer b, boost::system::error_code& ec) {
  co_await s.write(b, ec);
}
task<std::size_t> read_some(asio::generic::stream_protocol::socket& s, asio::mutable_buffer b,
                            boost::system::error_code& ec) {
  co_return co_await s.async_read_some(b, asio::redirect_error(asio::use_awaitable, ec));
}
task<std::size_t> read_some(detail::tls_stream& s, asio::mutable_buffer b,
                            boost::system::error_code& ec) {
  co_return co_await s.read_some(b, ec);
}

/// Sends `req` on `io` and reads the response header, within one deadline on `p`.
template <class Stream>
task<Result<HealthCheckResponse>> exchange(Stream& io, const std::shared_ptr<Probe>& p,
                                           const std::string& req, Millis timeout,
                                           const SocketAddr& addr) {
  arm(p, timeout);
  boost::system::error_code ec;
  co_await write_all(io, asio::buffer(req), ec);
  HealthCheckResponse resp;
  constexpr std::size_t kMaxHead = 16 * 1024;
  char buf[4096];
  std::size_t end = std::string::npos;
  while (!ec && end == std::string::npos && resp.head.size() < kMaxHead) {
    std::size_t n = co_await read_some(io, asio::buffer(buf), ec);
    resp.head.append(buf, n);
    end = resp.head.find("\r\n\r\n");
  }
  const bool timed_out = p->expired;
  disarm(p);
  if (timed_out)
    co_return Error::upstream(ErrorType::ReadTimedout, "health check of " + addr.to_string());
  if (end == std::string::npos) {
    if (resp.head.size() >= kMaxHead)
      co_return Error::upstream(
          ErrorType::InvalidHTTPHeader,
          "health check of " + addr.to_string() + ": response header too long");
    co_return Error::upstream(ErrorType::ReadError,
                              "health check of " + addr.to_string() + ": no response" +
                                  (ec && ec != asio::error::eof ? " (" + ec.message() + ")" : ""));
  }
  resp.head.resize(end + 2);
  resp.status = parse_status(resp.head);
  if (resp.status == 0)
    co_return Error::upstream(ErrorType::InvalidHTTPHeader,
                              "health check of " + addr.to_string() + ": not an HTTP/1 response");
  co_return resp;
}

/// `host` without a trailing ":port" (brackets of an IPv6 literal removed).
std::string host_name(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    auto close = host.find(']');
    return std::string(host.substr(1, close == std::string_view::npos ? host.npos : close - 1));
  }
  auto colon = host.rfind(':');
  if (colon != std::string_view::npos && host.find(':') == colon) host = host.substr(0, colon);
  return std::string(host);
}

}  // namespace

task<Result<void>> HttpHealthCheck::check(const Backend& backend) {
  auto p = std::make_shared<Probe>(co_await asio::this_coro::executor);
  const SocketAddr addr = target(backend, opts_.port);

  std::string req =
      opts_.method + " " + opts_.path + " HTTP/1.1\r\nHost: " +
      (opts_.host.empty() ? (addr.is_unix() ? std::string("localhost") : addr.to_string())
                          : opts_.host) +
      "\r\nUser-Agent: portico-health-check\r\nConnection: close\r\n";
  for (const auto& [k, v] : opts_.headers) req += k + ": " + v + "\r\n";
  req += "\r\n";

  Result<HealthCheckResponse> resp = Error::internal(ErrorType::InternalError, "not run");
  if (!opts_.tls) {
    auto connected = co_await connect(p, addr, opts_.connect_timeout);
    if (!connected) co_return connected.error();
    resp = co_await exchange(p->sock, p, req, opts_.read_timeout, addr);
    boost::system::error_code ec;
    p->sock.close(ec);
  } else {
    HttpPeer peer(addr, true, opts_.sni.empty() ? host_name(opts_.host) : opts_.sni);
    peer.options = opts_.tls_options;
    peer.options.connection_timeout = opts_.connect_timeout;
    peer.options.total_connection_timeout = Millis(0);
    peer.options.proxy_protocol = ProxyProtocol::None;
    auto wd = std::make_shared<detail::Watchdog>(co_await asio::this_coro::executor);
    auto conn = co_await detail::connect_upstream(peer, *wd, http1::ParserLimits{}, {}, tls_,
                                                  addr.hash());
    wd->close();
    if (!conn) co_return conn.error();
    auto& c = **conn;
    p->target = &c.sock;
    resp = co_await exchange(*c.tls, p, req, opts_.read_timeout, addr);
  }
  if (!resp) co_return resp.error();
  const bool good = opts_.validator ? opts_.validator(*resp) : resp->status == opts_.expected_status;
  if (!good)
    co_return Error::http_status(resp->status, "health check of " + addr.to_string() +
                                                   " answered " + std::to_string(resp->status));
  co_return ok();
}

HealthCheckService::HealthCheckService(std::shared_ptr<LoadBalancerBase> lb,
                                       std::shared_ptr<HealthCheck> check, HealthCheckConfig config)
    : lb_(std::move(lb)), check_(std::move(check)), cfg_(config) {
  if (cfg_.consecutive_success == 0) cfg_.consecutive_success = 1;
  if (cfg_.consecutive_failure == 0) cfg_.consecutive_failure = 1;
  if (cfg_.interval.count() <= 0) cfg_.interval = Millis(1000);
}

task<void> HealthCheckService::check_one(BackendRef b, ShutdownWatch watch) {
  Result<void> r = ok();
  try {
    r = co_await check_->check(b.backend());
  } catch (const std::exception& e) {
    r = Error::internal(ErrorType::HookPanic, std::string("health check threw: ") + e.what());
  }
  // A check cut short by shutdown says nothing about the backend.
  if (watch.stopped()) co_return;
  checks_.fetch_add(1, std::memory_order_relaxed);
  auto& st = b.state();
  if (r) {
    st.check_failures.store(0, std::memory_order_relaxed);
    const auto n = st.check_successes.fetch_add(1, std::memory_order_relaxed) + 1;
    if (!st.healthy.load(std::memory_order_relaxed) && n >= cfg_.consecutive_success &&
        lb_->set_health(b, true, "health check passed"))
      up_.fetch_add(1, std::memory_order_relaxed);
  } else {
    failed_.fetch_add(1, std::memory_order_relaxed);
    st.check_successes.store(0, std::memory_order_relaxed);
    const auto n = st.check_failures.fetch_add(1, std::memory_order_relaxed) + 1;
    if (st.healthy.load(std::memory_order_relaxed) && n >= cfg_.consecutive_failure &&
        lb_->set_health(b, false, r.error().to_string()))
      down_.fetch_add(1, std::memory_order_relaxed);
  }
}

task<void> HealthCheckService::run_once() {
  ShutdownWatch never(co_await asio::this_coro::executor);  // a round of its own: never stopped
  co_await round(never);
}

task<void> HealthCheckService::round(ShutdownWatch watch) {
  auto ex = co_await asio::this_coro::executor;
  std::vector<BackendRef> backends = lb_->refs();
  rounds_.fetch_add(1, std::memory_order_relaxed);
  if (backends.empty()) co_return;
  // Every check runs concurrently; the last one to finish wakes this coroutine. The join state is
  // shared with the checks, so it outlives this frame if the round is abandoned at shutdown.
  struct Join {
    explicit Join(const asio::any_io_executor& e, std::size_t n)
        : left(n), done(e, asio::steady_timer::time_point::max()) {}
    std::size_t left;
    asio::steady_timer done;
  };
  auto join = std::make_shared<Join>(ex, backends.size());
  // Each check is cancelled when shutdown begins, so a slow connect does not hold up the exit.
  for (auto& b : backends)
    asio::co_spawn(ex, watch.cancel_on_shutdown(check_one(std::move(b), watch)),
                   [join](std::exception_ptr) {
      if (--join->left == 0) join->done.cancel();
    });
  if (join->left > 0) co_await join->done.async_wait(asio::as_tuple(asio::use_awaitable));
}

task<void> HealthCheckService::start(ShutdownWatch shutdown) {
  lb_->active_checks_.fetch_add(1, std::memory_order_relaxed);
  struct Leave {
    LoadBalancerBase& lb;
    ~Leave() { lb.active_checks_.fetch_sub(1, std::memory_order_relaxed); }
  } leave{*lb_};
  while (!shutdown.stopped()) {
    const auto t0 = std::chrono::steady_clock::now();
    co_await round(shutdown);
    detail::rcu::reclaim();
    // A statement, not a condition: GCC 12 mis-addresses a by-value coroutine parameter used in
    // a co_await inside an if/while condition.
    const bool slept = co_await shutdown.sleep_until(t0 + cfg_.interval);
    if (!slept) break;
  }
}

HealthCheckStats HealthCheckService::stats() const noexcept {
  return HealthCheckStats{
      rounds_.load(std::memory_order_relaxed), checks_.load(std::memory_order_relaxed),
      failed_.load(std::memory_order_relaxed), up_.load(std::memory_order_relaxed),
      down_.load(std::memory_order_relaxed)};
}

}  // namespace portico
