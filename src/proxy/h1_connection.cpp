#include "proxy/h1_connection.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "core/log.hpp"
#include "observe/proxy_observer.hpp"

namespace portico::detail {

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::milliseconds;

namespace {
constexpr std::size_t kReadBuffer = 16 * 1024;
constexpr std::size_t kLingerBytes = 1 << 20;
constexpr milliseconds kLingerTimeout{1000};

void cancel_tcp(void* s) { static_cast<asio::ip::tcp::socket*>(s)->cancel(); }

bool is_client_gone(const error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::error::connection_aborted;
}
}  // namespace

std::size_t frame_body(const std::vector<std::string_view>& pieces, bool chunked, bool end,
                       const HeaderMap* trailers, std::string& frame,
                       std::vector<asio::const_buffer>& iov) {
  frame.clear();
  if (chunked) {
    frame.reserve(pieces.size() * 20 + 64 +
                  (trailers ? trailers->byte_size() + 4 * trailers->size() : 0));
    for (auto p : pieces)
      if (!p.empty()) http1::append_chunk_size(p.size(), frame);
    if (end) http1::append_last_chunk(trailers, frame);
  }
  std::size_t body = 0;
  std::size_t off = 0;
  for (auto p : pieces) {
    if (p.empty()) continue;
    body += p.size();
    if (chunked) {
      std::size_t line = frame.find('\n', off) + 1;
      iov.emplace_back(frame.data() + off, line - off);
      off = line;
    }
    iov.emplace_back(p.data(), p.size());
    if (chunked) iov.emplace_back("\r\n", 2);
  }
  if (chunked && end) iov.emplace_back(frame.data() + off, frame.size() - off);
  return body;
}

H1Connection::H1Connection(HttpProxyService& svc, ServiceWorkerState& state, Worker& w,
                           Accepted& a, std::shared_ptr<ServerTls> tls)
    : svc_(svc),
      app_(svc.app()),
      opts_(svc.options()),
      hooks_(svc.hooks()),
      state_(state),
      worker_(w),
      obs_(svc.observer()),
      sock_(std::move(a.socket)),
      wd_(std::make_shared<Watchdog>(sock_.get_executor())),
      parser_(http1::Kind::Request,
              http1::ParserLimits{opts_.max_header_bytes, opts_.max_header_count,
                                 opts_.max_request_target_bytes}),
      pump_timer_(sock_.get_executor()) {
  error_code ec;
  client_addr_ = a.peer;
  server_addr_ = a.local;
  if (client_addr_.empty()) {
    auto re = sock_.remote_endpoint(ec);
    if (!ec) client_addr_ = SocketAddr::from_sockaddr(re.data(), static_cast<socklen_t>(re.size()));
  }
  if (server_addr_.empty()) {
    auto le = sock_.local_endpoint(ec);
    if (!ec) server_addr_ = SocketAddr::from_sockaddr(le.data(), static_cast<socklen_t>(le.size()));
  }
  if (!a.nodelay) sock_.set_option(asio::ip::tcp::no_delay(true), ec);
  const std::size_t align = app_.ctx_align() < alignof(std::max_align_t) ? alignof(std::max_align_t)
                                                                         : app_.ctx_align();
  ctx_mem_.reset(new std::byte[app_.ctx_size() + align]);
  void* p = ctx_mem_.get();
  std::size_t space = app_.ctx_size() + align;
  ctx_ = std::align(app_.ctx_align(), app_.ctx_size(), p, space);
  server_tls_ = std::move(tls);
  expect_proxy_header_ = svc.listener_options(a.listener).proxy_protocol;
  worker_.add(this);
  obs_->connection_opened();
}

H1Connection::~H1Connection() {
  // A request cut short (its coroutine frames destroyed while suspended) still ends its context:
  // what the context holds (in-flight counts, buffers, handles) is released.
  drop_ctx();
  // As for upstream connections: keep the client's session resumable (session-ID cache).
  if (tls_ && SSL_is_init_finished(tls_->native_handle()))
    SSL_set_shutdown(tls_->native_handle(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  wd_->close();
  worker_.remove(this);
  obs_->connection_closed();
}

void H1Connection::build_ctx() {
  app_.construct_ctx(ctx_);
  ctx_live_ = true;
}

void H1Connection::drop_ctx() noexcept {
  if (!ctx_live_) return;
  ctx_live_ = false;
  app_.destroy_ctx(ctx_);
}

void H1Connection::drain() noexcept {
  drain_requested_ = true;
  if (!idle_) return;  // the request in flight ends with Connection: close
  const bool arriving = rbegin_ < rend_ || !parser_.idle();
  if (conn_requests_ > 0 && !arriving) {
    abort();  // an idle keep-alive connection: nothing is lost
    return;
  }
  // Accepted, but its first request has not arrived, or part of a request is here: the client
  // may be sending it right now (a first one may have waited in the accept queue). Closing would
  // drop a request nobody answered, so it gets a short while to arrive (and is then served with
  // Connection: close).
  wd_->arm(Watchdog::DsRead, std::min(opts_.keepalive_timeout, kFirstRequestGrace), &cancel_tcp,
           &sock_);
}

void H1Connection::abort() noexcept {
  closed_ = true;
  error_code ec;
  sock_.shutdown(asio::socket_base::shutdown_both, ec);
  sock_.cancel(ec);
}

// ---------------------------------------------------------------------------------------------
// downstream I/O

task<Result<std::size_t>> H1Connection::ds_read(milliseconds timeout) {
  if (rbuf_.empty()) rbuf_.resize(kReadBuffer);
  if (rbegin_ == rend_) rbegin_ = rend_ = 0;
  if (rend_ == rbuf_.size()) {  // unconsumed bytes at the end: move them to the front
    std::memmove(rbuf_.data(), rbuf_.data() + rbegin_, rend_ - rbegin_);
    rend_ -= rbegin_;
    rbegin_ = 0;
  }
  wd_->arm(Watchdog::DsRead, timeout, &cancel_tcp, &sock_);
  error_code ec;
  const auto into = asio::buffer(rbuf_.data() + rend_, rbuf_.size() - rend_);
  // (Not a conditional expression: GCC 12 destroys temporaries of a co_await in one twice.)
  std::size_t n;
  if (tls_)
    n = co_await tls_->async_read_some(into, asio::redirect_error(asio::use_awaitable, ec));
  else
    n = co_await sock_.async_read_some(into, asio::redirect_error(asio::use_awaitable, ec));
  const bool timed_out = wd_->expired(Watchdog::DsRead) || (ec && wd_->expired(Watchdog::Total));
  wd_->disarm(Watchdog::DsRead);
  if (timed_out) co_return Error::downstream(ErrorType::ReadTimedout, "reading from the client");
  if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
    co_return Error::downstream(ErrorType::ConnectionClosed, "client closed the connection");
  if (ec) co_return Error::downstream(ErrorType::ReadError, ec.message());
  rend_ += n;
  co_return n;
}

task<Result<void>> H1Connection::ds_write(const std::vector<asio::const_buffer>& bufs) {
  wd_->arm(Watchdog::DsWrite, opts_.write_timeout, &cancel_tcp, &sock_);
  error_code ec;
  if (tls_)
    co_await asio::async_write(*tls_, bufs, asio::redirect_error(asio::use_awaitable, ec));
  else
    co_await asio::async_write(sock_, bufs, asio::redirect_error(asio::use_awaitable, ec));
  const bool timed_out = wd_->expired(Watchdog::DsWrite) || (ec && wd_->expired(Watchdog::Total));
  wd_->disarm(Watchdog::DsWrite);
  if (timed_out) co_return Error::downstream(ErrorType::WriteTimedout, "writing to the client");
  if (ec) {
    Error e = Error::downstream(is_client_gone(ec) ? ErrorType::ConnectionClosed : ErrorType::WriteError,
                                ec.message());
    co_return e;
  }
  co_return ok();
}

task<Result<bool>> H1Connection::read_request_header() {
  bool first = true;
  for (;;) {
    if (rbegin_ < rend_) {
      auto step = parser_.feed(rbuf_.data() + rbegin_, rend_ - rbegin_);
      rbegin_ += step.consumed;
      if (step.event == http1::Event::Headers) co_return true;
      if (step.event == http1::Event::Error) co_return false;
      first = parser_.idle();
      // The end of the previous message (e.g. after a declined upgrade) consumes nothing; the
      // bytes already here are the next request.
      if (step.event == http1::Event::MessageComplete) continue;
    }
    // The first byte of a request may take the keep-alive time (or, while the server drains,
    // the short first-request grace); the rest, the header timeout.
    auto wait = first ? opts_.keepalive_timeout : opts_.header_read_timeout;
    if (first && (drain_requested_ || worker_.draining())) wait = std::min(wait, kFirstRequestGrace);
    auto r = co_await ds_read(wait);
    if (!r) {
      if (parser_.idle() && (r.error().type() == ErrorType::ConnectionClosed ||
                             r.error().type() == ErrorType::ReadTimedout || closed_))
        co_return Error();  // a clean end of an idle connection
      co_return r.error();
    }
  }
}

void H1Connection::prepare_response_head(ResponseHeader& h, bool bodyless) {
  const bool client_11 = req_.version() != Version::Http10;
  if (bodyless) {
    ds_framing_ = DsFraming::None;
  } else if (h.headers().contains("content-length")) {
    ds_framing_ = DsFraming::Length;
  } else if (client_11) {
    ds_framing_ = DsFraming::Chunked;
    h.headers().insert("Transfer-Encoding", "chunked");
  } else {
    ds_framing_ = DsFraming::Close;
    keepalive_ = false;
  }
  if (drain_requested_ || worker_.draining()) keepalive_ = false;
  // Answering before the request body was read: the connection cannot carry another request.
  if (!req_body_done_) keepalive_ = false;
  if (opts_.keepalive_request_limit && conn_requests_ + 1 >= opts_.keepalive_request_limit)
    keepalive_ = false;
  h.headers().remove("connection");
  if (!keepalive_)
    h.headers().append("Connection", "close");
  else if (!client_11)
    h.headers().append("Connection", "keep-alive");
  h.set_version(client_11 ? Version::Http11 : Version::Http10);
  wbuf_.clear();
  http1::serialize_response_head(h, wbuf_);
  if (h.status() >= 200) {
    resp_status_ = h.status();
    resp_head_at_ = clock::now();
  }
}

task<Result<void>> H1Connection::ds_send(const std::vector<std::string_view>& pieces, bool end,
                                         const HeaderMap* trailers) {
  iov_.clear();
  if (!wbuf_.empty()) iov_.emplace_back(wbuf_.data(), wbuf_.size());
  const std::size_t body =
      frame_body(pieces, ds_framing_ == DsFraming::Chunked, end, trailers, frame_, iov_);
  if (iov_.empty()) co_return ok();
  const std::size_t head = wbuf_.size();
  auto r = co_await ds_write(iov_);
  wbuf_.clear();
  if (!r) co_return r;
  head_sent_ += head;
  body_sent_ += body;
  co_return ok();
}

task<Result<void>> H1Connection::write_response_header(ResponseHeader resp, bool end_of_stream) {
  if (response_written())
    co_return Error::internal(ErrorType::InternalError, "a response header was already sent");
  if (closed_) co_return Error::downstream(ErrorType::ConnectionClosed, "client connection closed");
  const bool bodyless = head_request_ || resp.status() == 204 || resp.status() == 304 ||
                        resp.status() < 200;
  if (end_of_stream && !bodyless && !resp.headers().contains("content-length"))
    resp.headers().insert("Content-Length", "0");
  prepare_response_head(resp, bodyless);
  resp_ = std::move(resp);
  pieces_.clear();
  co_return co_await ds_send(pieces_, end_of_stream && ds_framing_ == DsFraming::Chunked, nullptr);
}

task<Result<void>> H1Connection::write_response_body(std::string_view data, bool end_of_stream) {
  if (!response_written())
    co_return Error::internal(ErrorType::InternalError, "write_response_body before a header");
  if (ds_framing_ == DsFraming::None) co_return ok();
  pieces_.clear();
  pieces_.push_back(data);
  co_return co_await ds_send(pieces_, end_of_stream, nullptr);
}

// ---------------------------------------------------------------------------------------------
// the connection loop

task<ssize_t> H1Connection::peek_more(unsigned char* buf, std::size_t cap, ssize_t seen) {
  // Bounded by the DsRead deadline the caller armed (it cancels the wait).
  for (;;) {
    error_code ec;
    co_await sock_.async_wait(asio::socket_base::wait_read,
                              asio::redirect_error(asio::use_awaitable, ec));
    if (ec || wd_->expired(Watchdog::DsRead)) co_return -1;
    const ssize_t n = ::recv(sock_.native_handle(), buf, cap, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
    if (n <= 0) co_return n < 0 ? -1 : 0;
    if (n > seen || static_cast<std::size_t>(n) == cap) co_return n;
    // Part of the message is here and the rest is not: readiness stays set while the bytes are
    // unread, so pause instead of peeking in a loop.
    asio::steady_timer pause(sock_.get_executor(), milliseconds(2));
    co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

task<bool> H1Connection::read_proxy_header() {
  wd_->arm(Watchdog::DsRead, opts_.header_read_timeout, &cancel_tcp, &sock_);
  unsigned char buf[kMaxProxyHeader];
  ssize_t seen = 0;
  ProxyHeaderIn hdr;
  std::string why;
  ProxyParse st = ProxyParse::Incomplete;
  while (st == ProxyParse::Incomplete) {
    const ssize_t n = co_await peek_more(buf, sizeof buf, seen);
    if (n <= 0) {
      why = wd_->expired(Watchdog::DsRead) ? "no complete PROXY protocol header in time"
                                           : "connection closed before its PROXY protocol header";
      break;
    }
    st = parse_proxy_header(buf, static_cast<std::size_t>(n), hdr, why);
    if (st == ProxyParse::Incomplete && static_cast<std::size_t>(n) == sizeof buf) {
      why = "PROXY protocol header too long";
      st = ProxyParse::Invalid;
    }
    seen = n;
  }
  wd_->disarm(Watchdog::DsRead);
  if (st == ProxyParse::Complete) {
    // Consume exactly the header: what follows is the client's (TLS or HTTP).
    if (::recv(sock_.native_handle(), buf, hdr.length, 0) != static_cast<ssize_t>(hdr.length)) {
      why = "reading the PROXY protocol header failed";
    } else {
      if (!hdr.local) {
        client_addr_ = hdr.src;
        server_addr_ = hdr.dst;
      }
      co_return true;
    }
  }
  log::error_log().info("PROXY protocol from {}: {}; closing", client_addr_.to_string(), why);
  co_return false;
}

task<bool> H1Connection::tls_handshake() {
  tls_set_ = server_tls_->current();
  const TlsSettings& s = tls_set_->settings();
  wd_->arm(Watchdog::DsRead, s.handshake_timeout, &cancel_tcp, &sock_);
  SSL_CTX* ctx = tls_set_->default_ctx();
  error_code ec;
  if (s.certificate_hook) {
    // Read the ClientHello without consuming it, to learn the SNI name before OpenSSL does.
    std::string sni;
    unsigned char hello[16 * 1024 + 5];
    ssize_t seen = 0;
    for (;;) {
      const ssize_t n = co_await peek_more(hello, sizeof hello, seen);
      if (n <= 0) break;
      std::size_t need = 0;
      auto name = client_hello_sni(hello, static_cast<std::size_t>(n), need);
      if (name) {
        sni = std::move(*name);
        break;
      }
      if (need == 0 || need > sizeof hello || static_cast<std::size_t>(n) >= need) break;
      seen = n;
    }
    if (!wd_->expired(Watchdog::DsRead)) {
      CertifiedKeyPtr ck;
      try {
        ck = co_await s.certificate_hook(sni);
      } catch (const std::exception& e) {
        log::error_log().error("TLS certificate hook for \"{}\" threw: {}", sni, e.what());
      }
      if (ck)
        if (SSL_CTX* chosen = tls_set_->ctx_for(ck)) ctx = chosen;
    }
    if (wd_->expired(Watchdog::DsRead)) {  // the hello or the hook took the whole timeout
      wd_->disarm(Watchdog::DsRead);
      log::error_log().info("TLS handshake with {} failed: timed out", client_addr_.to_string());
      co_return false;
    }
  }
  SSL* ssl = SSL_new(ctx);
  if (!ssl) {
    wd_->disarm(Watchdog::DsRead);
    log::error_log().error("TLS: SSL_new: {}", ssl_error_text());
    co_return false;
  }
  tls_ = std::make_unique<asio::ssl::stream<asio::ip::tcp::socket&>>(sock_, ssl);
  co_await tls_->async_handshake(asio::ssl::stream_base::server,
                                 asio::redirect_error(asio::use_awaitable, ec));
  const bool timed_out = wd_->expired(Watchdog::DsRead);
  wd_->disarm(Watchdog::DsRead);
  if (timed_out || ec) {
    log::error_log().info("TLS handshake with {} failed: {}", client_addr_.to_string(),
                          timed_out ? std::string("timed out") : ec.message());
    co_return false;
  }
  tls_info_ = std::make_unique<TlsInfo>();
  describe(tls_->native_handle(), *tls_info_);
  co_return true;
}

task<void> H1Connection::run() {
  if (expect_proxy_header_ && !co_await read_proxy_header()) {
    error_code ec;
    sock_.close(ec);
    co_return;
  }
  bool tls_ok = true;
  if (server_tls_) {
    tls_ok = co_await tls_handshake();
    obs_->tls_handshake(tls_ok, tls_ok && tls_info_->resumed);
  }
  if (!tls_ok) {
    error_code ec;
    sock_.close(ec);
    co_return;
  }
  while (!closed_) {
    idle_ = true;
    // Draining: a connection that served a request closes now; a fresh one still reads its
    // first request (briefly, see read_request_header), which may be on its way.
    if ((drain_requested_ || worker_.draining()) && conn_requests_ > 0) break;
    auto hdr = co_await read_request_header();
    idle_ = false;
    if (!hdr) {
      if (closed_) break;
      if (hdr.error().type() != ErrorType::UnknownError) {
        log::error_log().debug("client {}: {}", client_addr_.to_string(), hdr.error().to_string());
      }
      break;
    }
    if (!*hdr) {
      co_await handle_parse_error();
      break;
    }
    co_await handle_request();
    ++conn_requests_;
    if (!keepalive_) break;
  }
  error_code ec;
  if (tls_ && !closed_ && SSL_is_init_finished(tls_->native_handle())) {
    // Send close_notify (clients such as OpenSSL 3 report a close without it as an error, and
    // withdraw the session), but do not wait for the client's: mark it as received first.
    SSL_set_shutdown(tls_->native_handle(), SSL_RECEIVED_SHUTDOWN);
    wd_->arm(Watchdog::DsWrite, std::min(opts_.write_timeout, milliseconds(1000)), &cancel_tcp, &sock_);
    co_await tls_->async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
    wd_->disarm(Watchdog::DsWrite);
  }
  // close() alone sends the FIN; the separate half-close is only needed to linger.
  if (!closed_ && (!req_body_done_ || rbegin_ < rend_)) {
    sock_.shutdown(asio::socket_base::shutdown_send, ec);
    co_await linger();
  }
  sock_.close(ec);
}

task<void> H1Connection::linger() {
  // Closing with unread input makes the kernel send a reset, which can destroy the response
  // the client has not read yet. Drain what the client still sends, within bounds.
  std::size_t drained = 0;
  while (drained < kLingerBytes) {
    rbegin_ = rend_ = 0;
    auto n = co_await ds_read(kLingerTimeout);
    if (!n) break;
    drained += *n;
  }
}

void H1Connection::log_failure(const Error& e, std::uint16_t status) {
  auto& l = log::error_log();
  const auto level = status == 0 ? spdlog::level::info : spdlog::level::err;
  l.log(level, "Fail to proxy: {}, status: {}, tries: {}, {}", e.to_string(), status, retries_ + 1,
        request_summary());
}

task<void> H1Connection::handle_parse_error() {
  // The request never became valid: answer, then still run logging with the error.
  start_ = clock::now();
  req_.clear();
  keepalive_ = false;
  head_request_ = false;
  resp_status_ = 0;
  body_sent_ = body_received_ = head_sent_ = retries_ = 0;
  peer_.reset();
  attempt_at_ = connected_at_ = resp_head_at_ = {};
  Error e = Error::downstream(parser_.error_type(), std::string(parser_.error_reason()));
  const std::uint16_t status = parser_.error_status();
  log::error_log().error("Fail to parse request from {}: {}, status: {}", client_addr_.to_string(),
                         e.to_string(), status);
  std::exception_ptr exc;
  try {
    build_ctx();
  } catch (...) {
    exc = std::current_exception();
  }
  co_await respond_error(status);
  if (exc) co_return;
  co_await finish_request(&e);
}

task<void> H1Connection::handle_request() {
  start_ = clock::now();
  parser_.take_request(req_);
  retries_ = 0;
  failed_peers_.clear();
  peer_.reset();
  upstream_reused_ = false;
  client_gone_ = false;
  keepalive_ = parser_.keep_alive();
  resp_status_ = 0;
  body_sent_ = body_received_ = head_sent_ = 0;
  attempt_at_ = connected_at_ = resp_head_at_ = {};
  ds_framing_ = DsFraming::None;
  head_request_ = req_.method() == "HEAD";
  connect_ = req_.method() == "CONNECT";
  upgrade_ = parser_.upgrade() && !connect_;
  tunnel_ = false;
  req_has_body_ = parser_.framing() != http1::Framing::None;
  req_body_done_ = !req_has_body_;
  req_body_started_ = false;
  replay_.clear();
  replay_truncated_ = false;
  // A bodyless request is complete now; this also lets the parser reach its next message. The
  // parser has validated the head already, so this step cannot fail; if it ever did, the
  // request is not forwarded.
  if (!req_has_body_ &&
      parser_.feed(rbuf_.data() + rbegin_, 0).event == http1::Event::Error) {
    co_await handle_parse_error();
    keepalive_ = false;
    co_return;
  }

  if (opts_.request_timeout.count() > 0)
    wd_->arm(Watchdog::Total, opts_.request_timeout, &H1Connection::expire_request, this);
  std::string panic;
  bool ctx_built = false;
  Result<void> r;
  try {
    build_ctx();
    ctx_built = true;
    if (connect_ && !opts_.allow_connect_method) {
      r = Error::http_status(405, "CONNECT is not allowed");
    } else {
      r = co_await run_phases();
    }
  } catch (const std::exception& x) {
    panic = x.what();
  } catch (...) {
    panic = "unknown exception";
  }
  if (!panic.empty() || !ctx_built) {
    r = Error::internal(ErrorType::HookPanic, "hook threw: " + panic);
  }
  if (!ctx_built) {
    log::error_log().error("new_ctx threw: {}, {}", panic, request_summary());
    wd_->disarm(Watchdog::Total);
    if (!response_written()) co_await respond_error(500);
    keepalive_ = false;
    co_return;
  }
  if (!r) {
    const Error& e = r.error();
    FailToProxy f;
    std::string panic2;
    try {
      f = co_await app_.e_fail_to_proxy(*this, e, ctx_);
    } catch (const std::exception& x) {
      panic2 = x.what();
    } catch (...) {
      panic2 = "unknown exception";
    }
    if (!panic2.empty()) {
      log::error_log().error("fail_to_proxy threw: {}", panic2);
      if (!response_written()) co_await respond_error(500);
      f = FailToProxy{500, false};
    }
    bool suppress = false;
    try {
      suppress = app_.e_suppress_error_log(*this, ctx_, e);
    } catch (...) {
    }
    if (!suppress) log_failure(e, f.error_code);
    if (!f.can_reuse_downstream) keepalive_ = false;
  }
  if (!req_body_done_) keepalive_ = false;
  Error final_error;
  if (!r) final_error = r.error();
  co_await finish_request(r ? nullptr : &final_error);
}

void H1Connection::expire_request(void* self) {
  // The whole-request deadline passed: stop whatever I/O the request is waiting for. Each I/O
  // step reports the expiry as its own timeout (504 upstream, a closed connection downstream).
  auto* c = static_cast<H1Connection*>(self);
  error_code ec;
  c->sock_.cancel(ec);
  if (c->current_up_) c->current_up_->sock.cancel(ec);
}

task<void> H1Connection::finish_request(const Error* err) {
  wd_->disarm(Watchdog::Total);
  try {
    if (has(kLogging)) co_await app_.e_logging(*this, err, ctx_);
  } catch (const std::exception& x) {
    log::error_log().error("logging hook threw: {}, {}", x.what(), request_summary());
  } catch (...) {
    log::error_log().error("logging hook threw, {}", request_summary());
  }
  obs_->request_done(*this, err);
  drop_ctx();
}

task<Result<void>> H1Connection::run_phases() {
  if (has(kEarlyRequestFilter))
    if (auto r = co_await app_.e_early_request_filter(*this, ctx_); !r) co_return r.error();
  if (has(kRequestFilter)) {
    auto r = co_await app_.e_request_filter(*this, ctx_);
    if (!r) co_return r.error();
    if (*r) {
      if (!response_written()) keepalive_ = false;  // nothing framed the exchange
      co_return ok();
    }
  }
  if (has(kProxyUpstreamFilter)) {
    auto r = co_await app_.e_proxy_upstream_filter(*this, ctx_);
    if (!r) co_return r.error();
    if (!*r) {
      if (!response_written()) co_await respond_error(502);
      co_return ok();
    }
  }
  // A failed attempt that may be retried: log it, remember its peer, go round again.
  auto retrying = [this](const Error& e) {
    log::error_log().warn("Fail to proxy: {}, tries: {}, retry: true, {}", e.to_string(),
                          retries_ + 1, request_summary());
    obs_->upstream_attempt_failed(e);
    failed_peers_.push_back(peer_);
    ++retries_;
  };
  for (;;) {
    auto pr = co_await app_.e_upstream_peer(*this, ctx_);
    if (!pr) co_return pr.error();
    if (!*pr) co_return Error::upstream(ErrorType::ConnectNoRoute, "upstream_peer returned no peer");
    peer_ = std::move(*pr);
    attempt_at_ = clock::now();
    connected_at_ = {};
    const HttpPeer& peer = *peer_;
    const std::uint64_t key = peer.reuse_hash();
    const bool speaks_for_client = peer.options.proxy_protocol != ProxyProtocol::None;
    UpstreamConnPtr conn;
    if (speaks_for_client) {
      if (private_up_ && private_up_->key == key &&
          std::chrono::steady_clock::now() - private_up_->idle_since < private_up_->idle_timeout) {
        conn = std::move(private_up_);
        state_.pool->reused(key);
      }
      private_up_.reset();
    } else {
      conn = state_.pool->take(key);
      if (!conn) conn = co_await state_.pool->take_remote(peer, key);
    }
    const bool reused = conn != nullptr;
    upstream_reused_ = reused;
    if (!conn) {
      std::string preamble;
      if (speaks_for_client)
        preamble = proxy_protocol_header(peer.options.proxy_protocol, client_addr_, server_addr_);
      auto c = co_await connect_upstream(peer, *wd_, upstream_parser_limits(opts_), preamble,
                                         state_.client_tls, key);
      if (!c) {
        Error e = app_.e_fail_to_connect(*this, peer, ctx_, std::move(c.error()));
        e.set_source(ErrorSource::Upstream);
        if (e.retry() && retries_ < opts_.max_retries) {
          retrying(e);
          continue;
        }
        co_return e;
      }
      conn = std::move(*c);
      state_.pool->opened(peer, key);
    }
    connected_at_ = clock::now();
    bool response_started = false;
    auto r = co_await proxy_attempt(conn, reused, response_started);
    if (r) {
      co_return ok();
    }
    Error e = app_.e_error_while_proxy(peer, *this, std::move(r.error()), ctx_, reused);
    const bool replayable = !response_started && !response_written() &&
                            !(req_body_started_ && replay_truncated_);
    if (e.retry() && replayable && retries_ < opts_.max_retries) {
      retrying(e);
      continue;
    }
    co_return e;
  }
}


}  // namespace portico::detail
