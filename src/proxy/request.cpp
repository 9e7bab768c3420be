#include "proxy/request.hpp"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/log.hpp"
#include "core/memory.hpp"
#include "observe/proxy_observer.hpp"
#include "proxy/h2_connection.hpp"
#include "proxy/h2_upstream.hpp"

namespace portico::detail {

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::milliseconds;

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


ServiceWorkerState::ServiceWorkerState(std::shared_ptr<Pool> p, std::shared_ptr<ClientTls> tls)
    : pool(std::move(p)), client_tls(std::move(tls)), h2(std::make_unique<H2Upstream>()) {}

ServiceWorkerState::~ServiceWorkerState() {
  // The lot's closes report to this object: first, while every member is alive.
  drained = true;
  parking.reset();
  end_release();
}

Deferred& ServiceWorkerState::parker(const asio::any_io_executor& ex,
                                     std::chrono::milliseconds delay) {
  if (!park_after) park_after = std::make_unique<Deferred>(ex, delay);
  return *park_after;
}

// Connections going idle free their memory from the first park (or trim) of a burst on: a
// release window (core/memory.hpp) is open from then until a parking delay later, when what the
// allocator still holds is handed back (HAProxy trims its pools the same way). So at most one
// trim per delay and worker.
void ServiceWorkerState::trim_soon() noexcept {
  if (!park_after || trim_later.pending()) return;
  if (!releasing) {
    releasing = true;
    memory::release_begin();
  }
  park_after->add(
      trim_later, [](void* s) { static_cast<ServiceWorkerState*>(s)->end_release(); }, this);
}

void ServiceWorkerState::connection_ended(std::size_t active, const asio::any_io_executor& ex,
                                          std::chrono::milliseconds delay) noexcept {
  if (active > conns_peak) conns_peak = active;
  if (conns_peak - active < kCrowdLeft || active * 8 > conns_peak * 7) return;
  conns_peak = active;
  // Not once drained: a new timer would keep the winding-down event loop running.
  if (drained) return;
  if (!park_after) {
    if (delay.count() <= 0) return;
    try {
      parker(ex, delay);
    } catch (...) {  // std::bad_alloc: nothing is given back this time
      return;
    }
  }
  trim_soon();
}

void ServiceWorkerState::end_release() noexcept {
  if (!releasing) return;
  releasing = false;
  memory::release_end();
}

void ServiceWorkerState::drain() noexcept {
  drained = true;
  pool->drain();
  h2->drain();
  // Their timers would keep the event loop running; parked connections are idle and each
  // served requests: closed now.
  park_after.reset();
  parking.reset();
  end_release();  // trim_later went with park_after
}

const ServiceWorkerState::Listener& ServiceWorkerState::listener(const Service& svc,
                                                                 std::size_t i) {
  if (i >= listeners.size()) listeners.resize(i + 1);
  Listener& l = listeners[i];
  if (!l.known) {
    l.options = svc.listener_options(i);
    l.tls = svc.tls_of(i);
    l.known = true;
  }
  return l;
}

ProxyRequest::ProxyRequest(HttpProxyService& svc, ServiceWorkerState& state, Worker& w)
    : svc_(svc),
      app_(svc.app()),
      opts_(svc.options()),
      hooks_(svc.hooks()),
      state_(state),
      worker_(w),
      obs_(svc.observer()),
      wd_(std::make_shared<Watchdog>(w.timer_prototype())) {
  const std::size_t align = app_.ctx_align() < alignof(std::max_align_t) ? alignof(std::max_align_t)
                                                                         : app_.ctx_align();
  ctx_mem_.reset(new std::byte[app_.ctx_size() + align]);
  void* p = ctx_mem_.get();
  std::size_t space = app_.ctx_size() + align;
  ctx_ = std::align(app_.ctx_align(), app_.ctx_size(), p, space);
}

ProxyRequest::~ProxyRequest() {
  // A request cut short (its coroutine frames destroyed while suspended) still ends its context:
  // what the context holds (in-flight counts, buffers, handles) is released.
  drop_ctx();
  wd_->close();
}

void ProxyRequest::build_ctx() {
  app_.construct_ctx(ctx_);
  ctx_live_ = true;
}

void ProxyRequest::drop_ctx() noexcept {
  if (!ctx_live_) return;
  ctx_live_ = false;
  app_.destroy_ctx(ctx_);
}

void ProxyRequest::log_failure(const Error& e, std::uint16_t status) {
  auto& l = log::error_log();
  const auto level = status == 0 ? spdlog::level::info : spdlog::level::err;
  l.log(level, "Fail to proxy: {}, status: {}, tries: {}, {}", e.to_string(), status, retries_ + 1,
        request_summary());
}

void ProxyRequest::release_request_memory() noexcept {
  req_ = RequestHeader();
  up_req_ = RequestHeader();
  resp_ = ResponseHeader();
  failed_peers_ = {};
  chunks_ = {};
  pieces_ = {};
  us_frame_ = {};
  us_iov_ = {};
  req_chunks_ = {};
  us_pieces_ = {};
  body_spans_ = {};
  replay_ = {};
}

void ProxyRequest::begin_request() {
  start_ = clock::now();
  retries_ = 0;
  failed_peers_.clear();
  peer_.reset();
  upstream_reused_ = false;
  client_gone_ = false;
  resp_status_ = 0;
  body_sent_ = body_received_ = body_spliced_ = head_sent_ = 0;
  attempt_at_ = connected_at_ = resp_head_at_ = {};
  tunnel_ = false;
  req_body_started_ = false;
  replay_.clear();
  replay_truncated_ = false;
}

task<void> ProxyRequest::serve_request() {
  if (opts_.request_timeout.count() > 0)
    wd_->arm(Watchdog::Total, opts_.request_timeout, &ProxyRequest::expire_request, this);
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
  if (has(kLogging))
    co_await finish_request(r ? nullptr : &final_error);
  else
    end_request(r ? nullptr : &final_error);  // no hook to await: no coroutine frame
}

void ProxyRequest::expire_request(void* self) {
  // The whole-request deadline passed: stop whatever I/O the request is waiting for. Each I/O
  // step reports the expiry as its own timeout (504 upstream, a closed connection downstream).
  auto* c = static_cast<ProxyRequest*>(self);
  c->cancel_downstream();
  c->cancel_upstream_io();
}

task<void> ProxyRequest::finish_request(const Error* err) {
  if (has(kLogging)) {
    wd_->disarm(Watchdog::Total);  // the request deadline does not cut the logging hook
    try {
      co_await app_.e_logging(*this, err, ctx_);
    } catch (const std::exception& x) {
      log::error_log().error("logging hook threw: {}, {}", x.what(), request_summary());
    } catch (...) {
      log::error_log().error("logging hook threw, {}", request_summary());
    }
  }
  end_request(err);
}

void ProxyRequest::end_request(const Error* err) noexcept {
  wd_->disarm(Watchdog::Total);
  obs_->request_done(*this, err);
  drop_ctx();
}

task<Result<void>> ProxyRequest::run_phases() {
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
    // HTTP/2 (or h2 preferred) peers share multiplexed sessions; a PROXY protocol connection
    // speaks for one client, so it stays HTTP/1.1.
    const bool h2_peer = peer.options.alpn != Alpn::H1 && !speaks_for_client &&
                         (peer.tls || peer.options.alpn == Alpn::H2);
    std::shared_ptr<H2UpConn> h2s;
    UpstreamConnPtr conn;
    bool waited = false;  // for a connection or session from elsewhere
    if (h2_peer) {
      h2s = state_.h2->find(key);
      if (!h2s) {
        // Another request is opening a session for this peer: share it rather than open one
        // connection per request of a burst.
        if (auto pending = state_.h2->connecting(key)) {
          co_await wait_on(pending->done, {}, /*shared=*/true);
          waited = true;
          h2s = state_.h2->find(key);
        }
      }
      if (!h2s && peer.options.alpn == Alpn::H2H1) conn = state_.pool->take(key);
    } else if (speaks_for_client) {
      if (private_up_ && private_up_->key == key &&
          std::chrono::steady_clock::now() - private_up_->idle_since < private_up_->idle_timeout) {
        conn = std::move(private_up_);
        state_.pool->reused(key);
      }
      private_up_.reset();
    } else {
      conn = state_.pool->take(key, attempt_at_);  // read just above, nothing waited since
      if (!conn) {
        conn = co_await state_.pool->take_remote(peer, key);
        waited = true;
      }
    }
    const bool reused = conn != nullptr || h2s != nullptr;
    upstream_reused_ = reused;
    if (h2s) state_.pool->reused(key);
    if (!conn && !h2s) {
      std::string preamble;
      if (speaks_for_client)
        preamble = proxy_protocol_header(peer.options.proxy_protocol, client_addr_, server_addr_);
      // The requests waiting for this connect are woken however it ends (also when this
      // coroutine is destroyed mid-connect, at shutdown).
      struct EndConnect {
        H2Upstream* h2;
        std::uint64_t key;
        void operator()() noexcept {
          if (h2) h2->end_connect(key);
          h2 = nullptr;
        }
        ~EndConnect() { (*this)(); }
      } pending{nullptr, key};
      if (h2_peer) {
        state_.h2->begin_connect(key, worker_.executor(),
                                 peer.options.total_connection_timeout);
        pending.h2 = state_.h2.get();
      }
      auto c = co_await connect_upstream(peer, *wd_, upstream_parser_limits(opts_), preamble,
                                         state_.client_tls, key);
      if (c && h2_peer && (peer.tls ? negotiated_alpn(**c) == "h2" : true)) {
        h2::Settings hs = h2_settings(opts_.h2, false);
        hs.max_outbound_streams = peer.options.max_h2_streams;
        h2s = std::make_shared<H2UpConn>(std::move(*c), hs, key, peer.options.idle_timeout,
                                         peer.options.write_timeout, obs_);
        h2s->start();
        state_.h2->add(h2s);
      } else if (c && h2_peer && peer.options.alpn == Alpn::H2) {
        c = Error::upstream(ErrorType::H2Error,
                            "the upstream did not agree to HTTP/2 (ALPN: \"" + negotiated_alpn(**c) + "\")");
      }
      pending();
      if (!c && !h2s) {
        Error e = app_.e_fail_to_connect(*this, peer, ctx_, std::move(c.error()));
        e.set_source(ErrorSource::Upstream);
        if (e.retry() && retries_ < opts_.max_retries) {
          retrying(e);
          continue;
        }
        co_return e;
      }
      if (!h2s) conn = std::move(*c);
      state_.pool->opened(peer, key);
    }
    // A connection taken from the pool at once was "connected" when the attempt began.
    connected_at_ = reused && !waited ? attempt_at_ : clock::now();
    bool response_started = false;
    Result<void> r;
    if (h2s)
      r = co_await h2_attempt(std::move(h2s), reused, response_started);
    else
      r = co_await proxy_attempt(conn, reused, response_started);
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
