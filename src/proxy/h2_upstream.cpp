#include "proxy/h2_upstream.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "core/log.hpp"
#include "core/socket_io.hpp"
#include "http2/translate.hpp"
#include "observe/proxy_observer.hpp"
#include "proxy/request.hpp"

namespace portico::detail {

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::milliseconds;

namespace {
constexpr std::size_t kReadBuffer = 16 * 1024;

constexpr Watchdog::CancelFn cancel_stream = &Watchdog::cancel_io<stream_socket>;
void cancel_call(void* c) {
  auto* call = static_cast<H2Call*>(c);
  call->cancelled = true;
  call->notify();
}
// The read deadline of a call passed: its wait ends (the watchdog says why).
void wake_call(void* c) { static_cast<H2Call*>(c)->rd.notify(); }
}  // namespace

namespace {
/// Makes `t` expire after `timeout`, or never when it is 0.
void expire_after(asio::steady_timer& t, milliseconds timeout) {
  if (timeout.count() > 0)
    t.expires_after(timeout);
  else
    t.expires_at(asio::steady_timer::time_point::max());
}
}  // namespace

task<Wake> wait_on(asio::steady_timer& t, milliseconds timeout, bool shared) {
  if (!shared) expire_after(t, timeout);
  error_code ec;
  co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  // A terminal cancellation of the coroutine (a request body pump being stopped) also ends the
  // wait with operation_aborted: tell it apart from a notification.
  auto cs = co_await asio::this_coro::cancellation_state;
  if (cs.cancelled() != asio::cancellation_type::none) co_return Wake::Cancelled;
  co_return ec ? Wake::Notified : Wake::TimedOut;
}

std::string negotiated_alpn(UpstreamConn& c) {
  if (!c.tls) return {};
  const unsigned char* p = nullptr;
  unsigned int n = 0;
  SSL_get0_alpn_selected(c.tls->native_handle(), &p, &n);
  return std::string(reinterpret_cast<const char*>(p), n);
}

// ---------------------------------------------------------------------------------------------
// H2UpConn

H2UpConn::H2UpConn(UpstreamConnPtr transport, const h2::Settings& s, std::uint64_t key,
                   milliseconds idle_timeout, milliseconds write_timeout,
                   std::shared_ptr<ProxyObserver> obs)
    : t_(std::move(transport)),
      session_(h2::Mode::Client, s),
      key_(key),
      idle_timeout_(idle_timeout),
      write_timeout_(write_timeout),
      wd_(std::make_shared<Watchdog>(t_->sock.get_executor())),
      obs_(std::move(obs)) {
  obs_->h2_upstream_session(1);
}

H2UpConn::~H2UpConn() {
  wd_->close();
  obs_->h2_upstream_session(-1);
}

void H2UpConn::start() {
  auto self = shared_from_this();
  asio::co_spawn(t_->sock.get_executor(), reader(self), asio::detached);
  asio::co_spawn(t_->sock.get_executor(), writer(self), asio::detached);
}

bool H2UpConn::has_room() const noexcept {
  return usable() && !closing_ && session_.available_streams() > reserved_;
}

void H2UpConn::kick() noexcept { write_sig_.notify(); }

void H2UpConn::shutdown() noexcept {
  if (closing_) return;
  closing_ = true;
  session_.shutdown();
  if (calls_.empty()) {
    // Nothing in flight: close once the GOAWAY is out.
    session_.terminate(h2::ErrorCode::NoError);
  }
  kick();
}

Result<void> H2UpConn::open(H2Call& call, const RequestHeader& r, std::string_view scheme,
                            bool end_stream) {
  auto id = session_.submit_request(r, scheme, true, end_stream);
  if (!id) return id.error();
  call.id = *id;
  calls_.insert(*id, &call);
  wd_->disarm(Watchdog::UsRead);  // not idle any more
  obs_->h2_upstream_stream(1);
  kick();
  return ok();
}

void H2UpConn::release(H2Call& call) noexcept {
  if (call.id == 0) return;
  calls_.erase(call.id);
  obs_->h2_upstream_stream(-1);
  // The memory of a response head goes back to the session for the heads to come (the head
  // itself went to the request's response, whose last memory it holds now).
  session_.recycle(std::move(call.head));
  if (!call.closed) session_.reset(call.id, h2::ErrorCode::Cancel);
  session_.discard(call.id);
  call.id = 0;
  if (calls_.empty()) {
    if (closing_)
      session_.terminate(h2::ErrorCode::NoError);
    else if (!dead_)  // the reader waits without a deadline while streams run: idle from now on
      wd_->arm(Watchdog::UsRead, idle_timeout_, cancel_stream, &t_->sock);
  }
  kick();
}

void H2UpConn::fail_all() noexcept {
  dead_ = true;
  for (auto& [id, c] : calls_) {
    c->reset = true;
    c->closed = true;
    c->notify();
  }
}

void H2UpConn::dispatch() {
  while (auto e = session_.poll_event()) {
    auto it = calls_.find(e->stream_id);
    H2Call* c = it == calls_.end() ? nullptr : it->second;
    switch (e->kind) {
      case h2::EventKind::Head:
        if (!c) break;
        c->head = std::move(e->fields);
        c->has_head = true;
        if (e->end_stream) c->end = true;
        c->rd.notify();
        break;
      case h2::EventKind::Informational:
        if (c) {
          c->interim.push_back(std::move(e->fields));
          c->rd.notify();
        }
        break;
      case h2::EventKind::Data:
        if (c)
          c->rd.notify();
        else
          session_.discard(e->stream_id);
        break;
      case h2::EventKind::Trailers:
        if (c) {
          c->trailers = std::move(e->fields);
          c->rd.notify();
        }
        break;
      case h2::EventKind::EndStream:
        if (c) {
          c->end = true;
          c->rd.notify();
        }
        break;
      case h2::EventKind::Reset:
        if (c) {
          c->reset = true;
          c->code = e->code;
          c->notify();
        }
        break;
      case h2::EventKind::Closed:
        if (c) {
          c->closed = true;
          c->retry_safe = e->retry_safe;
          if (e->code != 0 && !c->reset) {
            c->reset = true;
            c->code = e->code;
          }
          c->notify();
        } else {
          session_.discard(e->stream_id);
        }
        break;
      case h2::EventKind::Writable:
        if (c && c->wr) c->wr->cancel();
        break;
      case h2::EventKind::Rejected:
        if (c) {
          c->rejected = static_cast<std::uint16_t>(e->code);
          c->notify();
        }
        break;
      case h2::EventKind::Malformed:
        // The session reset the stream: the response broke RFC 9113's rules.
        if (c) {
          c->malformed = e->why;
          c->notify();
        }
        log::error_log().info("HTTP/2 upstream {}: stream {} reset: malformed response: {}",
                              t_->peer.to_string(), e->stream_id, e->why);
        break;
      case h2::EventKind::GoawaySent:
        if (e->code != 0)
          log::error_log().info("HTTP/2 upstream {}: GOAWAY {} sent{}{}", t_->peer.to_string(),
                                h2::error_code_name(e->code),
                                session_.last_error().empty() ? "" : ": ", session_.last_error());
        break;
      default:
        break;
    }
  }
}

task<void> H2UpConn::writer(std::shared_ptr<H2UpConn> /*self: keeps it alive*/) {
  for (;;) {
    std::string_view out = session_.pending_output();
    dispatch();
    if (out.empty()) {
      if (dead_) break;
      if (!session_.want_read() && !session_.want_write()) {
        // Over (GOAWAY both ways, or an error): stop the reader too.
        dead_ = true;
        cancel_stream(&t_->sock);
        break;
      }
      co_await write_sig_.wait();
      continue;
    }
    // Tried first without a suspension or a timer: most writes fit the socket buffer.
    const asio::const_buffer chunk(out.data(), out.size());
    const WriteTry t = try_write(t_->sock, t_->tls.get(), chunk);
    error_code ec = t.ec;
    if (t.pending()) {
      wd_->arm(Watchdog::UsWrite, write_timeout_, cancel_stream, &t_->sock);
      co_await finish_write(t_->sock, t_->tls.get(), chunk, t, ec);
      wd_->disarm(Watchdog::UsWrite);
    }
    const std::size_t n = ec ? 0 : out.size();
    if (ec) {
      fail_all();
      cancel_stream(&t_->sock);
      break;
    }
    session_.consume_output(n);
  }
}

task<void> H2UpConn::reader(std::shared_ptr<H2UpConn> /*self: keeps it alive*/) {
  std::unique_ptr<char[]> buf(new char[kReadBuffer]);
  while (!dead_) {
    // Without streams the connection may idle for the peer's idle_timeout, then it closes.
    const bool idle = calls_.empty();
    wd_->arm(Watchdog::UsRead, idle ? idle_timeout_ : milliseconds(0), cancel_stream, &t_->sock);
    error_code ec;
    std::size_t n = 0;
    const auto into = asio::buffer(buf.get(), kReadBuffer);
    if (t_->tls)
      n = co_await t_->tls->read_some(into, ec);
    else if (const auto t = detail::recv_now(t_->sock, into, n, ec); t != detail::RecvTry::Done)
      n = co_await detail::recv_wait(t_->sock, into, t,
                                     asio::redirect_error(asio::use_awaitable, ec));
    const bool idle_out = wd_->expired(Watchdog::UsRead);
    wd_->disarm(Watchdog::UsRead);
    if (idle_out && calls_.empty()) {
      closing_ = true;
      session_.terminate(h2::ErrorCode::NoError);
      kick();
      break;
    }
    // The idle deadline fired as a stream opened: keep reading.
    if (idle_out && ec == asio::error::operation_aborted && !dead_) continue;
    if (ec || n == 0) break;
    auto r = session_.feed(std::string_view(buf.get(), n));
    dispatch();
    kick();
    if (!r) {
      log::error_log().info("HTTP/2 upstream {}: {}", t_->peer.to_string(), r.error().to_string());
      break;
    }
  }
  closing_ = true;
  if (!dead_) {
    // The writer sends what is queued (a GOAWAY) and ends.
    dead_ = true;
    kick();
  }
  fail_all();
}

// ---------------------------------------------------------------------------------------------
// H2Upstream

std::shared_ptr<H2UpConn> H2Upstream::find(std::uint64_t key) {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return nullptr;
  auto& v = it->second;
  std::shared_ptr<H2UpConn> found;
  for (std::size_t i = 0; i < v.size();) {
    auto c = v[i].lock();
    if (!c || !c->usable()) {
      v[i] = std::move(v.back());
      v.pop_back();
      continue;
    }
    if (!found && c->has_room()) found = std::move(c);
    ++i;
  }
  if (found) found->reserve();
  return found;
}

std::shared_ptr<H2Upstream::Pending> H2Upstream::connecting(std::uint64_t key) const {
  auto it = connecting_.find(key);
  return it == connecting_.end() ? nullptr : it->second;
}

std::shared_ptr<H2Upstream::Pending> H2Upstream::begin_connect(std::uint64_t key,
                                                               const asio::any_io_executor& ex,
                                                               milliseconds timeout) {
  auto& p = connecting_[key];
  if (!p) {
    p = std::make_shared<Pending>(ex);
    expire_after(p->done, timeout);
  }
  return p;
}

void H2Upstream::end_connect(std::uint64_t key) noexcept {
  auto it = connecting_.find(key);
  if (it == connecting_.end()) return;
  it->second->done.cancel();
  connecting_.erase(it);
}

void H2Upstream::add(std::shared_ptr<H2UpConn> c) {
  if (draining_) c->shutdown();
  c->reserve();
  by_key_[c->key()].push_back(c);
}

void H2Upstream::drain() noexcept {
  draining_ = true;
  for (auto& [key, v] : by_key_)
    for (auto& w : v)
      if (auto c = w.lock()) c->shutdown();
}

// ---------------------------------------------------------------------------------------------
// one attempt over an HTTP/2 upstream stream

void ProxyRequest::cancel_upstream_io() noexcept {
  error_code ec;
  if (current_up_) current_up_->sock.cancel(ec);
  if (current_call_) cancel_call(current_call_);
}

task<Result<void>> ProxyRequest::h2_pump_body(H2UpConn& up, H2Call& call) {
  h2::Session& s = up.session();
  // Sends req_chunks_[0, n); `fin` ends the stream with the last one (or trailers).
  auto send = [&](std::size_t n, bool fin) -> task<Result<void>> {
    for (std::size_t k = 0; k < n; ++k) {
      std::string_view p = req_chunks_[k].data();
      body_received_ += p.size();
      while (!p.empty()) {
        if (call.reset || call.closed || call.id == 0)
          co_return Error::upstream(ErrorType::WriteError, "the upstream closed the stream");
        auto w = s.send_data(call.id, p, false);
        if (!w) co_return w.error();
        p.remove_prefix(*w);
        up.kick();
        if (p.empty()) break;
        if (!call.wr) call.wr.emplace(call.ex);
        const Wake wk = co_await wait_on(*call.wr, peer_->options.write_timeout);
        if (wk == Wake::Cancelled || call.cancelled)
          co_return Error::downstream(ErrorType::ConnectionClosed, "request body no longer sent");
        if (wk == Wake::TimedOut)
          co_return Error::upstream(ErrorType::WriteTimedout, "writing to the upstream");
      }
    }
    if (fin && call.id != 0 && !call.closed) {
      const HeaderMap* t = ds_request_trailers();
      if (t) {
        HeaderMap f;
        h2::from_trailers(*t, f);
        if (auto r = s.send_trailers(call.id, f); !r) co_return r.error();
      } else if (auto r = s.send_data(call.id, {}, true); !r) {
        co_return r.error();
      }
      up.kick();
    }
    co_return ok();
  };
  if (req_body_started_ || req_body_done_) {
    // A retry: what earlier attempts read goes first, through the filter again.
    auto n = filter_replay();
    if (!n) co_return n.error();
    if (auto w = co_await send(*n, req_body_done_); !w) co_return w;
    if (req_body_done_) co_return ok();
  }
  for (;;) {
    bool end = false;
    if (auto r = co_await ds_read_body(body_spans_, end); !r) co_return r;
    if (auto r = filter_request_body(body_spans_, end); !r) co_return r;
    if (auto w = co_await send(body_spans_.size() + (end ? 1 : 0), end); !w) co_return w;
    if (end) co_return ok();
  }
}

task<Result<void>> ProxyRequest::h2_attempt(std::shared_ptr<H2UpConn> upc, bool reused,
                                            bool& response_started) {
  H2UpConn& up = *upc;
  H2Call call(up.transport().sock.get_executor(), up.signal());
  pump_running_ = false;
  pump_exception_ = nullptr;
  pump_result_ = ok();
  struct Release {
    ProxyRequest& r;
    H2UpConn& up;
    H2Call& call;
    bool reserved = true;
    ~Release() {
      if (reserved) up.unreserve();
      up.release(call);
      r.current_call_ = nullptr;
    }
  } release{*this, up, call};
  current_call_ = &call;

  Result<void> r;
  std::exception_ptr exc;
  try {
    r = co_await h2_exchange(up, call, reused, response_started, release.reserved);
  } catch (...) {
    exc = std::current_exception();
  }
  if (pump_running_ || exc || pump_exception_)
    co_await end_side(r, exc);
  else if (!pump_result_ && !r)
    r = pump_result_.error();
  co_return r;
}

task<Result<void>> ProxyRequest::h2_exchange(H2UpConn& up, H2Call& call, bool reused,
                                             bool& response_started, bool& reserved) {
  UpstreamConn& t = up.transport();
  if (client_gone_)
    co_return Error::downstream(ErrorType::ConnectionClosed, "the client left before the request was sent");
  if (has(kConnectedToUpstream)) {
    ConnectionInfo info{reused, t.peer, t.local, t.fd()};
    if (auto r = co_await app_.e_connected_to_upstream(*this, info, ctx_); !r) co_return r;
  }
  if (connect_)
    co_return Error::http_status(501, "CONNECT is not proxied to an HTTP/2 upstream");
  up_req_ = req_;
  http1::strip_hop_by_hop(up_req_.headers());
  if (!up_req_.headers().contains("host"))
    up_req_.headers().append("Host", peer_->sni.empty() ? peer_->address.to_string() : peer_->sni);
  if (has(kUpstreamRequestFilter))
    if (auto r = co_await app_.e_upstream_request_filter(*this, up_req_, ctx_); !r) co_return r;
  reserved = false;
  up.unreserve();
  if (!up.usable()) {
    Error e = Error::upstream(ErrorType::ConnectionClosed, "the HTTP/2 upstream connection closed");
    e.set_retry(true);
    co_return e;
  }
  if (auto o = up.open(call, up_req_, peer_->tls ? "https" : "http", !req_has_body_); !o) {
    Error e = o.error();
    e.set_retry(true);  // nothing was sent
    co_return e;
  }
  if (req_has_body_) {
    start_side(h2_pump_body(up, call), &cancel_call, &call);
  } else {
    BodyChunk empty;
    if (auto r = app_.e_request_body_filter(*this, empty, true, ctx_); !r) co_return r;
  }

  const milliseconds read_timeout = peer_->options.read_timeout;
  // Waits for the next event of the stream; an error when it ends badly.
  auto await_event = [&]() -> task<Result<void>> {
    // A notification only wakes a wait in progress: look first.
    // (Not a conditional expression: GCC 12 destroys temporaries of a co_await in one twice.)
    Wake w = Wake::Notified;
    if (!client_gone_ && !call.cancelled) {
      // The deadline is the watchdog's (a store when a later one is already scheduled).
      wd_->arm(Watchdog::UsRead, read_timeout, &wake_call, &call);
      co_await call.rd.wait();
      if (wd_->expired(Watchdog::UsRead)) w = Wake::TimedOut;
      wd_->disarm(Watchdog::UsRead);
    }
    if (client_gone_)
      co_return Error::downstream(ErrorType::ConnectionClosed,
                                  "the client closed the connection before the response");
    if (call.cancelled && wd_->expired(Watchdog::Total))
      co_return Error::upstream(ErrorType::ReadTimedout, "request deadline passed");
    if (w == Wake::TimedOut)
      co_return Error::upstream(ErrorType::ReadTimedout, "reading from the upstream");
    co_return ok();
  };
  auto stream_error = [&](bool before_head) {
    if (call.malformed)
      return Error::upstream(ErrorType::InvalidH2,
                             "malformed HTTP/2 response: " + std::string(call.malformed));
    if (call.rejected)
      return Error::http_status(call.rejected, "upstream response header list too large");
    Error e = Error::upstream(
        ErrorType::H2Error,
        call.code ? "the upstream reset the stream: " + std::string(h2::error_code_name(call.code))
                  : std::string("the upstream HTTP/2 connection closed"));
    // Refused (or above the upstream's GOAWAY): the request was not processed anywhere.
    if (before_head && (call.retry_safe || call.code == static_cast<std::uint32_t>(h2::ErrorCode::RefusedStream)))
      e.set_retry(true);
    // The connection died under a reused session before any answer: as for a reused HTTP/1
    // connection, the upstream may have closed it while idle.
    else if (before_head && call.code == 0)
      e.set_retry_type(RetryType::ReusedOnly);
    return e;
  };

  // The response head; 1xx heads are relayed as they come.
  awaiting_head_ = true;
  for (;;) {
    while (!call.interim.empty()) {
      HeaderMap f = std::move(call.interim.front());
      call.interim.erase(call.interim.begin());
      if (auto c = h2::take_response(f, resp_, /*checked=*/true); c) {
        if (auto u = app_.e_upstream_response_filter(*this, resp_, ctx_); !u) co_return u;
        if (auto w = co_await ds_interim(resp_); !w) co_return w;
      }
    }
    if (call.has_head) break;
    if (call.reset || call.closed || call.rejected || call.malformed) {
      awaiting_head_ = false;
      co_return stream_error(true);
    }
    if (auto r = co_await await_event(); !r) {
      awaiting_head_ = false;
      co_return r;
    }
  }
  awaiting_head_ = false;
  if (auto c = h2::take_response(call.head, resp_, /*checked=*/true); !c) co_return c.error();
  response_started = true;

  http1::strip_hop_by_hop(resp_.headers());
  if (auto r = app_.e_upstream_response_filter(*this, resp_, ctx_); !r) co_return r;
  if (has(kResponseFilter))
    if (auto r = co_await app_.e_response_filter(*this, resp_, ctx_); !r) co_return r;
  const std::uint16_t st = resp_.status();
  if (st == 204) resp_.headers().remove("content-length");
  const bool bodyless = head_request_ || st == 204 || st == 304;
  ds_prepare_head(resp_, bodyless);

  h2::Session& s = up.session();
  if (chunks_.size() < 2) chunks_.resize(2);
  for (;;) {
    std::string_view v = call.id ? s.received(call.id) : std::string_view();
    if (!v.empty()) {
      chunks_[0].reset(v);
      if (auto r = app_.e_response_body_filter(*this, chunks_[0], false, ctx_); !r) co_return r;
      pieces_.assign(1, chunks_[0].data());
      Result<void> w;  // most sends complete at once, without a coroutine frame
      if (!ds_send_now(pieces_, false, nullptr, w)) w = co_await ds_send(pieces_, false, nullptr);
      if (!w) co_return w;
      // Forwarded: free it, which lets the upstream send more.
      if (call.id) s.consume(call.id, v.size());
      up.kick();
      continue;
    }
    if (call.end) break;
    if (call.reset || call.closed || call.malformed) {
      if (ds_head_pending()) {
        ds_drop_head();
        co_return stream_error(false);
      }
      keepalive_ = false;
      co_return stream_error(false);
    }
    if (auto r = co_await await_event(); !r) co_return r;
  }
  chunks_[1].reset({});
  if (auto r = app_.e_response_body_filter(*this, chunks_[1], true, ctx_); !r) co_return r;
  pieces_.assign(1, chunks_[1].data());
  HeaderMap* trailers = nullptr;
  HeaderMap tr;
  if (!call.trailers.empty()) {
    if (auto c = h2::to_trailers(call.trailers, tr, true); c) {
      if (auto r = app_.e_response_trailer_filter(*this, tr, ctx_); !r) co_return r;
      trailers = &tr;
    }
  }
  Result<void> w;
  if (!ds_send_now(pieces_, true, trailers, w)) w = co_await ds_send(pieces_, true, trailers);
  co_return w;
}

}  // namespace portico::detail
