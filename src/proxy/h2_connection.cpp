#include "proxy/h2_connection.hpp"

#include <algorithm>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "core/log.hpp"
#include "core/socket_io.hpp"
#include "http2/translate.hpp"
#include "observe/proxy_observer.hpp"
#include "proxy/h2_upstream.hpp"

namespace portico::detail {

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::milliseconds;

namespace {
constexpr std::size_t kReadBuffer = 16 * 1024;
/// How long a draining connection without streams waits for the client to acknowledge the
/// shutdown PING before it closes anyway.
constexpr milliseconds kDrainGrace{1000};

constexpr Watchdog::CancelFn cancel_tcp = &Watchdog::cancel_io<asio::ip::tcp::socket>;

void log_stream_exception(std::exception_ptr e) { log::ended_by(e, "HTTP/2 stream"); }
}  // namespace

h2::Settings h2_settings(const Http2Options& o, bool server) {
  h2::Settings s;
  s.max_concurrent_streams = o.max_concurrent_streams;
  s.max_header_list_size = o.max_header_list_size;
  s.stream_window = o.stream_window;
  s.connection_window = o.connection_window;
  s.max_frame_size = o.max_frame_size;
  s.header_table_size = o.header_table_size;
  s.send_buffer_bytes = o.send_buffer_bytes;
  s.flood_window = o.flood_window;
  s.max_resets_per_window = o.max_resets_per_window;
  s.max_settings_per_window = o.max_settings_per_window;
  s.max_pings_per_window = o.max_pings_per_window;
  s.max_priority_per_window = o.max_priority_per_window;
  s.max_empty_frames = o.max_empty_frames;
  s.max_continuations = o.max_continuations;
  if (!server) s.max_outbound_streams = o.max_concurrent_streams;
  return s;
}

// ---------------------------------------------------------------------------------------------
// H2Stream

H2Stream::H2Stream(H2Connection& conn, std::int32_t id, std::uint32_t index)
    : ProxyRequest(conn.svc_, conn.state_, conn.worker_),
      conn_(conn),
      id_(id),
      rd_sig_(conn.sock_.get_executor()),
      wr_sig_(conn.sock_.get_executor()) {
  client_addr_ = conn.owner_.client_addr();
  server_addr_ = conn.owner_.server_addr();
  if (const TlsInfo* t = conn.owner_.tls()) tls_info_ = std::make_unique<TlsInfo>(*t);
  conn_requests_ = index;
  obs_->h2_stream(1);
}

H2Stream::~H2Stream() {
  if (!released_) end();
}

void H2Stream::end() noexcept {
  drop_ctx();
  obs_->h2_stream(-1);
  if (!detached_) conn_.stream_done(id_);
}

void H2Stream::reuse(std::int32_t id, std::uint32_t index) noexcept {
  id_ = id;
  conn_requests_ = index;
  trailers_out_.clear();
  req_trailers_.clear();
  head_pending_ = head_bodyless_ = head_error_ = false;
  local_done_ = remote_end_ = gone_ = closed_ = expired_ = detached_ = released_ = false;
  to_consume_ = 0;
  send_piece_ = send_off_ = 0;
  send_started_ = false;
  obs_->h2_stream(1);
}

void H2StreamRelease::operator()(H2Stream* s) const noexcept {
  if (!s->detached_) s->conn_.stream_gone(s);  // else the connection went first (a worker torn down)
  delete s;
}

task<void> H2Stream::serve(H2StreamPtr s) {
  // This frame owns the stream: it lives exactly as long as the coroutines that use it.
  for (;;) {
    // The request runs in this frame: no coroutine of its own per stream.
    if (s->prepare()) {
      co_await s->serve_request();
      s->conclude();
    }
    if (!s->conn_.park(*s)) co_return;
    // Parked: the connection assigns the next stream (or ends) by notifying start_sig_. No
    // suspension between park() and the wait, so the notification cannot come first.
    co_await s->start_sig_.wait();
    if (!s->assigned_) co_return;
    s->assigned_ = false;
  }
}

Error H2Stream::gone_error() const {
  if (expired_) return Error::downstream(ErrorType::WriteTimedout, "request deadline passed");
  return Error::downstream(ErrorType::ConnectionClosed, "the client reset the stream");
}

bool H2Stream::prepare() {
  if (gone_) {
    // Reset by the client before it started (HEADERS and RST_STREAM together): nothing to
    // answer and nobody to answer it to. The session counts it against the rapid reset limit.
    conn_.session_.discard(id_);
    return false;
  }
  begin_request();
  client_gone_ = gone_;
  keepalive_ = true;
  const bool end_stream = end_stream_;
  std::string scheme;
  // fields_ keeps an ordinary head until the next stream takes this object: its memory then
  // goes back to the session for the heads to come. A large one is freed now.
  auto translated = h2::take_request(fields_, req_, &scheme, /*checked=*/true);
  if (fields_.byte_size() > h2::Session::kSpareHeadBytes) fields_ = HeaderMap();
  if (auto& r = translated; !r) {
    // Malformed (RFC 9113 §8.1.1): a stream error, the request goes nowhere.
    log::error_log().info("HTTP/2 client {}: stream {}: {}", client_addr_.to_string(), id_,
                          r.error().to_string());
    if (!gone_) conn_.session_.reset(id_, h2::ErrorCode::ProtocolError);
    conn_.session_.discard(id_);
    conn_.kick();
    return false;
  }
  head_request_ = req_.method() == "HEAD";
  connect_ = req_.method() == "CONNECT";
  upgrade_ = false;
  remote_end_ = remote_end_ || end_stream;
  req_has_body_ = !end_stream;
  req_body_done_ = end_stream;
  return true;
}

void H2Stream::conclude() {
  // The response may have ended before the request body did (RFC 9113 §8.1: the server then
  // resets with NO_ERROR); a response cut short is reset, as an HTTP/1 connection would close.
  if (!gone_ && !closed_) {
    if (!local_done_)
      conn_.session_.reset(id_, h2::ErrorCode::InternalError);
    else if (!remote_end_)
      conn_.session_.reset(id_, h2::ErrorCode::NoError);
  }
  conn_.session_.discard(id_);
  to_consume_ = 0;
  conn_.kick();
}

task<bool> H2Stream::wait(asio::steady_timer& t, milliseconds timeout) {
  co_return co_await wait_on(t, timeout) == Wake::Notified;
}

void H2Stream::ds_prepare_head(ResponseHeader& h, bool bodyless) {
  // The head is translated when it is sent, from resp_: every caller passes resp_, or a head it
  // moves into resp_ before sending.
  head_error_ = !h2::status_expressible(h.status());
  head_pending_ = true;
  head_bodyless_ = bodyless;
  if (h.status() >= 200) {
    resp_status_ = h.status();
    resp_head_at_ = clock::now();
  }
}

void H2Stream::ds_drop_head() noexcept {
  head_pending_ = false;
  resp_status_ = 0;
}

bool H2Stream::send_some(const std::vector<std::string_view>& pieces, bool end,
                         const HeaderMap* trailers, Result<void>& out) {
  if (gone_ || expired_) {
    out = gone_error();
    return true;
  }
  auto fail = [&](Error e) {
    out = std::move(e);
    return true;
  };
  h2::Session& s = conn_.session_;
  if (trailers && trailers->empty()) trailers = nullptr;
  std::size_t last = pieces.size();  // the last non-empty piece
  for (std::size_t k = 0; k < pieces.size(); ++k)
    if (!pieces[k].empty()) last = k;
  if (head_pending_) {
    head_pending_ = false;
    if (head_error_)
      return fail(Error::internal(ErrorType::H2Error, "the response cannot be sent over HTTP/2"));
    const bool eos = head_bodyless_ || (end && last == pieces.size() && !trailers);
    std::size_t field_bytes = 0;
    if (auto r = s.submit_response(id_, resp_, eos, &field_bytes); !r) return fail(r.error());
    head_sent_ += field_bytes;
    if (eos) local_done_ = true;
    conn_.kick();
  }
  if (local_done_) {  // a bodyless response drops what a hook still writes
    out = ok();
    return true;
  }
  for (; send_piece_ < pieces.size(); ++send_piece_, send_off_ = 0) {
    std::string_view p = pieces[send_piece_].substr(send_off_);
    if (p.empty()) continue;
    const bool fin = end && send_piece_ == last && !trailers;
    auto n = s.send_data(id_, p, fin);
    if (!n) return fail(n.error());
    send_off_ += *n;
    body_sent_ += *n;
    if (*n < p.size()) {
      // The stream's send buffer is full: the writer drains it as the client's window allows.
      conn_.kick();
      return false;
    }
    if (fin) local_done_ = true;
  }
  if (end && !local_done_) {
    if (trailers) {
      trailers_out_.clear();
      h2::from_trailers(*trailers, trailers_out_);
      if (auto r = s.send_trailers(id_, trailers_out_); !r) return fail(r.error());
    } else if (auto r = s.send_data(id_, {}, true); !r) {
      return fail(r.error());
    }
    local_done_ = true;
  }
  conn_.kick();
  out = ok();
  return true;
}

bool H2Stream::ds_send_now(const std::vector<std::string_view>& pieces, bool end,
                           const HeaderMap* trailers, Result<void>& r) {
  send_piece_ = send_off_ = 0;
  if (send_some(pieces, end, trailers, r)) return true;
  send_started_ = true;  // ds_send waits for room and goes on from send_piece_/send_off_
  return false;
}

task<Result<void>> H2Stream::ds_send(const std::vector<std::string_view>& pieces, bool end,
                                     const HeaderMap* trailers) {
  Result<void> r;
  if (!send_started_ && ds_send_now(pieces, end, trailers, r)) co_return r;
  send_started_ = false;
  for (;;) {
    const Wake w = co_await wait_on(wr_sig_, opts_.write_timeout);
    if (gone_ || expired_ || w == Wake::Cancelled) co_return gone_error();
    if (w == Wake::TimedOut)
      co_return Error::downstream(ErrorType::WriteTimedout, "writing to the client");
    if (send_some(pieces, end, trailers, r)) co_return r;
  }
}

task<Result<void>> H2Stream::ds_interim(ResponseHeader& h) {
  if (gone_) co_return gone_error();
  HeaderMap f;
  if (auto r = h2::from_response(h, f); !r) co_return ok();  // nothing HTTP/2 can carry
  if (auto r = conn_.session_.submit_informational(id_, f); !r) co_return r.error();
  conn_.kick();
  co_return ok();
}

task<Result<void>> H2Stream::ds_read_body(std::vector<std::string_view>& spans, bool& end) {
  h2::Session& s = conn_.session_;
  if (to_consume_) {
    // The previous part went upstream: free it, which reopens the client's window.
    s.consume(id_, to_consume_);
    to_consume_ = 0;
    conn_.kick();
  }
  spans.clear();
  end = false;
  for (;;) {
    if (gone_ || expired_)
      co_return Error::downstream(ErrorType::PrematureBodyEnd, "the client reset the stream during the request body");
    std::string_view v = s.received(id_);
    if (!v.empty()) {
      spans.push_back(v);
      to_consume_ = v.size();
      end = remote_end_ && s.buffered(id_) == v.size();
      co_return ok();
    }
    if (remote_end_) {
      end = true;
      co_return ok();
    }
    const Wake w = co_await wait_on(rd_sig_, opts_.body_read_timeout);
    if (w == Wake::Cancelled)
      co_return Error::downstream(ErrorType::ConnectionClosed, "request body no longer read");
    if (w == Wake::TimedOut && !gone_ && !expired_ && s.received(id_).empty() && !remote_end_)
      co_return Error::downstream(ErrorType::ReadTimedout, "waiting for the request body");
  }
}

const HeaderMap* H2Stream::ds_request_trailers() noexcept {
  return req_trailers_.empty() ? nullptr : &req_trailers_;
}

task<Result<void>> H2Stream::ds_tunnel(UpstreamConn&, const std::string*) {
  co_return Error::http_status(501, "CONNECT and protocol upgrades are not proxied over HTTP/2");
}

void H2Stream::cancel_downstream() noexcept {
  expired_ = true;
  rd_sig_.cancel();
  wr_sig_.cancel();
}

task<Result<void>> H2Stream::write_response_header(ResponseHeader resp, bool end_of_stream) {
  if (response_written())
    co_return Error::internal(ErrorType::InternalError, "a response header was already sent");
  if (gone_) co_return gone_error();
  if (resp.status() < 200) co_return co_await ds_interim(resp);
  const bool bodyless = head_request_ || resp.status() == 204 || resp.status() == 304;
  if (end_of_stream && !bodyless && !resp.headers().contains("content-length"))
    resp.headers().insert("Content-Length", "0");
  ds_prepare_head(resp, bodyless);
  resp_ = std::move(resp);
  pieces_.clear();
  co_return co_await ds_send(pieces_, end_of_stream, nullptr);
}

task<Result<void>> H2Stream::write_response_body(std::string_view data, bool end_of_stream) {
  if (!response_written())
    co_return Error::internal(ErrorType::InternalError, "write_response_body before a header");
  pieces_.clear();
  pieces_.push_back(data);
  co_return co_await ds_send(pieces_, end_of_stream, nullptr);
}

void H2Stream::on_data() noexcept { rd_sig_.cancel(); }

void H2Stream::on_trailers(const HeaderMap& fields) {
  if (auto r = h2::to_trailers(fields, req_trailers_, false); !r) {
    log::error_log().info("HTTP/2 client {}: stream {}: {}", client_addr_.to_string(), id_,
                          r.error().to_string());
    conn_.session_.reset(id_, h2::ErrorCode::ProtocolError);
    on_gone();
  }
}

void H2Stream::on_end() noexcept {
  remote_end_ = true;
  rd_sig_.cancel();
}

void H2Stream::on_writable() noexcept { wr_sig_.cancel(); }

void H2Stream::on_gone() noexcept {
  if (gone_) return;
  gone_ = true;
  client_gone_ = true;
  cancel_upstream_io();
  rd_sig_.cancel();
  wr_sig_.cancel();
}

void H2Stream::on_closed() noexcept {
  closed_ = true;
  if (!local_done_ || !remote_end_) on_gone();
}

// ---------------------------------------------------------------------------------------------
// H2Connection

H2Connection::H2Connection(HttpProxyService& svc, ServiceWorkerState& state, Worker& w,
                           Session& owner, tcp_socket& sock, tls_stream* tls, Watchdog& wd,
                           std::string_view initial, std::unique_ptr<h2::Session> session,
                           bool parkable)
    : svc_(svc),
      state_(state),
      worker_(w),
      owner_(owner),
      opts_(svc.options()),
      sock_(sock),
      tls_(tls),
      wd_(wd),
      obs_(svc.observer()),
      adopted_(session != nullptr),
      own_session_(
          session ? std::move(session)
                  : std::make_unique<h2::Session>(h2::Mode::Server, h2_settings(opts_.h2, true))),
      session_(*own_session_),
      initial_(initial),
      done_sig_(sock.get_executor()),
      parkable_(parkable) {
  if (!adopted_) obs_->h2_connection(1);  // (a parked one is still counted)
}

H2Connection::~H2Connection() {
  // Only when the worker is torn down with streams still suspended: they must not reach back.
  // (Not only those in streams_ and spare_: a stream just done is in neither until it parks.)
  for (H2Stream* s : live_) s->detached_ = true;
  if (own_session_) obs_->h2_connection(-1);
}

std::unique_ptr<h2::Session> H2Connection::park_session() noexcept {
  if (!leaving_ || !own_session_) return nullptr;
  session_.trim();  // the streams' coroutines have ended and given their field lists back
  return std::move(own_session_);
}

void H2Connection::kick() noexcept { write_sig_.notify(); }

void H2Connection::drain() noexcept {
  if (draining_ || aborted_) return;
  draining_ = true;
  session_.shutdown();
  kick();
  // Without streams, the client gets a moment to acknowledge the GOAWAY's PING.
  if (streams_.empty()) wd_.arm(Watchdog::DsRead, kDrainGrace, cancel_tcp, &sock_);
}

void H2Connection::abort() noexcept {
  aborted_ = true;
  for (auto& [id, s] : streams_) s->on_gone();
  error_code ec;
  sock_.cancel(ec);
  kick();
}

bool H2Connection::park(H2Stream& s) noexcept {
  s.end();
  s.released_ = true;
  if (spare_.size() >= kSpareStreams || aborted_ || reading_done_) return false;
  spare_.push_back(&s);
  return true;
}

void H2Connection::stream_gone(H2Stream* s) noexcept {
  if (auto it = std::find(spare_.begin(), spare_.end(), s); it != spare_.end()) spare_.erase(it);
  if (auto it = std::find(live_.begin(), live_.end(), s); it != live_.end()) {
    *it = live_.back();
    live_.pop_back();
  }
  done_sig_.cancel();
}

void H2Connection::unpark_all() noexcept {
  for (H2Stream* s : spare_) s->start_sig_.notify();  // assigned_ stays false: the coroutine ends
  spare_.clear();
}

void H2Connection::schedule_park() {
  const milliseconds park_after = opts_.keepalive_park_after;
  if (draining_ || park_after.count() <= 0 || park_after >= opts_.keepalive_timeout) return;
  state_.parker(sock_.get_executor(), park_after)
      .add(
          park_later_, [](void* c) { static_cast<H2Connection*>(c)->request_park(); }, this);
}

void H2Connection::request_park() noexcept {
  if (!streams_.empty() || aborted_ || draining_) return;
  // Only while nothing is being written: cancelling the socket's operations would end a write.
  // A write still going (a large response to a slow client) is waited for a while more.
  if (session_.want_write() || (tls_ && tls_->writing())) {
    schedule_park();
    return;
  }
  park_requested_ = true;
  error_code ec;
  sock_.cancel(ec);
}

bool H2Connection::can_leave() const noexcept {
  return parkable_ && !worker_.draining() && !session_.want_write() && !session_.has_events() &&
         session_.buffered() == 0 && (!tls_ || (!tls_->buffered() && !tls_->writing()));
}

void H2Connection::start_stream(std::int32_t id, HeaderMap& fields, bool end_stream) {
  if (!draining_) wd_.disarm(Watchdog::DsRead);  // not idle any more
  park_later_.cancel();
  if (!spare_.empty()) {
    // A parked stream and its coroutine take it: no new coroutine, no co_spawn.
    H2Stream* s = spare_.back();
    spare_.pop_back();
    s->reuse(id, streams_started_++);
    std::swap(s->fields_, fields);
    s->end_stream_ = end_stream;
    s->assigned_ = true;
    streams_.insert(id, s);
    s->start_sig_.notify();
    return;
  }
  H2StreamPtr s(new H2Stream(*this, id, streams_started_++));
  std::swap(s->fields_, fields);
  s->end_stream_ = end_stream;
  streams_.insert(id, s.get());
  live_.push_back(s.get());
  asio::co_spawn(sock_.get_executor(), H2Stream::serve(std::move(s)), &log_stream_exception);
}

void H2Connection::stream_done(std::int32_t id) {
  streams_.erase(id);
  if (streams_.empty()) {
    done_sig_.cancel();
    // The reader waits without a deadline while streams run: idle from now on.
    if (!reading_done_ && !aborted_) {
      wd_.arm(Watchdog::DsRead, draining_ ? kDrainGrace : opts_.keepalive_timeout, cancel_tcp,
              &sock_);
      schedule_park();
    }
  }
  kick();
}

void H2Connection::dispatch() {
  // Each event is handled in place (no copy); handling one queues none, and a queued one would
  // not move it.
  while (h2::Event* e = session_.next_event()) {
    auto it = streams_.find(e->stream_id);
    H2Stream* s = it == streams_.end() ? nullptr : it->second;
    switch (e->kind) {
      case h2::EventKind::Head:
        if (aborted_)
          session_.reset(e->stream_id, h2::ErrorCode::RefusedStream);
        else
          start_stream(e->stream_id, e->fields, e->end_stream);
        session_.recycle(std::move(e->fields));
        break;
      case h2::EventKind::Data:
        if (s)
          s->on_data();
        else
          session_.discard(e->stream_id);  // nobody reads it: give the window back
        break;
      case h2::EventKind::Trailers:
        if (s) s->on_trailers(e->fields);
        session_.recycle(std::move(e->fields));
        break;
      case h2::EventKind::EndStream:
        if (s) s->on_end();
        break;
      case h2::EventKind::Reset:
        if (s) {
          if (!s->local_done_) obs_->h2_client_reset();
          s->on_gone();
        }
        break;
      case h2::EventKind::Closed:
        if (s)
          s->on_closed();
        else
          session_.discard(e->stream_id);
        break;
      case h2::EventKind::Writable:
        if (s) s->on_writable();
        break;
      case h2::EventKind::GoawaySent:
        obs_->h2_goaway_sent(e->code);
        if (e->code != static_cast<std::uint32_t>(h2::ErrorCode::NoError))
          log::error_log().info("HTTP/2 client {}: GOAWAY {} sent{}{}",
                                owner_.client_addr().to_string(), h2::error_code_name(e->code),
                                session_.last_error().empty() ? "" : ": ", session_.last_error());
        break;
      case h2::EventKind::Malformed:
        log::error_log().info(
            "HTTP/2 client {}: stream {}: malformed request ({}), reset with "
            "PROTOCOL_ERROR",
            owner_.client_addr().to_string(), e->stream_id, e->why);
        break;
      case h2::EventKind::Rejected:
        log::error_log().info("HTTP/2 client {}: stream {}: header list over {} bytes, answered {}",
                              owner_.client_addr().to_string(), e->stream_id,
                              opts_.h2.max_header_list_size, e->code);
        break;
      default:
        break;
    }
    session_.pop_event();
  }
}

task<void> H2Connection::writer() {
  for (;;) {
    std::string_view out = session_.pending_output();
    dispatch();  // sending data may have made room in stream buffers (Writable)
    if (out.empty()) {
      if (aborted_ || (reading_done_ && streams_.empty())) break;
      if (!reading_done_ && !session_.want_read()) {
        // A GOAWAY ended the session (an error, or a drain that completed) and is written: the
        // reader stops waiting for bytes nobody will process.
        error_code ignored;
        sock_.cancel(ignored);
      }
      co_await write_sig_.wait();  // until kick()
      continue;
    }
    // Tried first without a suspension or a timer: most writes fit the socket buffer.
    const asio::const_buffer chunk(out.data(), out.size());
    const WriteTry t = try_write(sock_, tls_, chunk);
    error_code ec = t.ec;
    if (t.pending()) {
      wd_.arm(Watchdog::DsWrite, opts_.write_timeout, cancel_tcp, &sock_);
      co_await finish_write(sock_, tls_, chunk, t, ec);
      wd_.disarm(Watchdog::DsWrite);
    }
    const std::size_t n = ec ? 0 : out.size();
    if (ec) {
      write_failed_ = true;
      error_code ignored;
      sock_.cancel(ignored);  // the reader stops too
      break;
    }
    session_.consume_output(n);
  }
}

task<void> H2Connection::run() {
  writer_running_ = true;
  asio::co_spawn(sock_.get_executor(), writer(), [this](std::exception_ptr) {
    writer_running_ = false;
    done_sig_.cancel();
  });
  bool ok_so_far = true;
  if (!initial_.empty()) {
    auto r = session_.feed(initial_);
    initial_.clear();
    dispatch();
    kick();
    ok_so_far = r.has_value();
  }
  std::unique_ptr<char[]> buf(new char[kReadBuffer]);
  // Idle for keepalive_park_after (see request_park): the connection ends for its session to
  // be parked (can_leave()); else it is trimmed: the read buffer, the parked streams and the
  // session's spares are freed, empty buffers and the TLS buffers given back, and the
  // client's next bytes are read into `small` (the rest with a new buffer).
  bool parked = false;
  char small[64];
  const milliseconds park_after = opts_.keepalive_park_after;
  while (ok_so_far && !aborted_ && !write_failed_ && session_.want_read()) {
    // A connection without streams may idle for the keep-alive time (the drain grace when
    // draining); one with streams waits as long as they do (each has its own timeouts).
    milliseconds timeout{0};
    if (streams_.empty()) timeout = draining_ ? kDrainGrace : opts_.keepalive_timeout;
    if (parked && !draining_) {
      timeout = opts_.keepalive_timeout - park_after;
    } else if (streams_.empty()) {
      schedule_park();
    }
    wd_.arm(Watchdog::DsRead, timeout, cancel_tcp, &sock_);
    error_code ec;
    std::size_t n = 0;
    const auto into = parked ? asio::buffer(small) : asio::buffer(buf.get(), kReadBuffer);
    if (tls_)
      n = co_await tls_->read_some(into, ec);
    else if (const auto t = detail::recv_now(sock_, into, n, ec); t != detail::RecvTry::Done)
      n = co_await detail::recv_wait(sock_, into, t, asio::redirect_error(asio::use_awaitable, ec));
    park_later_.cancel();
    const bool idle_out = wd_.expired(Watchdog::DsRead);
    wd_.disarm(Watchdog::DsRead);
    if (idle_out && streams_.empty()) {
      // Idle (or drained): say goodbye properly.
      session_.terminate(h2::ErrorCode::NoError);
      break;
    }
    if (std::exchange(park_requested_, false) && ec == asio::error::operation_aborted &&
        !aborted_) {
      if (streams_.empty() && !draining_ && !parked && can_leave()) {
        // Idle, nothing to send or to read: the session goes to the ParkingLot with the socket
        // (H1Connection::park); everything else this connection holds is freed.
        leaving_ = true;
        break;
      }
      if (streams_.empty() && !draining_ && !parked) {
        parked = true;
        buf.reset();
        unpark_all();  // their coroutines end, with the memory of their last request
        session_.trim();
        if (tls_) tls_->trim();
        streams_.release();
        spare_.shrink_to_fit();
        state_.trim_soon();
        obs_->connection_trimmed(1);
      }
      continue;
    }
    // The idle deadline fired as a stream arrived: keep reading.
    if (idle_out && ec == asio::error::operation_aborted && !aborted_) continue;
    if (ec || n == 0) break;
    if (parked) {
      parked = false;
      obs_->connection_trimmed(-1);
      buf.reset(new char[kReadBuffer]);
    }
    auto r = session_.feed(std::string_view(static_cast<const char*>(into.data()), n));
    dispatch();
    kick();
    if (!r) {
      log::error_log().info("HTTP/2 client {}: {}", owner_.client_addr().to_string(),
                            r.error().to_string());
      break;
    }
  }
  if (parked) obs_->connection_trimmed(-1);
  buf.reset();
  reading_done_ = true;
  // Whatever is still running lost its client (or the session ended).
  for (auto& [id, s] : streams_) s->on_gone();
  kick();
  // Parked streams end their coroutines (those still running end theirs when they finish).
  unpark_all();
  while (!streams_.empty() || writer_running_ || !live_.empty()) {
    co_await wait_on(done_sig_, milliseconds(0));
    unpark_all();
  }
}

}  // namespace portico::detail
