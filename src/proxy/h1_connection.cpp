#include "proxy/h1_connection.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "core/log.hpp"

namespace portico::detail {

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::milliseconds;

namespace {
constexpr std::size_t kReadBuffer = 16 * 1024;
constexpr std::string_view kCrlf = "\r\n";
constexpr std::size_t kLingerBytes = 1 << 20;
constexpr milliseconds kLingerTimeout{1000};

void cancel_tcp(void* s) { static_cast<asio::ip::tcp::socket*>(s)->cancel(); }
void cancel_stream(void* s) { static_cast<stream_socket*>(s)->cancel(); }

/// Appends to `iov` the buffers that send `pieces` as a body: raw, or as chunks followed (when
/// `end`) by the last chunk and `trailers`. Chunk-size lines are written to `frame` first, so the
/// buffers point into a string that does not grow afterwards.
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
    if (chunked) iov.emplace_back(kCrlf.data(), kCrlf.size());
  }
  if (chunked && end) iov.emplace_back(frame.data() + off, frame.size() - off);
  return body;
}

bool is_client_gone(const error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::error::connection_aborted;
}
}  // namespace

H1Connection::H1Connection(HttpProxyService& svc, ServiceWorkerState& state, Worker& w,
                           asio::ip::tcp::socket sock)
    : svc_(svc),
      app_(svc.app()),
      opts_(svc.options()),
      state_(state),
      worker_(w),
      sock_(std::move(sock)),
      wd_(std::make_shared<Watchdog>(sock_.get_executor())),
      parser_(http1::Kind::Request,
              http1::ParserLimits{opts_.max_header_bytes, opts_.max_header_count,
                                 opts_.max_request_target_bytes}),
      pump_timer_(sock_.get_executor()) {
  error_code ec;
  auto re = sock_.remote_endpoint(ec);
  if (!ec) client_addr_ = SocketAddr::from_sockaddr(re.data(), static_cast<socklen_t>(re.size()));
  auto le = sock_.local_endpoint(ec);
  if (!ec) server_addr_ = SocketAddr::from_sockaddr(le.data(), static_cast<socklen_t>(le.size()));
  sock_.set_option(asio::ip::tcp::no_delay(true), ec);
  const std::size_t align = app_.ctx_align() < alignof(std::max_align_t) ? alignof(std::max_align_t)
                                                                         : app_.ctx_align();
  ctx_mem_.reset(new std::byte[app_.ctx_size() + align]);
  void* p = ctx_mem_.get();
  std::size_t space = app_.ctx_size() + align;
  ctx_ = std::align(app_.ctx_align(), app_.ctx_size(), p, space);
  worker_.add(this);
}

H1Connection::~H1Connection() {
  wd_->close();
  worker_.remove(this);
}

void H1Connection::drain() noexcept {
  drain_requested_ = true;
  if (idle_) abort();
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
  std::size_t n = co_await sock_.async_read_some(
      asio::buffer(rbuf_.data() + rend_, rbuf_.size() - rend_),
      asio::redirect_error(asio::use_awaitable, ec));
  const bool timed_out = wd_->expired(Watchdog::DsRead);
  wd_->disarm(Watchdog::DsRead);
  if (timed_out) co_return Error::downstream(ErrorType::ReadTimedout, "reading from the client");
  if (ec == asio::error::eof)
    co_return Error::downstream(ErrorType::ConnectionClosed, "client closed the connection");
  if (ec) co_return Error::downstream(ErrorType::ReadError, ec.message());
  rend_ += n;
  co_return n;
}

task<Result<void>> H1Connection::ds_write(const std::vector<asio::const_buffer>& bufs) {
  wd_->arm(Watchdog::DsWrite, opts_.write_timeout, &cancel_tcp, &sock_);
  error_code ec;
  co_await asio::async_write(sock_, bufs, asio::redirect_error(asio::use_awaitable, ec));
  const bool timed_out = wd_->expired(Watchdog::DsWrite);
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
    // The first byte of a request may take the keep-alive time; the rest, the header timeout.
    auto r = co_await ds_read(first ? opts_.keepalive_timeout : opts_.header_read_timeout);
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
  if (h.status() >= 200) resp_status_ = h.status();
}

task<Result<void>> H1Connection::ds_send(const std::vector<std::string_view>& pieces, bool end,
                                         const HeaderMap* trailers) {
  iov_.clear();
  if (!wbuf_.empty()) iov_.emplace_back(wbuf_.data(), wbuf_.size());
  const std::size_t body =
      frame_body(pieces, ds_framing_ == DsFraming::Chunked, end, trailers, frame_, iov_);
  if (iov_.empty()) co_return ok();
  auto r = co_await ds_write(iov_);
  wbuf_.clear();
  if (!r) co_return r;
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

task<void> H1Connection::run() {
  while (!closed_) {
    idle_ = true;
    if (drain_requested_ || worker_.draining()) break;
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
  sock_.shutdown(asio::socket_base::shutdown_send, ec);
  if (!closed_ && (!req_body_done_ || rbegin_ < rend_)) co_await linger();
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
  Error e = Error::downstream(parser_.error_type(), std::string(parser_.error_reason()));
  const std::uint16_t status = parser_.error_status();
  log::error_log().error("Fail to parse request from {}: {}, status: {}", client_addr_.to_string(),
                         e.to_string(), status);
  std::exception_ptr exc;
  try {
    app_.construct_ctx(ctx_);
  } catch (...) {
    exc = std::current_exception();
  }
  co_await respond_error(status);
  if (exc) co_return;
  try {
    co_await app_.e_logging(*this, &e, ctx_);
  } catch (const std::exception& x) {
    log::error_log().error("exception in logging hook: {}", x.what());
  } catch (...) {
    log::error_log().error("exception in logging hook");
  }
  app_.destroy_ctx(ctx_);
}

task<void> H1Connection::handle_request() {
  start_ = clock::now();
  parser_.take_request(req_);
  retries_ = 0;
  failed_peers_.clear();
  peer_.reset();
  upstream_reused_ = false;
  keepalive_ = parser_.keep_alive();
  resp_status_ = 0;
  body_sent_ = body_received_ = 0;
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

  std::string panic;
  bool ctx_built = false;
  Result<void> r;
  try {
    app_.construct_ctx(ctx_);
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

task<void> H1Connection::finish_request(const Error* err) {
  try {
    co_await app_.e_logging(*this, err, ctx_);
  } catch (const std::exception& x) {
    log::error_log().error("logging hook threw: {}, {}", x.what(), request_summary());
  } catch (...) {
    log::error_log().error("logging hook threw, {}", request_summary());
  }
  app_.destroy_ctx(ctx_);
}

task<Result<void>> H1Connection::run_phases() {
  if (auto r = co_await app_.e_early_request_filter(*this, ctx_); !r) co_return r.error();
  {
    auto r = co_await app_.e_request_filter(*this, ctx_);
    if (!r) co_return r.error();
    if (*r) {
      if (!response_written()) keepalive_ = false;  // nothing framed the exchange
      co_return ok();
    }
  }
  {
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
    failed_peers_.push_back(peer_);
    ++retries_;
  };
  for (;;) {
    auto pr = co_await app_.e_upstream_peer(*this, ctx_);
    if (!pr) co_return pr.error();
    if (!*pr) co_return Error::upstream(ErrorType::ConnectNoRoute, "upstream_peer returned no peer");
    peer_ = std::move(*pr);
    const HttpPeer& peer = *peer_;
    const std::uint64_t key = peer.reuse_hash();
    UpstreamConnPtr conn = state_.pool.take(key);
    const bool reused = conn != nullptr;
    upstream_reused_ = reused;
    if (!conn) {
      auto c = co_await connect_upstream(
          peer, *wd_,
          http1::ParserLimits{opts_.max_response_header_bytes, opts_.max_response_header_count,
                              opts_.max_request_target_bytes});
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
      PoolStats::bump(state_.pool.stats().opened);
    }
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

// ---------------------------------------------------------------------------------------------
// one attempt on one upstream connection

task<Result<void>> H1Connection::us_write(UpstreamConn& up, const std::vector<asio::const_buffer>& b) {
  wd_->arm(Watchdog::UsWrite, peer_->options.write_timeout, &cancel_stream, &up.sock);
  error_code ec;
  co_await asio::async_write(up.sock, b, asio::redirect_error(asio::use_awaitable, ec));
  const bool timed_out = wd_->expired(Watchdog::UsWrite);
  wd_->disarm(Watchdog::UsWrite);
  if (timed_out) co_return Error::upstream(ErrorType::WriteTimedout, "writing to the upstream");
  if (ec) {
    Error e = Error::upstream(ErrorType::WriteError, ec.message());
    e.set_retry_type(RetryType::ReusedOnly);
    co_return e;
  }
  co_return ok();
}

task<Result<std::size_t>> H1Connection::us_read(UpstreamConn& up, milliseconds timeout) {
  if (up.buf.empty()) up.buf.resize(opts_.body_buffer_bytes);
  up.begin = up.end = 0;
  wd_->arm(Watchdog::UsRead, timeout.count() ? timeout : peer_->options.read_timeout,
           &cancel_stream, &up.sock);
  error_code ec;
  std::size_t n = co_await up.sock.async_read_some(asio::buffer(up.buf),
                                                   asio::redirect_error(asio::use_awaitable, ec));
  const bool timed_out = wd_->expired(Watchdog::UsRead);
  wd_->disarm(Watchdog::UsRead);
  if (timed_out) co_return Error::upstream(ErrorType::ReadTimedout, "reading from the upstream");
  if (ec == asio::error::eof) co_return std::size_t{0};
  if (ec) co_return Error::upstream(ErrorType::ReadError, ec.message());
  up.end = n;
  co_return n;
}

task<Result<void>> H1Connection::proxy_attempt(UpstreamConnPtr& conn, bool reused,
                                               bool& response_started) {
  UpstreamConn& up = *conn;
  pump_running_ = false;
  pump_exception_ = nullptr;
  pump_result_ = ok();
  Result<void> r;
  std::exception_ptr exc;
  try {
    ConnectionInfo info{reused, up.peer, up.local, up.fd()};
    r = co_await app_.e_connected_to_upstream(*this, info, ctx_);
    if (r) r = co_await attempt_inner(up, response_started);
  } catch (...) {
    exc = std::current_exception();
  }
  if (pump_running_) {
    // The response ended (or failed) before the client finished sending its body.
    pump_cancel_.emit(asio::cancellation_type::terminal);
    while (pump_running_) {
      pump_timer_.expires_at(std::chrono::steady_clock::time_point::max());
      error_code ec;
      co_await pump_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }
  if (exc) std::rethrow_exception(exc);
  if (pump_exception_) std::rethrow_exception(pump_exception_);
  // A failed body pump explains a failed response read better than "operation aborted". A
  // response that completed while the upload was still going is a success; the connection
  // closes because the rest of the body was not read.
  if (!pump_result_ && !r) r = pump_result_.error();
  // Whether the client connection survives is decided once, for the final outcome, in
  // handle_request: a failed attempt may still be retried.

  const bool reusable = r && !tunnel_ && req_body_done_ && up.parser.keep_alive() && up.begin == up.end &&
                        (opts_.upstream_request_limit == 0 ||
                         ++up.requests < opts_.upstream_request_limit);
  if (reusable) state_.pool.put(std::move(conn));
  co_return r;
}

task<Result<void>> H1Connection::attempt_inner(UpstreamConn& up, bool& response_started) {
  if (connect_) {
    response_started = true;
    tunnel_ = true;
    resp_status_ = 200;
    wbuf_.assign("HTTP/1.1 200 Connection Established\r\n\r\n");
    pieces_.clear();
    if (auto w = co_await ds_send(pieces_, false, nullptr); !w) co_return w;
    co_return co_await run_tunnel(up);
  }
  // Request head.
  up_req_ = req_;
  http1::strip_hop_by_hop(up_req_.headers());
  up_req_.set_version(Version::Http11);
  if (upgrade_) {
    // The one hop-by-hop exchange a proxy forwards on purpose: the switch of protocols.
    if (auto u = req_.headers().get("upgrade")) up_req_.headers().append("Upgrade", *u);
    up_req_.headers().append("Connection", "upgrade");
  }
  if (auto r = co_await app_.e_upstream_request_filter(*this, up_req_, ctx_); !r) co_return r;
  // A body without a length (or whose length a hook removed) is re-chunked upstream.
  if (req_has_body_ && !up_req_.headers().contains("content-length"))
    up_req_.headers().append("Transfer-Encoding", "chunked");
  us_frame_.clear();
  http1::serialize_request_head(up_req_, us_frame_);
  us_iov_.clear();
  us_iov_.emplace_back(us_frame_.data(), us_frame_.size());
  if (auto r = co_await us_write(up, us_iov_); !r) co_return r;

  // Request body: streamed concurrently with the response.
  if (req_has_body_) {
    start_side(pump_request_body(up), up);
  } else {
    BodyChunk empty;
    if (auto r = app_.e_request_body_filter(*this, empty, true, ctx_); !r) co_return r;
  }

  // Response head (skipping 1xx interim responses, which are relayed to HTTP/1.1 clients).
  up.parser.set_no_body_expected(head_request_);
  bool got_bytes = false;
  for (;;) {
    if (up.begin == up.end) {
      auto n = co_await us_read(up);
      if (!n) {
        Error e = n.error();
        if (!got_bytes && e.type() == ErrorType::ReadError) e.set_retry_type(RetryType::ReusedOnly);
        co_return e;
      }
      if (*n == 0) {
        if (got_bytes) co_return Error::upstream(ErrorType::InvalidHTTPHeader, "upstream closed mid-header");
        Error e = Error::upstream(ErrorType::ConnectionClosed, "upstream closed before responding");
        e.set_retry_type(RetryType::ReusedOnly);
        co_return e;
      }
      got_bytes = true;
    }
    auto step = up.parser.feed(up.buf.data() + up.begin, up.end - up.begin);
    up.begin += step.consumed;
    if (step.event == http1::Event::Error)
      co_return Error::upstream(up.parser.error_type(),
                                "invalid response: " + std::string(up.parser.error_reason()));
    if (step.event != http1::Event::Headers) continue;
    up.parser.take_response(resp_);
    const std::uint16_t st = resp_.status();
    if (st >= 100 && st < 200 && st != 101) {
      if (auto r = app_.e_upstream_response_filter(*this, resp_, ctx_); !r) co_return r;
      // Consume the (bodyless) interim message, then relay it.
      auto done = up.parser.feed(up.buf.data() + up.begin, up.end - up.begin);
      up.begin += done.consumed;
      if (req_.version() != Version::Http10) {
        wbuf_.clear();
        http1::serialize_response_head(resp_, wbuf_);
        iov_.clear();
        iov_.emplace_back(wbuf_.data(), wbuf_.size());
        auto w = co_await ds_write(iov_);
        wbuf_.clear();
        if (!w) co_return w;
      }
      continue;
    }
    if (st == 101 && !upgrade_)
      co_return Error::upstream(ErrorType::InvalidHTTPHeader, "101 without an upgrade request");
    break;
  }
  response_started = true;

  if (resp_.status() == 101) {
    // The upstream switched protocols: relay the 101, then the connection is a byte tunnel.
    const std::string upgrade(resp_.headers().get("upgrade").value_or(""));
    http1::strip_hop_by_hop(resp_.headers());
    if (auto r = app_.e_upstream_response_filter(*this, resp_, ctx_); !r) co_return r;
    if (auto r = co_await app_.e_response_filter(*this, resp_, ctx_); !r) co_return r;
    resp_.headers().append("Connection", "upgrade");
    if (!upgrade.empty()) resp_.headers().append("Upgrade", upgrade);
    resp_.set_version(Version::Http11);
    wbuf_.clear();
    http1::serialize_response_head(resp_, wbuf_);
    resp_status_ = 101;
    tunnel_ = true;
    pieces_.clear();
    if (auto w = co_await ds_send(pieces_, false, nullptr); !w) co_return w;
    co_return co_await run_tunnel(up);
  }

  // Response header filters, then the head goes out with the first body bytes.
  http1::strip_hop_by_hop(resp_.headers());
  if (auto r = app_.e_upstream_response_filter(*this, resp_, ctx_); !r) co_return r;
  if (auto r = co_await app_.e_response_filter(*this, resp_, ctx_); !r) co_return r;
  const bool bodyless = up.parser.framing() == http1::Framing::None &&
                        (head_request_ || resp_.status() == 204 || resp_.status() == 304);
  if (up.parser.framing() == http1::Framing::UntilClose ||
      up.parser.framing() == http1::Framing::Chunked) {
    // Re-framed for the client; a length from a close-delimited upstream cannot be trusted.
    if (up.parser.framing() == http1::Framing::UntilClose) resp_.headers().remove("content-length");
  }
  prepare_response_head(resp_, bodyless);

  for (;;) {
    // Feeding zero bytes is fine: it completes a bodyless message.
    auto step = up.parser.feed(up.buf.data() + up.begin, up.end - up.begin);
    up.begin += step.consumed;
    if (step.event == http1::Event::NeedMore) {
      auto n = co_await us_read(up);
      if (!n) co_return n.error();
      if (*n > 0) continue;
      step = up.parser.finish();
    }
    if (step.event == http1::Event::Error) {
      // Truncated or corrupt body after the head went out: close so the client sees it.
      keepalive_ = false;
      ds_framing_ = DsFraming::Close;
      Error e = Error::upstream(up.parser.error_type(), std::string(up.parser.error_reason()));
      co_return e;
    }
    const auto& spans = up.parser.body_chunks();
    const bool end = step.event == http1::Event::MessageComplete;
    if (chunks_.size() < spans.size() + 1) chunks_.resize(spans.size() + 1);
    pieces_.clear();
    for (std::size_t k = 0; k < spans.size(); ++k) {
      chunks_[k].reset(spans[k]);
      if (auto r = app_.e_response_body_filter(*this, chunks_[k], false, ctx_); !r) co_return r;
      pieces_.push_back(chunks_[k].data());
    }
    const HeaderMap* trailers = nullptr;
    if (end) {
      BodyChunk& last = chunks_[spans.size()];
      last.reset({});
      if (auto r = app_.e_response_body_filter(*this, last, true, ctx_); !r) co_return r;
      pieces_.push_back(last.data());
      if (!up.parser.trailers().empty()) {
        if (auto r = app_.e_response_trailer_filter(*this, up.parser.trailers(), ctx_); !r)
          co_return r;
        trailers = &up.parser.trailers();
      }
    }
    if (!pieces_.empty() || end || !wbuf_.empty()) {
      auto w = co_await ds_send(pieces_, end, trailers);
      if (!w) co_return w;
    }
    if (end) break;
  }
  if (ds_framing_ == DsFraming::Close) keepalive_ = false;
  co_return ok();
}

void H1Connection::start_side(task<Result<void>> t, UpstreamConn& up) {
  pump_running_ = true;
  asio::co_spawn(
      sock_.get_executor(), std::move(t),
      asio::bind_cancellation_slot(
          pump_cancel_.slot(), [this, &up](std::exception_ptr e, Result<void> res) {
            pump_running_ = false;
            pump_exception_ = e;
            pump_result_ = std::move(res);
            if (e || !pump_result_) {
              error_code ec;
              up.sock.cancel(ec);  // unblock the other direction
            }
            pump_timer_.cancel();
          }));
}

task<Result<void>> H1Connection::run_tunnel(UpstreamConn& up) {
  keepalive_ = false;
  start_side(tunnel_to_upstream(up), up);
  // Upstream to client, in this coroutine. Bytes that came with the 101 go first.
  if (chunks_.empty()) chunks_.resize(1);
  for (;;) {
    if (up.begin == up.end) {
      auto n = co_await us_read(up, opts_.tunnel_idle_timeout);
      if (!n) co_return n.error();
      if (*n == 0) break;  // the upstream closed its side
    }
    chunks_[0].reset(std::string_view(up.buf.data() + up.begin, up.end - up.begin));
    up.begin = up.end;
    if (auto r = app_.e_response_body_filter(*this, chunks_[0], false, ctx_); !r) co_return r;
    pieces_.assign(1, chunks_[0].data());
    if (auto w = co_await ds_send(pieces_, false, nullptr); !w) co_return w;
  }
  error_code ec;
  sock_.shutdown(asio::socket_base::shutdown_send, ec);
  co_return ok();
}

task<Result<void>> H1Connection::tunnel_to_upstream(UpstreamConn& up) {
  if (req_chunks_.empty()) req_chunks_.resize(1);
  for (;;) {
    if (rbegin_ == rend_) {
      auto n = co_await ds_read(opts_.tunnel_idle_timeout);
      if (!n) {
        if (n.error().type() != ErrorType::ConnectionClosed) co_return n.error();
        error_code ec;
        up.sock.shutdown(asio::socket_base::shutdown_send, ec);  // pass the half-close on
        req_body_done_ = true;
        co_return ok();
      }
    }
    req_chunks_[0].reset(std::string_view(rbuf_.data() + rbegin_, rend_ - rbegin_));
    rbegin_ = rend_;
    if (auto r = app_.e_request_body_filter(*this, req_chunks_[0], false, ctx_); !r) co_return r;
    if (req_chunks_[0].empty()) continue;
    us_iov_.assign(1, asio::const_buffer(req_chunks_[0].data().data(), req_chunks_[0].size()));
    body_received_ += req_chunks_[0].size();
    if (auto w = co_await us_write(up, us_iov_); !w) co_return w;
  }
}

task<Result<void>> H1Connection::us_send_body(UpstreamConn& up, std::size_t n, bool end) {
  const bool chunked = up_req_.headers().has_token("transfer-encoding", "chunked");
  us_pieces_.clear();
  for (std::size_t k = 0; k < n; ++k) us_pieces_.push_back(req_chunks_[k].data());
  const HeaderMap* trailers = end && chunked && !parser_.trailers().empty() ? &parser_.trailers() : nullptr;
  us_iov_.clear();
  body_received_ += frame_body(us_pieces_, chunked, end, trailers, us_frame_, us_iov_);
  if (us_iov_.empty()) co_return ok();
  co_return co_await us_write(up, us_iov_);
}

task<Result<void>> H1Connection::pump_request_body(UpstreamConn& up) {
  if (req_chunks_.size() < 2) req_chunks_.resize(2);
  // A retry first replays what earlier attempts read from the client (through the filter again).
  if (req_body_started_ || req_body_done_) {
    std::size_t n = 0;
    if (!replay_.empty()) {
      req_chunks_[n].reset(replay_);
      if (auto r = app_.e_request_body_filter(*this, req_chunks_[n], false, ctx_); !r) co_return r;
      ++n;
    }
    if (req_body_done_) {
      req_chunks_[n].reset({});
      if (auto r = app_.e_request_body_filter(*this, req_chunks_[n], true, ctx_); !r) co_return r;
      ++n;
    }
    if (auto w = co_await us_send_body(up, n, req_body_done_); !w) co_return w;
    if (req_body_done_) co_return ok();
  }
  for (;;) {
    auto step = parser_.feed(rbuf_.data() + rbegin_, rend_ - rbegin_);
    if (step.event == http1::Event::NeedMore) {
      rbegin_ += step.consumed;
      auto n = co_await ds_read(opts_.body_read_timeout);
      if (!n) {
        Error e = n.error();
        if (e.type() == ErrorType::ConnectionClosed)
          e = Error::downstream(ErrorType::PrematureBodyEnd, "client closed during the request body");
        co_return e;
      }
      continue;
    }
    if (step.event == http1::Event::Error)
      co_return Error::downstream(parser_.error_type(), std::string(parser_.error_reason()));
    // The parser has taken these bytes: account for them now, so that a cancelled write cannot
    // leave them to be parsed (and replayed) twice. The spans stay valid until the next read.
    rbegin_ += step.consumed;
    const auto& spans = parser_.body_chunks();
    const bool end = step.event == http1::Event::MessageComplete;
    if (req_chunks_.size() < spans.size() + 1) req_chunks_.resize(spans.size() + 1);
    for (std::size_t k = 0; k < spans.size(); ++k) {
      req_body_started_ = true;
      // Keep a copy for a retry while it fits; past the limit the request is no longer replayable.
      if (!replay_truncated_) {
        if (replay_.size() + spans[k].size() <= opts_.retry_buffer_bytes)
          replay_.append(spans[k]);
        else
          replay_truncated_ = true;
      }
      req_chunks_[k].reset(spans[k]);
      if (auto r = app_.e_request_body_filter(*this, req_chunks_[k], false, ctx_); !r) co_return r;
    }
    if (end) {
      req_chunks_[spans.size()].reset({});
      if (auto r = app_.e_request_body_filter(*this, req_chunks_[spans.size()], true, ctx_); !r)
        co_return r;
    }
    if (end) req_body_done_ = true;  // read in full; a retry replays it without reading
    if (auto w = co_await us_send_body(up, spans.size() + (end ? 1 : 0), end); !w) co_return w;
    if (end) co_return ok();
  }
}

}  // namespace portico::detail
