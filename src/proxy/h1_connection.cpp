#include "proxy/h1_connection.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "core/accept_raw.hpp"
#include "core/log.hpp"
#include "core/socket_io.hpp"
#include "observe/proxy_observer.hpp"
#include "proxy/h2_connection.hpp"
#include "proxy/parking.hpp"

namespace portico::detail {

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::milliseconds;

namespace {
constexpr std::size_t kReadBuffer = 16 * 1024;
constexpr std::size_t kLingerBytes = 1 << 20;
constexpr milliseconds kLingerTimeout{1000};

constexpr Watchdog::CancelFn cancel_tcp = &Watchdog::cancel_io<asio::ip::tcp::socket>;

bool is_client_gone(const error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::error::connection_aborted;
}
}  // namespace

H1Connection::H1Connection(HttpProxyService& svc, ServiceWorkerState& state, Worker& w,
                           Accepted& a, std::shared_ptr<ServerTls> tls)
    : ProxyRequest(svc, state, w),
      sock_(std::move(a.socket)),
      parser_(http1::Kind::Request,
              http1::ParserLimits{opts_.max_header_bytes, opts_.max_header_count,
                                 opts_.max_request_target_bytes}) {
  raw_ = std::move(a.raw);
  client_addr_ = a.peer;
  server_addr_ = a.local;
  sockaddr_storage sa;
  socklen_t len = sizeof sa;
  if (client_addr_.empty() && ::getpeername(fd(), reinterpret_cast<sockaddr*>(&sa), &len) == 0)
    client_addr_ = SocketAddr::from_sockaddr(reinterpret_cast<const sockaddr*>(&sa), len);
  len = sizeof sa;
  if (server_addr_.empty() && ::getsockname(fd(), reinterpret_cast<sockaddr*>(&sa), &len) == 0)
    server_addr_ = SocketAddr::from_sockaddr(reinterpret_cast<const sockaddr*>(&sa), len);
  if (!a.nodelay) {
    const int one = 1;
    ::setsockopt(fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  server_tls_ = std::move(tls);
  const ListenerOptions lo = state.listener(svc, a.listener).options;
  expect_proxy_header_ = lo.proxy_protocol;
  // TLS and the PROXY protocol wait for the client's bytes from the start.
  if (server_tls_ || expect_proxy_header_) attach();
  h2c_ = !server_tls_ && (lo.h2c || opts_.h2c);
  listener_ = a.listener;
  // Not for a PROXY protocol client: its address came from the header.
  parkable_ = !lo.proxy_protocol;
  worker_.add(this);
  state_.connection_started(worker_.active());
  if (a.served > 0 || a.parked) {
    // A parked connection whose client came back: counted when it was accepted, and known to
    // speak HTTP/1 or, with the session it kept, HTTP/2; over TLS, its session goes on in the
    // SSL object it kept (no handshake).
    conn_requests_ = a.served;
    h2c_ = false;
    if (a.parked) {
      if (a.parked->ssl && server_tls_) {
        tls_ = std::make_unique<TlsStream<asio::ip::tcp::socket>>(
            sock_, std::exchange(a.parked->ssl, nullptr));
        tls_info_ = std::move(a.parked->info);
        tls_set_ = std::move(a.parked->set);
      }
      h2_session_ = std::move(a.parked->h2);
    }
  } else {
    obs_->connection_opened();
  }
}

H1Connection::~H1Connection() {
  SendBatch::remove(batch_item_);  // a response still queued (its coroutine was destroyed)
  // A request cut short (its coroutine frames destroyed while suspended) still ends its context:
  // what the context holds (in-flight counts, buffers, handles) is released.
  drop_ctx();  // before the connection is unregistered
  // As for upstream connections: keep the client's session resumable (session-ID cache).
  if (tls_ && SSL_is_init_finished(tls_->native_handle()))
    SSL_set_shutdown(tls_->native_handle(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  worker_.remove(this);
  // (The state is looked up: a hard stop destroys the frames left suspended after the worker's
  // states are gone.)
  if (auto* st = static_cast<ServiceWorkerState*>(worker_.state_for(&svc_)))
    st->connection_ended(worker_.active(), sock_.get_executor(), opts_.keepalive_park_after);
  if (trimmed_) obs_->connection_trimmed(-1);
  // An HTTP/2 connection that was to be parked and was not (a drain came first): closed idle.
  if (h2_session_) obs_->h2_connection(-1);
  if (!parked_) obs_->connection_closed();
}

void H1Connection::drain() noexcept {
  drain_requested_ = true;
  if (h2_) {
    h2_->drain();
    return;
  }
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
  wd_->arm(Watchdog::DsRead, std::min(opts_.keepalive_timeout, kFirstRequestGrace), cancel_tcp,
           &sock_);
}

void H1Connection::abort() noexcept {
  closed_ = true;
  if (h2_) h2_->abort();
  shutdown_client(asio::socket_base::shutdown_both);
  error_code ec;
  sock_.cancel(ec);
}

bool H1Connection::attach(bool drained) noexcept {
  if (adopt_accepted(sock_, raw_, server_addr_, client_addr_, drained)) return true;
  closed_ = true;
  return false;
}

void H1Connection::shutdown_client(asio::socket_base::shutdown_type how) noexcept {
  if (raw_) {
    ::shutdown(raw_.get(), static_cast<int>(how));
    return;
  }
  error_code ec;
  sock_.shutdown(how, ec);
}

void H1Connection::close_client() noexcept {
  raw_.reset();
  error_code ec;
  sock_.close(ec);
}

// ---------------------------------------------------------------------------------------------
// parking an idle keep-alive connection

void H1Connection::schedule_park(Deferred::clock::time_point now) {
  state_.parker(sock_.get_executor(), opts_.keepalive_park_after)
      .add(
          park_later_, [](void* c) { static_cast<H1Connection*>(c)->request_park(); }, this, now);
}

void H1Connection::request_park() noexcept {
  // Not while TLS records are on their way out (a key update's answer): cancelling the
  // socket's operations would end that write. Asked again once the delay has passed again.
  if (tls_ && tls_->writing()) {
    schedule_park();
    return;
  }
  park_ = true;
  error_code ec;
  sock_.cancel(ec);  // the idle read ends; run() then calls park() (or trim(), see can_park())
}

bool H1Connection::can_park() const noexcept {
  // Over TLS: nothing from the client waits decrypted or not, and nothing is being written (the
  // SSL object alone goes on; the stream's buffers do not).
  return parkable_ && (!tls_ || (!tls_->buffered() && !tls_->writing() && tls_info_));
}

void H1Connection::park() {
  if (worker_.draining() || drain_requested_) {
    park_ = false;
    return;  // ~H1Connection closes the socket
  }
  if (!state_.parking)
    state_.parking = std::make_unique<ParkingLot>(
        svc_, state_, worker_, opts_.keepalive_timeout - opts_.keepalive_park_after);
  const bool v6 = (server_addr_.empty() ? client_addr_ : server_addr_).family() == AF_INET6;
  ParkedConnPtr more;
  if (tls_ || h2_session_) {
    more.reset(new (std::nothrow) ParkedConn);
    if (!more) return;  // out of memory: ~H1Connection closes the connection
    if (tls_) {
      more->ssl = tls_->release();
      more->info = std::move(tls_info_);
      more->set = std::move(tls_set_);
      tls_.reset();
    }
    more->h2 = std::move(h2_session_);
  }
  const bool h2 = more && more->h2;
  if (!attach()) return;
  parked_ = state_.parking->park(sock_, listener_, conn_requests_, v6, std::move(more));
  // Not parked: the session is gone with the connection (idle: no stream is lost).
  if (!parked_ && h2) obs_->h2_connection(-1);
  state_.trim_soon();
}

void H1Connection::trim() noexcept {
  rbuf_ = ReadBuffer();
  rbegin_ = rend_ = 0;
  std::string().swap(wbuf_);
  std::string().swap(frame_);
  iov_ = {};
  release_request_memory();
  if (tls_) tls_->trim();
  trimmed_ = true;
  obs_->connection_trimmed(1);
  state_.trim_soon();
}

// ---------------------------------------------------------------------------------------------
// downstream I/O

task<Result<std::size_t>> H1Connection::ds_read(milliseconds timeout,
                                                Watchdog::clock::time_point now) {
  // Trimmed (see trim()): the wait needs no read buffer; the first bytes come through `first`.
  char first[64];
  const bool small = trimmed_ && rbuf_.empty();
  if (!small) {
    if (rbuf_.empty()) rbuf_.resize(kReadBuffer);
    if (rbegin_ == rend_) rbegin_ = rend_ = 0;
    if (rend_ == rbuf_.size()) {  // unconsumed bytes at the end: move them to the front
      std::memmove(rbuf_.data(), rbuf_.data() + rbegin_, rend_ - rbegin_);
      rend_ -= rbegin_;
      rbegin_ = 0;
    }
  }
  wd_->arm(Watchdog::DsRead, timeout, cancel_tcp, &sock_, now);
  error_code ec;
  const auto into =
      small ? asio::buffer(first) : asio::buffer(rbuf_.data() + rend_, rbuf_.size() - rend_);
  // (Not a conditional expression: GCC 12 destroys temporaries of a co_await in one twice.)
  std::size_t n;
  if (tls_) {
    n = co_await tls_->read_some(into, ec);
  } else {
    RecvTry t = raw_ ? recv_raw(raw_.get(), into, n, ec) : recv_now(sock_, into, n, ec);
    if (t != RecvTry::Done) {
      if (raw_ && !attach(t == RecvTry::Wait))
        co_return Error::downstream(ErrorType::ReadError, "registering the connection failed");
      n = co_await recv_wait(sock_, into, t, asio::redirect_error(asio::use_awaitable, ec));
    }
  }
  const bool timed_out = wd_->expired(Watchdog::DsRead) || (ec && wd_->expired(Watchdog::Total));
  wd_->disarm(Watchdog::DsRead);
  if (timed_out) co_return Error::downstream(ErrorType::ReadTimedout, "reading from the client");
  if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
    co_return Error::downstream(ErrorType::ConnectionClosed, "client closed the connection");
  if (ec) co_return Error::downstream(ErrorType::ReadError, ec.message());
  if (small) {
    trimmed_ = false;
    obs_->connection_trimmed(-1);
    rbuf_.resize(kReadBuffer);
    std::memcpy(rbuf_.data(), first, n);
    rbegin_ = rend_ = 0;
  }
  rend_ += n;
  co_return n;
}

Result<void> H1Connection::ds_write_result(const error_code& ec, bool timed_out) const {
  if (timed_out) return Error::downstream(ErrorType::WriteTimedout, "writing to the client");
  if (ec)
    return Error::downstream(is_client_gone(ec) ? ErrorType::ConnectionClosed : ErrorType::WriteError,
                             ec.message());
  return ok();
}

task<Result<void>> H1Connection::ds_write_wait(const std::vector<asio::const_buffer>& bufs, WriteTry t) {
  error_code ec;
  if (!attach()) co_return ds_write_result(asio::error::bad_descriptor, false);
  wd_->arm(Watchdog::DsWrite, opts_.write_timeout, cancel_tcp, &sock_);
  co_await finish_write(sock_, tls_.get(), BufferView(bufs), t, ec);
  const bool timed_out = wd_->expired(Watchdog::DsWrite) || (ec && wd_->expired(Watchdog::Total));
  wd_->disarm(Watchdog::DsWrite);
  co_return ds_write_result(ec, timed_out);
}

task<Result<void>> H1Connection::ds_write(const std::vector<asio::const_buffer>& bufs) {
  // Most writes fit the socket buffer: tried first without a suspension or a timer.
  const WriteTry t = try_write(fd(), tls_.get(), BufferView(bufs));
  if (!t.pending()) co_return ds_write_result(t.ec, false);
  co_return co_await ds_write_wait(bufs, t);
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
    const auto park_after = opts_.keepalive_park_after;
    // Trimmed when the first park_after of the idle wait had passed: the rest of it.
    if (first && trimmed_) wait = std::max(wait - park_after, milliseconds(1));
    if (first && (drain_requested_ || worker_.draining()))
      wait = std::min(wait, kFirstRequestGrace);
    // Between keep-alive requests with nothing buffered: a wait that lasts ends in park() (or,
    // when the connection cannot be parked, in trim()).
    // (One reading of the clock for the park's delay and the read's deadline.)
    const auto now = Watchdog::clock::now();
    if (first && !trimmed_ && conn_requests_ > 0 && rbegin_ == rend_ && parser_.idle() &&
        park_after.count() > 0 && park_after < wait && !drain_requested_ && !worker_.draining()) {
      schedule_park(now);
    }
    auto r = co_await ds_read(wait, now);
    park_later_.cancel();
    if (r) park_ = false;  // the next request came as the park was asked for: serve it
    if (!r) {
      if (park_ && !closed_ && !can_park()) {
        // A PROXY protocol listener's, or TLS with bytes buffered or records being written:
        // the connection stays, and gives back its buffers instead.
        park_ = false;
        if (drain_requested_ || worker_.draining()) co_return Error();  // idle: it closes now
        trim();
        continue;
      }
      if (park_ && !closed_) co_return Error();
      if (parser_.idle() && (r.error().type() == ErrorType::ConnectionClosed ||
                             r.error().type() == ErrorType::ReadTimedout || closed_))
        co_return Error();  // a clean end of an idle connection
      co_return r.error();
    }
  }
}

void H1Connection::ds_prepare_head(ResponseHeader& h, bool bodyless) {
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


bool H1Connection::ds_send_now(const std::vector<std::string_view>& pieces, bool end,
                               const HeaderMap* trailers, Result<void>& r) {
  iov_.clear();
  if (!wbuf_.empty()) iov_.emplace_back(wbuf_.data(), wbuf_.size());
  send_body_ =
      frame_body(pieces, ds_framing_ == DsFraming::Chunked, end, trailers, frame_, iov_);
  if (iov_.empty()) {
    r = ok();
    return true;
  }
  // The last bytes of a response on a plain connection that closes after it go with MSG_MORE,
  // and the half-close follows as soon as they are all taken (ds_sent): the kernel then puts
  // the FIN in the segment that carries them rather than sending it in one of its own when the
  // socket is closed, and the client sees the end of the response before logging runs.
  send_last_ = end && !keepalive_ && !tls_ && !connect_ && !upgrade_;
  // The end of a keep-alive response goes out with the round's other sends (see batch_send).
  if (end && keepalive_ && !connect_ && !upgrade_ && opts_.batch_response_sends)
    if (SendBatch* batch = worker_.send_batch(); batch && batch_send(*batch)) return false;
  // Most writes fit the socket buffer: tried first without a suspension or a timer.
  send_try_ = try_write(fd(), tls_.get(), BufferView(iov_), send_last_ ? MSG_MORE : 0);
  if (send_try_.pending()) {
    send_started_ = true;  // ds_send waits for the rest
    return false;
  }
  r = ds_sent(ds_write_result(send_try_.ec, false));
  return true;
}

// The last send of a keep-alive response waits in the worker's batch (core/send_batch.hpp) for
// the end of the event loop's round, and goes to the kernel with the round's other responses
// and upstream request heads in one io_uring call. Sent one by one, with the proxy's work for
// the next request between two of them, each response found the client's thread asleep again
// and woke it; on a virtual machine a cross-CPU wake-up is an interrupt the sender pays for
// (docs/performance.md, session 19). ds_send waits for the flush, which resumes it.
// Over TLS the records are encrypted now and held by the stream as a write under way.
bool H1Connection::batch_send(SendBatch& batch) {
  if (tls_) {
    error_code ec;
    const std::string_view records = tls_->stage_for_send(BufferView(iov_), ec);
    if (records.empty()) return false;  // the usual way (which reports an error again)
    batch_item_.iov = nullptr;
    batch_item_.data = records.data();
    batch_item_.size = records.size();
  } else {
    if (iov_.size() > batch_iov_.size()) return false;
    std::size_t total = 0;
    for (std::size_t k = 0; k < iov_.size(); ++k) {
      batch_iov_[k].iov_base = const_cast<void*>(iov_[k].data());
      batch_iov_[k].iov_len = iov_[k].size();
      total += iov_[k].size();
    }
    batch_item_.iov = batch_iov_.data();
    batch_item_.iovcnt = static_cast<unsigned>(iov_.size());
    batch_item_.size = total;
  }
  batch_item_.fd = fd();
  batch_item_.done = [](void* s) noexcept { static_cast<Signal*>(s)->notify_now(); };
  batch_item_.ctx = &batch_done_;
  batch.add(batch_item_, sock_.get_executor());
  send_started_ = true;
  send_batched_ = true;
  return true;
}

bool H1Connection::batch_settled(Result<void>& r) {
  if (batch_item_.queued_in) {  // woken before the flush (cancelled): sent the usual way
    SendBatch::remove(batch_item_);
    batch_item_.result = -EAGAIN;
  }
  const int res = batch_item_.result;
  const error_code failed = res < 0 && res != -EAGAIN
                                ? error_code(-res, asio::error::get_system_category())
                                : error_code();
  const std::size_t sent = res > 0 ? static_cast<std::size_t>(res) : 0;
  // Over TLS the stream holds the records and says whether any are left.
  if (tls_ ? tls_->sent_staged(sent, failed) : failed || batch_item_.sent_whole()) {
    r = ds_sent(failed ? ds_write_result(failed, false) : ok());
    return true;
  }
  // The socket took part of it, or nothing: the rest waits for room as any write does (over
  // TLS, the records the stream kept for write()).
  send_try_ = WriteTry{};
  send_try_.sent = sent;
  return false;
}

Result<void> H1Connection::ds_sent(Result<void> r) {
  const std::size_t head = wbuf_.size();
  wbuf_.clear();
  const bool last = std::exchange(send_last_, false);
  if (!r) return r;
  // (A write that waited sent its rest without MSG_MORE, which pushed what was held.)
  if (last) shutdown_client(asio::socket_base::shutdown_send);
  head_sent_ += head;
  body_sent_ += send_body_;
  return ok();
}

task<Result<void>> H1Connection::ds_send(const std::vector<std::string_view>& pieces, bool end,
                                         const HeaderMap* trailers) {
  if (!send_started_) {
    Result<void> r;
    if (ds_send_now(pieces, end, trailers, r)) co_return r;
  }
  send_started_ = false;
  if (std::exchange(send_batched_, false)) {
    co_await batch_done_.wait();  // resumed by the flush
    if (Result<void> r; batch_settled(r)) co_return r;
  }
  co_return ds_sent(co_await ds_write_wait(iov_, send_try_));
}

task<Result<void>> H1Connection::write_response_header(ResponseHeader resp, bool end_of_stream) {
  if (response_written())
    co_return Error::internal(ErrorType::InternalError, "a response header was already sent");
  if (closed_) co_return Error::downstream(ErrorType::ConnectionClosed, "client connection closed");
  const bool bodyless = head_request_ || resp.status() == 204 || resp.status() == 304 ||
                        resp.status() < 200;
  if (end_of_stream && !bodyless && !resp.headers().contains("content-length"))
    resp.headers().insert("Content-Length", "0");
  ds_prepare_head(resp, bodyless);
  resp_ = std::move(resp);
  pieces_.clear();
  // A final head that no body follows ends the response (see ds_send_now).
  co_return co_await ds_send(pieces_, (end_of_stream || bodyless) && resp_.status() >= 200,
                             nullptr);
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
  if (!attach()) co_return -1;
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
  wd_->arm(Watchdog::DsRead, opts_.header_read_timeout, cancel_tcp, &sock_);
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
  wd_->arm(Watchdog::DsRead, s.handshake_timeout, cancel_tcp, &sock_);
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
  tls_ = std::make_unique<TlsStream<asio::ip::tcp::socket>>(sock_, ssl);
  co_await tls_->handshake(true, ec);
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
    close_client();
    co_return;
  }
  bool tls_ok = true;
  if (server_tls_ && !tls_) {  // (a parked connection's TLS session goes on)
    tls_ok = co_await tls_handshake();
    obs_->tls_handshake(tls_ok, tls_ok && tls_info_->resumed);
  }
  if (!tls_ok) {
    close_client();
    co_return;
  }
  bool h2 = h2_session_ || (tls_info_ && tls_info_->alpn == "h2");
  if (!h2 && h2c_) h2 = co_await sniff_h2c_preface();
  if (h2) co_await run_h2();
  while (!closed_ && !h2 && !park_) {
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
    // The request runs in this frame: no coroutine of its own.
    if (prepare_request()) {
      co_await serve_request();
    } else {
      co_await handle_parse_error();
      keepalive_ = false;
    }
    ++conn_requests_;
    if (!keepalive_) break;
  }
  if (park_ && !closed_) {
    park();
    co_return;
  }
  error_code ec;
  if (tls_ && !closed_ && SSL_is_init_finished(tls_->native_handle())) {
    // Send close_notify (clients such as OpenSSL 3 report a close without it as an error, and
    // withdraw the session), but do not wait for the client's: mark it as received first.
    SSL_set_shutdown(tls_->native_handle(), SSL_RECEIVED_SHUTDOWN);
    wd_->arm(Watchdog::DsWrite, std::min(opts_.write_timeout, milliseconds(1000)), cancel_tcp, &sock_);
    co_await tls_->shutdown(ec);
    wd_->disarm(Watchdog::DsWrite);
  }
  // close() alone sends the FIN; the separate half-close is only needed to linger.
  if (!closed_ && (!req_body_done_ || rbegin_ < rend_)) {
    shutdown_client(asio::socket_base::shutdown_send);
    co_await linger();
  }
  close_client();
}

task<bool> H1Connection::sniff_h2c_preface() {
  // The first bytes go to the read buffer as for any request; they tell HTTP/2's preface
  // ("PRI * HTTP/2.0...", never a valid HTTP/1.1 request) from an HTTP/1 request.
  for (;;) {
    const auto m = h2::match_client_preface(std::string_view(rbuf_.data() + rbegin_, rend_ - rbegin_));
    if (m != h2::PrefaceMatch::Partial) co_return m == h2::PrefaceMatch::Yes;
    if (rend_ - rbegin_ >= kReadBuffer) co_return false;
    const bool first = rbegin_ == rend_;
    auto wait = first ? opts_.keepalive_timeout : opts_.header_read_timeout;
    if (first && (drain_requested_ || worker_.draining())) wait = std::min(wait, kFirstRequestGrace);
    if (!rbuf_.empty() && rend_ == rbuf_.size()) co_return false;
    auto n = co_await ds_read(wait);
    if (!n) {
      closed_ = true;  // gone or silent before saying anything: nothing to answer
      co_return false;
    }
  }
}

task<void> H1Connection::run_h2() {
  idle_ = false;
  if (!attach()) co_return;
  H2Connection c(svc_, state_, worker_, *this, sock_, tls_.get(), *wd_,
                 std::string_view(rbuf_.data() + rbegin_, rend_ - rbegin_), std::move(h2_session_),
                 parkable_ && (!tls_ || tls_info_));
  rbegin_ = rend_ = 0;
  rbuf_ = ReadBuffer();  // HTTP/2 reads into its own buffer
  h2_ = &c;
  if (drain_requested_ || worker_.draining()) c.drain();
  co_await c.run();
  h2_ = nullptr;
  // Idle for keepalive_park_after: parked with its session (run() then calls park()).
  h2_session_ = c.park_session();
  if (h2_session_) park_ = true;
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

task<void> H1Connection::handle_parse_error() {
  // The request never became valid: answer, then still run logging with the error.
  start_ = clock::now();
  req_.clear();
  keepalive_ = false;
  head_request_ = false;
  resp_status_ = 0;
  body_sent_ = body_received_ = body_spliced_ = head_sent_ = retries_ = 0;
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

bool H1Connection::prepare_request() {
  begin_request();
  parser_.take_request(req_);
  keepalive_ = parser_.keep_alive();
  ds_framing_ = DsFraming::None;
  head_request_ = req_.method() == "HEAD";
  connect_ = req_.method() == "CONNECT";
  upgrade_ = parser_.upgrade() && !connect_;
  req_has_body_ = parser_.framing() != http1::Framing::None;
  req_body_done_ = !req_has_body_;
  // A bodyless request is complete now; this also lets the parser reach its next message. The
  // parser has validated the head already, so this step cannot fail; if it ever did, the
  // request is not forwarded.
  return req_has_body_ || parser_.feed(rbuf_.data() + rbegin_, 0).event != http1::Event::Error;
}

}  // namespace portico::detail
