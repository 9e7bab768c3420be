// The upstream half of an HTTP/1 exchange: one attempt, the request-body pump, tunnels.
#include <cerrno>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "core/log.hpp"
#include "core/send_batch.hpp"
#include "core/socket_io.hpp"
#include "proxy/h1_connection.hpp"

namespace portico::detail {

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::milliseconds;

namespace {
constexpr Watchdog::CancelFn cancel_stream = &Watchdog::cancel_io<stream_socket>;
void cancel_upstream(void* up) {
  error_code ec;
  static_cast<UpstreamConn*>(up)->sock.cancel(ec);
}

/// Waits until `sock` is ready for `w`, within the deadline `slot` of `wd` (`timeout`). True
/// when that deadline, or the whole request's, ended the wait.
template <class Socket>
task<bool> wait_ready(Watchdog& wd, Socket& sock, asio::socket_base::wait_type w,
                      Watchdog::Slot slot, milliseconds timeout, error_code& ec) {
  wd.arm(slot, timeout, &Watchdog::cancel_io<Socket>, &sock);
  co_await sock.async_wait(w, asio::redirect_error(asio::use_awaitable, ec));
  const bool timed_out = wd.expired(slot) || (ec && wd.expired(Watchdog::Total));
  wd.disarm(slot);
  co_return timed_out;
}
}  // namespace

// ---------------------------------------------------------------------------------------------
// watching the client while the response is awaited

// Shared with the pending peek, so a completion that arrives after the watch ended (or after
// the connection is gone) finds `conn` null.
struct H1Connection::ClientWatch {
  H1Connection* conn;
  char byte;
};

void H1Connection::watch_client() {
  if (client_watch_ || closed_ || watch_later_.pending()) return;
  // Most upstreams answer long before a client could be seen leaving; arming the watch costs a
  // system call (Asio's speculative receive), so only a wait that lasts gets one.
  worker_.deferred().add(
      watch_later_, [](void* c) { static_cast<H1Connection*>(c)->arm_client_watch(); }, this);
}

void H1Connection::arm_client_watch() {
  if (client_watch_ || closed_ || !attach()) return;
  client_watch_ = std::make_shared<ClientWatch>(ClientWatch{this, 0});
  // A peek that completes on EOF or a reset; bytes (a pipelined request) end the watch, are
  // left in the socket and read later.
  sock_.async_receive(asio::buffer(&client_watch_->byte, 1), asio::socket_base::message_peek,
                      [w = client_watch_](const error_code& ec, std::size_t n) {
                        H1Connection* c = w->conn;
                        if (!c || ec == asio::error::operation_aborted) return;
                        c->client_watch_.reset();
                        if (!ec && n > 0) return;
                        c->client_gone_ = true;
                        c->cancel_upstream_io();
                      });
}

void H1Connection::unwatch_client() noexcept {
  watch_later_.cancel();
  if (!client_watch_) return;
  client_watch_->conn = nullptr;
  client_watch_.reset();
  error_code ec;
  sock_.cancel(ec);  // nothing else is pending on the client socket while the watch is armed
}

// ---------------------------------------------------------------------------------------------
// one attempt on one upstream connection

Result<void> ProxyRequest::us_write_result(const error_code& ec, bool timed_out) const {
  if (timed_out) return Error::upstream(ErrorType::WriteTimedout, "writing to the upstream");
  if (ec) {
    Error e = Error::upstream(ErrorType::WriteError, ec.message());
    e.set_retry_type(RetryType::ReusedOnly);
    return e;
  }
  return ok();
}

task<Result<void>> ProxyRequest::us_write_wait(UpstreamConn& up, const std::vector<asio::const_buffer>& b,
                                               WriteTry t) {
  error_code ec;
  wd_->arm(Watchdog::UsWrite, peer_->options.write_timeout, cancel_stream, &up.sock);
  co_await finish_write(up.sock, up.tls.get(), BufferView(b), t, ec);
  const bool timed_out = wd_->expired(Watchdog::UsWrite) || (ec && wd_->expired(Watchdog::Total));
  wd_->disarm(Watchdog::UsWrite);
  co_return us_write_result(ec, timed_out);
}

task<Result<void>> ProxyRequest::us_head_settle(UpstreamConn& up, int result) {
  WriteTry t;
  const std::size_t size = us_frame_.size();
  if (result >= 0 && static_cast<std::size_t>(result) == size)
    t.done = true;
  else if (result >= 0 || result == -EAGAIN || result == -EWOULDBLOCK)
    t.sent = result > 0 ? static_cast<std::size_t>(result) : 0;  // the rest waits
  else
    t.ec = error_code(-result, boost::system::system_category());
  if (t.pending()) co_return co_await us_write_wait(up, us_iov_, t);
  co_return us_write_result(t.ec, false);
}

task<Result<void>> ProxyRequest::us_write(UpstreamConn& up, const std::vector<asio::const_buffer>& b) {
  // An HTTP/2 client may reset its stream at any moment; a cancel only stops an operation that
  // is pending, so look before starting one.
  if (client_gone_) co_return Error::downstream(ErrorType::ConnectionClosed, "the client went away");
  // Most writes fit the socket buffer: tried first without a suspension or a timer.
  const WriteTry t = try_write(up.sock, up.tls.get(), BufferView(b));
  if (!t.pending()) co_return us_write_result(t.ec, false);
  co_return co_await us_write_wait(up, b, t);
}

Result<void> ProxyRequest::us_read_begin(UpstreamConn& up, milliseconds timeout) {
  if (client_gone_) return Error::downstream(ErrorType::ConnectionClosed, "the client went away");
  if (up.buf.empty()) up.buf.resize(opts_.body_buffer_bytes);
  up.begin = up.end = 0;
  wd_->arm(Watchdog::UsRead, timeout.count() ? timeout : peer_->options.read_timeout,
           cancel_stream, &up.sock);
  return ok();
}

Result<std::size_t> ProxyRequest::us_read_end(UpstreamConn& up, std::size_t n, const error_code& ec) {
  const bool timed_out = wd_->expired(Watchdog::UsRead) || (ec && wd_->expired(Watchdog::Total));
  wd_->disarm(Watchdog::UsRead);
  if (timed_out) return Error::upstream(ErrorType::ReadTimedout, "reading from the upstream");
  // A TLS upstream that closes without close_notify is taken as a plain close, as browsers and
  // other proxies do; a truncated body is still detected by its framing.
  if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) return std::size_t{0};
  if (ec) return Error::upstream(ErrorType::ReadError, ec.message());
  up.end = n;
  return n;
}

task<Result<std::size_t>> ProxyRequest::us_read(UpstreamConn& up, milliseconds timeout) {
  if (auto b = us_read_begin(up, timeout); !b) co_return b.error();
  error_code ec;
  std::size_t n;
  const auto into = asio::buffer(up.buf);
  if (up.tls)
    n = co_await up.tls->read_some(into, ec);
  else if (const auto t = detail::recv_now(up.sock, into, n, ec); t != detail::RecvTry::Done)
    n = co_await detail::recv_wait(up.sock, into, t, asio::redirect_error(asio::use_awaitable, ec));
  co_return us_read_end(up, n, ec);
}

task<Result<void>> ProxyRequest::proxy_attempt(UpstreamConnPtr& conn, bool reused,
                                               bool& response_started) {
  UpstreamConn& up = *conn;
  if (client_gone_) {
    // The client left while the connection was being set up (an HTTP/2 stream reset).
    if (peer_->options.proxy_protocol == ProxyProtocol::None) state_.pool->put(std::move(conn));
    co_return Error::downstream(ErrorType::ConnectionClosed, "the client left before the request was sent");
  }
  current_up_ = &up;
  pump_running_ = false;
  pump_exception_ = nullptr;
  pump_result_ = ok();
  Result<void> r;
  std::exception_ptr exc;
  try {
    ConnectionInfo info{reused, up.peer, up.local, up.fd()};
    if (has(kConnectedToUpstream)) r = co_await app_.e_connected_to_upstream(*this, info, ctx_);
    if (r) r = co_await attempt_inner(up, response_started);
  } catch (...) {
    exc = std::current_exception();
  }
  // Without a side still running or an exception to rethrow, there is nothing to wait for: no
  // coroutine frame for it.
  if (pump_running_ || exc || pump_exception_)
    co_await end_side(r, exc);
  else if (!pump_result_ && !r)
    r = pump_result_.error();
  // Whether the client connection survives is decided once, for the final outcome, in
  // handle_request: a failed attempt may still be retried.

  const bool reusable = r && !tunnel_ && req_body_done_ && up.parser.keep_alive() && up.begin == up.end &&
                        !(up.tls && up.tls->buffered()) &&
                        (opts_.upstream_request_limit == 0 ||
                         ++up.requests < opts_.upstream_request_limit);
  current_up_ = nullptr;
  if (reusable) {
    if (peer_->options.proxy_protocol == ProxyProtocol::None) {
      state_.pool->put(std::move(conn));
    } else if (up.idle_timeout.count() > 0) {
      up.idle_since = std::chrono::steady_clock::now();
      private_up_ = std::move(conn);
    }
  }
  co_return r;
}

task<Result<void>> ProxyRequest::attempt_inner(UpstreamConn& up, bool& response_started) {
  if (connect_) {
    response_started = true;
    co_return co_await ds_tunnel(up, nullptr);
  }
  // Request head.
  up_req_ = req_;
  http1::strip_hop_by_hop(up_req_.headers());
  up_req_.set_version(Version::Http11);
  if (!up_req_.headers().contains("host"))  // an HTTP/1.0 request may have none; 1.1 needs it
    up_req_.headers().append("Host", peer_->sni.empty() ? peer_->address.to_string() : peer_->sni);
  if (upgrade_) {
    // The one hop-by-hop exchange a proxy forwards on purpose: the switch of protocols.
    if (auto u = req_.headers().get("upgrade")) up_req_.headers().append("Upgrade", *u);
    up_req_.headers().append("Connection", "upgrade");
  }
  if (has(kUpstreamRequestFilter))
    if (auto r = co_await app_.e_upstream_request_filter(*this, up_req_, ctx_); !r) co_return r;
  // A body without a length (or whose length a hook removed) is re-chunked upstream.
  if (req_has_body_ && !up_req_.headers().contains("content-length"))
    up_req_.headers().append("Transfer-Encoding", "chunked");
  us_frame_.clear();
  http1::serialize_request_head(up_req_, us_frame_);
  us_iov_.clear();
  us_iov_.emplace_back(us_frame_.data(), us_frame_.size());
  // us_write inlined: a head the socket takes at once costs no coroutine frame.
  if (client_gone_) co_return Error::downstream(ErrorType::ConnectionClosed, "the client went away");
  SendBatch* batch = opts_.batch_upstream_sends && !up.tls ? worker_.send_batch() : nullptr;
  // A head queued in the batch without waiting (nothing follows it), settled by the response
  // read below: the flush runs before any read can complete.
  SendBatch::Item queued;
  struct Unqueue {  // a frame destroyed while queued (a hard stop, an error) leaves the batch
    SendBatch::Item& it;
    ~Unqueue() { SendBatch::remove(it); }
  } unqueue{queued};
  bool head_queued = false;
  if (batch) {
    // Sent with the other heads of this round, in one system call (see core/send_batch.hpp).
    queued.fd = up.sock.native_handle();
    queued.data = us_frame_.data();
    queued.size = us_frame_.size();
    batch->add(queued, up.sock.get_executor());
    if (!req_has_body_) {
      // Nothing follows the head: straight to the response. A head that does not go whole
      // wakes the read (which then finishes the head the usual way).
      queued.incomplete = [](void* sock) noexcept {
        error_code ignored;
        static_cast<stream_socket*>(sock)->cancel(ignored);
      };
      queued.ctx = &up.sock;
      head_queued = true;
    } else {
      // The body follows the head: resumed after the flush (handlers run in the order they
      // were posted).
      co_await asio::post(up.sock.get_executor(), asio::use_awaitable);
      if (queued.queued_in) {  // not flushed (cannot happen): sent the usual way below
        SendBatch::remove(queued);
        queued.result = -EAGAIN;
      }
      if (auto r = co_await us_head_settle(up, queued.result); !r) co_return r;
    }
  } else if (const WriteTry t = try_write(up.sock, up.tls.get(), BufferView(us_iov_)); t.pending()) {
    if (auto r = co_await us_write_wait(up, us_iov_, t); !r) co_return r;
  } else if (auto r = us_write_result(t.ec, false); !r) {
    co_return r;
  }

  // Request body: streamed concurrently with the response.
  if (req_has_body_) {
    start_side(pump_request_body(up), &cancel_upstream, &up);
  } else {
    BodyChunk empty;
    if (auto r = app_.e_request_body_filter(*this, empty, true, ctx_); !r) co_return r;
  }

  // Response head (skipping 1xx interim responses, which are relayed to HTTP/1.1 clients).
  // While it is awaited and the client sends nothing, a client that goes away cancels it.
  up.parser.set_no_body_expected(head_request_);
  awaiting_head_ = true;
  if (!pump_running_) watch_client();
  struct Disarm {
    ProxyRequest& c;
    ~Disarm() {
      c.awaiting_head_ = false;
      c.unwatch_client();
    }
  };
  bool got_bytes = false;
  // The watch ends with this block: when the head is in (or the attempt fails), not later, or
  // a client leaving mid-body would be reported as an upstream read error.
  {
  Disarm disarm{*this};
  for (;;) {
    if (up.begin == up.end) {
      if (head_queued && !queued.queued_in) {
        // Flushed while a hook held the attempt: settled before waiting for an answer to it.
        head_queued = false;
        if (!queued.sent_whole())
          if (auto r = co_await us_head_settle(up, queued.result); !r) co_return r;
      }
      // us_read inlined for a plain socket: no coroutine frame for the wait.
      Result<std::size_t> n = std::size_t{0};
      if (up.tls) {
        n = co_await us_read(up);
      } else if (auto b = us_read_begin(up); !b) {
        n = b.error();
      } else {
        error_code ec;
        std::size_t got;
        const auto into = asio::buffer(up.buf);
        if (const auto t = detail::recv_now(up.sock, into, got, ec); t != detail::RecvTry::Done)
          got = co_await detail::recv_wait(up.sock, into, t,
                                           asio::redirect_error(asio::use_awaitable, ec));
        if (head_queued && !client_gone_) {
          head_queued = false;
          if (queued.queued_in) {
            // The read found what was there before the head went out (a close, stray bytes):
            // the head is not sent at all, so the request may go elsewhere.
            SendBatch::remove(queued);
            if (!ec && got > 0) {
              wd_->disarm(Watchdog::UsRead);
              Error e = Error::upstream(ErrorType::InvalidHTTPHeader,
                                        "the upstream sent data before the request");
              e.set_retry_type(RetryType::ReusedOnly);
              co_return e;
            }
          } else if (!queued.sent_whole() && !wd_->expired(Watchdog::UsRead) &&
                     !wd_->expired(Watchdog::Total)) {
            // The flush cancelled this read: the rest of the head goes the usual way first.
            wd_->disarm(Watchdog::UsRead);
            if (!ec && got > 0)
              co_return Error::upstream(ErrorType::InvalidHTTPHeader,
                                        "the upstream answered before the whole request");
            if (auto r = co_await us_head_settle(up, queued.result); !r) co_return r;
            continue;
          }
        }
        n = us_read_end(up, got, ec);
      }
      if (client_gone_)
        co_return Error::downstream(ErrorType::ConnectionClosed,
                                    "the client closed the connection before the response");
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
      if (auto w = co_await ds_interim(resp_); !w) co_return w;
      continue;
    }
    if (st == 101 && !upgrade_)
      co_return Error::upstream(ErrorType::InvalidHTTPHeader, "101 without an upgrade request");
    break;
  }
  }  // the client watch ends here
  response_started = true;

  // Response header filters; a 101 keeps the Upgrade value that hop-by-hop stripping removes.
  const bool switched = resp_.status() == 101;  // decided by the upstream, not by a filter
  const std::string upgrade =
      switched ? std::string(resp_.headers().get("upgrade").value_or("")) : "";
  http1::strip_hop_by_hop(resp_.headers());
  if (auto r = app_.e_upstream_response_filter(*this, resp_, ctx_); !r) co_return r;
  if (has(kResponseFilter))
    if (auto r = co_await app_.e_response_filter(*this, resp_, ctx_); !r) co_return r;

  if (switched) co_return co_await ds_tunnel(up, &upgrade);

  // The head goes out with the first body bytes.
  if (resp_.status() == 204) {  // RFC 9110 §8.6: no Content-Length in a 204
    resp_.headers().remove("content-length");
  }
  const bool bodyless = up.parser.framing() == http1::Framing::None &&
                        (head_request_ || resp_.status() == 204 || resp_.status() == 304);
  // Re-framed for the client; a length from a close-delimited upstream cannot be trusted.
  if (up.parser.framing() == http1::Framing::UntilClose) resp_.headers().remove("content-length");
  ds_prepare_head(resp_, bodyless);

  for (;;) {
    // Feeding zero bytes is fine: it completes a bodyless message.
    auto step = up.parser.feed(up.buf.data() + up.begin, up.end - up.begin);
    up.begin += step.consumed;
    // A long body nobody needs to see goes from socket to socket (splice_min_body_bytes).
    if (step.event == http1::Event::NeedMore && !up.tls && opts_.splice_min_body_bytes &&
        !has(kResponseBodyFilter) && up.parser.length_remaining() >= opts_.splice_min_body_bytes &&
        ds_can_splice()) {
      error_code ec;
      ensure_non_blocking(up.sock, ec);
      if (SplicePipe pipe = ec ? SplicePipe() : SplicePipe::take()) {
        const std::uint64_t n = up.parser.length_remaining();
        if (auto r = co_await ds_splice_body(up, pipe, n); !r) {
          keepalive_ = false;  // the head went out: the client sees the failure by the close
          co_return r;
        }
        step = up.parser.skip_body(n);
      }
    }
    if (step.event == http1::Event::NeedMore) {
      // us_read inlined for a plain socket, as for the head.
      Result<std::size_t> n = std::size_t{0};
      if (up.tls) {
        n = co_await us_read(up);
      } else if (auto b = us_read_begin(up); !b) {
        n = b.error();
      } else {
        error_code ec;
        std::size_t got;
        const auto into = asio::buffer(up.buf);
        if (const auto t = detail::recv_now(up.sock, into, got, ec); t != detail::RecvTry::Done)
          got = co_await detail::recv_wait(up.sock, into, t,
                                           asio::redirect_error(asio::use_awaitable, ec));
        n = us_read_end(up, got, ec);
      }
      if (!n) co_return n.error();
      if (*n > 0) continue;
      step = up.parser.finish();
    }
    if (step.event == http1::Event::Error && ds_head_pending()) {
      // Nothing was sent yet (the head waits for the first body bytes): drop it, so the error
      // is answered with a proper 502.
      ds_drop_head();
      resp_status_ = 0;
      co_return Error::upstream(up.parser.error_type(),
                                "invalid response body: " + std::string(up.parser.error_reason()));
    }
    if (step.event == http1::Event::Error) {
      // Truncated or corrupt body after the head went out: close so the client sees it (an
      // HTTP/1 client by the closed connection, an HTTP/2 client by a reset stream).
      keepalive_ = false;
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
    if (!pieces_.empty() || end || ds_head_pending()) {
      Result<void> w;
      if (!ds_send_now(pieces_, end, trailers, w)) w = co_await ds_send(pieces_, end, trailers);
      if (!w) co_return w;
    }
    if (end) break;
  }
  co_return ok();
}

task<Result<void>> ProxyRequest::ds_splice_body(UpstreamConn&, SplicePipe&, std::uint64_t) {
  co_return Error::internal(ErrorType::InternalError, "this client connection cannot splice");
}

task<Result<void>> H1Connection::ds_splice_body(UpstreamConn& up, SplicePipe& pipe,
                                                std::uint64_t left) {
  if (!attach())
    co_return Error::downstream(ErrorType::WriteError, "registering the connection failed");
  error_code ec;
  ensure_non_blocking(sock_, ec);
  if (ec) co_return Error::downstream(ErrorType::WriteError, ec.message());
  if (ds_head_pending()) {
    pieces_.clear();
    Result<void> w;
    if (!ds_send_now(pieces_, false, nullptr, w)) w = co_await ds_send(pieces_, false, nullptr);
    if (!w) co_return w;
  }
  unsigned rounds = 0;
  while (left > 0) {
    // In: the pipe is empty, so a splice that would block found the socket drained.
    std::size_t n;
    if (splice_in(up.sock, pipe, left, n, ec) == RecvTry::Wait) {
      if (co_await wait_ready(*wd_, up.sock, asio::socket_base::wait_read, Watchdog::UsRead,
                              peer_->options.read_timeout, ec))
        co_return Error::upstream(ErrorType::ReadTimedout, "reading from the upstream");
      if (ec) co_return Error::upstream(ErrorType::ReadError, ec.message());
      continue;
    }
    if (ec) co_return Error::upstream(ErrorType::ReadError, ec.message());
    if (n == 0)
      co_return Error::upstream(ErrorType::PrematureBodyEnd,
                                "upstream closed with " + std::to_string(left) +
                                    " bytes of its Content-Length body still to come");
    left -= n;
    // Out: all of it, before the next splice in.
    for (;;) {
      const std::size_t sent = splice_out(pipe, sock_.native_handle(), left > 0, ec);
      body_sent_ += sent;
      body_spliced_ += sent;
      if (ec) co_return ds_write_result(ec, false);
      if (pipe.held == 0) break;
      const bool timed_out = co_await wait_ready(*wd_, sock_, asio::socket_base::wait_write,
                                                 Watchdog::DsWrite, opts_.write_timeout, ec);
      if (timed_out || ec) co_return ds_write_result(ec, timed_out);
    }
    // Both sides may never make it wait: let the thread's other connections run now and then.
    if (++rounds % kSpliceStreak == 0)
      co_await asio::post(sock_.get_executor(), asio::use_awaitable);
  }
  co_return ok();
}

task<void> ProxyRequest::end_side(Result<void>& r, std::exception_ptr exc) {
  if (pump_running_) {
    // The response ended (or failed) before the client finished sending its body.
    pump_cancel_.emit(asio::cancellation_type::terminal);
    while (pump_running_) {
      pump_timer().expires_at(std::chrono::steady_clock::time_point::max());
      error_code ec;
      co_await pump_timer().async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }
  if (exc) std::rethrow_exception(exc);
  if (pump_exception_) std::rethrow_exception(pump_exception_);
  // A failed body pump explains a failed response read better than "operation aborted". A
  // response that completed while the upload was still going is a success; the connection
  // closes because the rest of the body was not read.
  if (!pump_result_ && !r) r = pump_result_.error();
}

asio::steady_timer& ProxyRequest::pump_timer() {
  if (!pump_timer_) pump_timer_.emplace(worker_.executor());
  return *pump_timer_;
}

void ProxyRequest::start_side(task<Result<void>> t, void (*cancel)(void*), void* arg) {
  pump_running_ = true;
  asio::co_spawn(
      worker_.executor(), std::move(t),
      asio::bind_cancellation_slot(
          pump_cancel_.slot(), [this, cancel, arg](std::exception_ptr e, Result<void> res) {
            pump_running_ = false;
            pump_exception_ = e;
            pump_result_ = std::move(res);
            if (!e && pump_result_ && awaiting_head_) watch_client();
            if (e || !pump_result_) cancel(arg);  // unblock the other direction
            if (pump_timer_) pump_timer_->cancel();
          }));
}

task<Result<void>> H1Connection::ds_tunnel(UpstreamConn& up, const std::string* upgrade) {
  tunnel_ = true;
  if (!upgrade) {
    resp_status_ = 200;
    wbuf_.assign("HTTP/1.1 200 Connection Established\r\n\r\n");
  } else {
    // The upstream switched protocols: relay the 101, then the connection is a byte tunnel.
    resp_.headers().append("Connection", "upgrade");
    if (!upgrade->empty()) resp_.headers().append("Upgrade", *upgrade);
    resp_.set_version(Version::Http11);
    wbuf_.clear();
    http1::serialize_response_head(resp_, wbuf_);
    resp_status_ = 101;
  }
  pieces_.clear();
  if (auto w = co_await ds_send(pieces_, false, nullptr); !w) co_return w;
  co_return co_await run_tunnel(up);
}

task<Result<void>> H1Connection::ds_interim(ResponseHeader& h) {
  if (req_.version() == Version::Http10) co_return ok();  // an HTTP/1.0 client knows no 1xx
  wbuf_.clear();
  http1::serialize_response_head(h, wbuf_);
  iov_.clear();
  iov_.emplace_back(wbuf_.data(), wbuf_.size());
  auto w = co_await ds_write(iov_);
  wbuf_.clear();
  co_return w;
}

void H1Connection::cancel_downstream() noexcept {
  error_code ec;
  sock_.cancel(ec);
}

const HeaderMap* H1Connection::ds_request_trailers() noexcept {
  return parser_.trailers().empty() ? nullptr : &parser_.trailers();
}

task<Result<void>> H1Connection::ds_read_body(std::vector<std::string_view>& spans, bool& end) {
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
    spans = parser_.body_chunks();
    end = step.event == http1::Event::MessageComplete;
    co_return ok();
  }
}

task<Result<void>> H1Connection::run_tunnel(UpstreamConn& up) {
  keepalive_ = false;
  // Both directions wait on the client from here on.
  if (!attach())
    co_return Error::downstream(ErrorType::ReadError, "registering the connection failed");
  start_side(tunnel_to_upstream(up), &cancel_upstream, &up);
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
  shutdown_client(asio::socket_base::shutdown_send);
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

task<Result<void>> ProxyRequest::us_send_body(UpstreamConn& up, std::size_t n, bool end) {
  const bool chunked = up_req_.headers().has_token("transfer-encoding", "chunked");
  us_pieces_.clear();
  for (std::size_t k = 0; k < n; ++k) us_pieces_.push_back(req_chunks_[k].data());
  const HeaderMap* trailers = end && chunked ? ds_request_trailers() : nullptr;
  us_iov_.clear();
  body_received_ += frame_body(us_pieces_, chunked, end, trailers, us_frame_, us_iov_);
  if (us_iov_.empty()) co_return ok();
  co_return co_await us_write(up, us_iov_);
}

Result<void> ProxyRequest::filter_request_body(const std::vector<std::string_view>& spans,
                                               bool end) {
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
    if (auto r = app_.e_request_body_filter(*this, req_chunks_[k], false, ctx_); !r) return r;
  }
  if (end) {
    req_chunks_[spans.size()].reset({});
    if (auto r = app_.e_request_body_filter(*this, req_chunks_[spans.size()], true, ctx_); !r)
      return r;
    req_body_done_ = true;  // read in full; a retry replays it without reading
  }
  return ok();
}

Result<std::size_t> ProxyRequest::filter_replay() {
  if (req_chunks_.size() < 2) req_chunks_.resize(2);
  std::size_t n = 0;
  if (!replay_.empty()) {
    req_chunks_[n].reset(replay_);
    if (auto r = app_.e_request_body_filter(*this, req_chunks_[n], false, ctx_); !r) return r.error();
    ++n;
  }
  if (req_body_done_) {
    req_chunks_[n].reset({});
    if (auto r = app_.e_request_body_filter(*this, req_chunks_[n], true, ctx_); !r) return r.error();
    ++n;
  }
  return n;
}

task<Result<void>> ProxyRequest::pump_request_body(UpstreamConn& up) {
  // A retry first replays what earlier attempts read from the client (through the filter again).
  if (req_body_started_ || req_body_done_) {
    auto n = filter_replay();
    if (!n) co_return n.error();
    if (auto w = co_await us_send_body(up, *n, req_body_done_); !w) co_return w;
    if (req_body_done_) co_return ok();
  }
  for (;;) {
    bool end = false;
    if (auto r = co_await ds_read_body(body_spans_, end); !r) co_return r;
    if (auto r = filter_request_body(body_spans_, end); !r) co_return r;
    if (auto w = co_await us_send_body(up, body_spans_.size() + (end ? 1 : 0), end); !w)
      co_return w;
    if (end) co_return ok();
  }
}

}  // namespace portico::detail
