// ProxyHttp<Ctx>: the hooks a user overrides to program the proxy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>

#include <portico/core/error.hpp>
#include <portico/core/result.hpp>
#include <portico/core/task.hpp>
#include <portico/http/body.hpp>
#include <portico/http/header_map.hpp>
#include <portico/http/message.hpp>
#include <portico/proxy/peer.hpp>
#include <portico/proxy/session.hpp>

namespace portico {

/// The context type of a proxy that keeps no per-request state.
struct NoCtx {};

/// What `fail_to_proxy` decided: the status sent (0 = nothing sent) and whether the downstream
/// connection may serve another request.
struct FailToProxy {
  std::uint16_t error_code = 0;
  bool can_reuse_downstream = false;
};

namespace detail {

/// The engine's view of a proxy: every hook with the context type erased. `ProxyHttp<Ctx>`
/// implements it; users never derive from it directly.
class ProxyHttpErased {
 public:
  virtual ~ProxyHttpErased() = default;

  virtual std::size_t ctx_size() const noexcept = 0;
  virtual std::size_t ctx_align() const noexcept = 0;
  /// Constructs a context in `mem` (ctx_size bytes, ctx_align aligned) by calling new_ctx().
  virtual void construct_ctx(void* mem) = 0;
  virtual void destroy_ctx(void* mem) noexcept = 0;

  virtual task<Result<void>> e_early_request_filter(Session&, void*) = 0;
  virtual task<Result<bool>> e_request_filter(Session&, void*) = 0;
  virtual task<Result<bool>> e_proxy_upstream_filter(Session&, void*) = 0;
  virtual task<Result<HttpPeerPtr>> e_upstream_peer(Session&, void*) = 0;
  virtual Error e_fail_to_connect(Session&, const HttpPeer&, void*, Error) = 0;
  virtual task<Result<void>> e_connected_to_upstream(Session&, const ConnectionInfo&, void*) = 0;
  virtual task<Result<void>> e_upstream_request_filter(Session&, RequestHeader&, void*) = 0;
  virtual Result<void> e_request_body_filter(Session&, BodyChunk&, bool, void*) = 0;
  virtual Result<void> e_upstream_response_filter(Session&, ResponseHeader&, void*) = 0;
  virtual task<Result<void>> e_response_filter(Session&, ResponseHeader&, void*) = 0;
  virtual Result<void> e_response_body_filter(Session&, BodyChunk&, bool, void*) = 0;
  virtual Result<void> e_response_trailer_filter(Session&, HeaderMap&, void*) = 0;
  virtual Error e_error_while_proxy(const HttpPeer&, Session&, Error, void*, bool) = 0;
  virtual task<FailToProxy> e_fail_to_proxy(Session&, const Error&, void*) = 0;
  virtual bool e_suppress_error_log(const Session&, const void*, const Error&) = 0;
  virtual task<void> e_logging(Session&, const Error*, void*) = 0;
};

/// Hooks the engine may skip when a proxy keeps their default (each coroutine hook costs a
/// coroutine frame; a body nobody filters may be spliced). `http_proxy_service<P>` finds out at
/// compile time which ones P overrides.
enum HookBit : std::uint32_t {
  kEarlyRequestFilter = 1u << 0,
  kRequestFilter = 1u << 1,
  kProxyUpstreamFilter = 1u << 2,
  kConnectedToUpstream = 1u << 3,
  kUpstreamRequestFilter = 1u << 4,
  kResponseFilter = 1u << 5,
  kLogging = 1u << 6,
  kResponseBodyFilter = 1u << 7,  // not a coroutine: known so that bodies nobody sees are spliced
  kAllHooks = ~0u,
};

/// The default status mapping of `fail_to_proxy` (see docs/lifecycle.md):
/// HTTPStatus(code) -> code; upstream read/write timeouts -> 504; other upstream errors -> 502;
/// downstream I/O errors -> 0 (nothing is sent, the client is gone); other downstream errors ->
/// 400; internal or unset -> 500.
std::uint16_t default_error_status(const Error& e) noexcept;

/// Writes the error page for `e` (when a response was not started) and returns what it did.
task<FailToProxy> default_fail_to_proxy(Session& s, const Error& e);

/// Pingora's default: adds the peer to the context and resolves `ReusedOnly` retries.
Error default_error_while_proxy(const HttpPeer& peer, Error e, bool client_reused);

}  // namespace detail

/// Subclass this and override the hooks you need; only `upstream_peer` is required.
///
/// For each request the engine calls, in order (skipping as described in docs/lifecycle.md):
/// new_ctx, early_request_filter, request_filter, proxy_upstream_filter, then for each attempt
/// upstream_peer, [connect or reuse], connected_to_upstream, upstream_request_filter,
/// request_body_filter (per chunk, while the response streams back), upstream_response_filter,
/// response_filter, response_body_filter (per chunk), response_trailer_filter; on failure
/// fail_to_connect or error_while_proxy decide on a retry, and fail_to_proxy writes the error
/// response; logging runs last, exactly once per request.
///
/// Header-phase hooks are coroutines (they may await I/O). Body hooks are plain calls on the hot
/// path. An exception escaping a hook is caught at the request boundary: the client gets a 500
/// (or the connection is closed when a response was already started), an error is logged, and the
/// worker keeps serving.
template <class Ctx = NoCtx>
class ProxyHttp : public detail::ProxyHttpErased {
 public:
  using ctx_type = Ctx;

  /// Creates the per-request context.
  virtual Ctx new_ctx() { return Ctx{}; }

  /// Runs first, before any module. An error ends the request through fail_to_proxy.
  virtual task<Result<void>> early_request_filter(Session&, Ctx&) { co_return ok(); }

  /// Validates or answers the request. Return true when a response was written here: the
  /// request then ends (logging still runs) without going upstream.
  virtual task<Result<bool>> request_filter(Session&, Ctx&) { co_return false; }

  /// Return false to not go upstream; when nothing was written, a 502 is sent.
  virtual task<Result<bool>> proxy_upstream_filter(Session&, Ctx&) { co_return true; }

  /// Picks the upstream for this attempt. Called again on each retry; `Session::failed_peers()`
  /// lists the peers that failed. An error here ends the request without retry.
  virtual task<Result<HttpPeerPtr>> upstream_peer(Session&, Ctx&) = 0;

  /// A connect (or TLS handshake, or pool) failure for `peer`. Return the error, possibly with
  /// `set_retry()` changed. Connect errors are retryable by default: nothing was sent.
  virtual Error fail_to_connect(Session&, const HttpPeer&, Ctx&, Error e) { return e; }

  /// The upstream connection is ready (new or reused).
  virtual task<Result<void>> connected_to_upstream(Session&, const ConnectionInfo&, Ctx&) {
    co_return ok();
  }

  /// Edits the request about to be sent upstream: a copy of the downstream request header.
  virtual task<Result<void>> upstream_request_filter(Session&, RequestHeader&, Ctx&) {
    co_return ok();
  }

  /// Sees or changes each chunk of the request body on its way upstream. `end` marks the last
  /// call; a bodyless request gets one call with an empty chunk and `end = true`.
  virtual Result<void> request_body_filter(Session&, BodyChunk&, bool /*end*/, Ctx&) {
    return ok();
  }

  /// Edits the upstream response header before anything else sees it (also for 1xx).
  virtual Result<void> upstream_response_filter(Session&, ResponseHeader&, Ctx&) { return ok(); }

  /// Edits the response header about to be sent downstream.
  virtual task<Result<void>> response_filter(Session&, ResponseHeader&, Ctx&) { co_return ok(); }

  /// Sees or changes each chunk of the response body on its way downstream. A proxy that keeps
  /// this default lets long bodies go socket to socket without passing through it
  /// (HttpServerOptions::splice_min_body_bytes); overriding it means every byte is seen here.
  virtual Result<void> response_body_filter(Session&, BodyChunk&, bool /*end*/, Ctx&) {
    return ok();
  }

  /// Sees or changes response trailers (chunked HTTP/1.1 and HTTP/2).
  virtual Result<void> response_trailer_filter(Session&, HeaderMap&, Ctx&) { return ok(); }

  /// An error after the upstream connection existed. `client_reused` tells whether the upstream
  /// connection came from the pool. Return the error, possibly with its retry flag changed.
  virtual Error error_while_proxy(const HttpPeer& peer, Session&, Error e, Ctx&,
                                  bool client_reused) {
    return detail::default_error_while_proxy(peer, std::move(e), client_reused);
  }

  /// The request failed for good: write an error response (if none was started) and say what
  /// was done. The default maps the error to a status with `detail::default_error_status`.
  virtual task<FailToProxy> fail_to_proxy(Session& s, const Error& e, Ctx&) {
    return detail::default_fail_to_proxy(s, e);
  }

  /// Return true to keep a failed request out of the error log.
  virtual bool suppress_error_log(const Session&, const Ctx&, const Error&) { return false; }

  /// Runs exactly once per request, last, with the final error (null on success).
  virtual task<void> logging(Session&, const Error*, Ctx&) { co_return; }

 private:
  std::size_t ctx_size() const noexcept final { return sizeof(Ctx); }
  std::size_t ctx_align() const noexcept final { return alignof(Ctx); }
  void construct_ctx(void* mem) final { ::new (mem) Ctx(new_ctx()); }
  void destroy_ctx(void* mem) noexcept final { static_cast<Ctx*>(mem)->~Ctx(); }
  static Ctx& c(void* p) noexcept { return *static_cast<Ctx*>(p); }

  task<Result<void>> e_early_request_filter(Session& s, void* x) final {
    return early_request_filter(s, c(x));
  }
  task<Result<bool>> e_request_filter(Session& s, void* x) final { return request_filter(s, c(x)); }
  task<Result<bool>> e_proxy_upstream_filter(Session& s, void* x) final {
    return proxy_upstream_filter(s, c(x));
  }
  task<Result<HttpPeerPtr>> e_upstream_peer(Session& s, void* x) final {
    return upstream_peer(s, c(x));
  }
  Error e_fail_to_connect(Session& s, const HttpPeer& p, void* x, Error e) final {
    return fail_to_connect(s, p, c(x), std::move(e));
  }
  task<Result<void>> e_connected_to_upstream(Session& s, const ConnectionInfo& i, void* x) final {
    return connected_to_upstream(s, i, c(x));
  }
  task<Result<void>> e_upstream_request_filter(Session& s, RequestHeader& r, void* x) final {
    return upstream_request_filter(s, r, c(x));
  }
  Result<void> e_request_body_filter(Session& s, BodyChunk& b, bool end, void* x) final {
    return request_body_filter(s, b, end, c(x));
  }
  Result<void> e_upstream_response_filter(Session& s, ResponseHeader& r, void* x) final {
    return upstream_response_filter(s, r, c(x));
  }
  task<Result<void>> e_response_filter(Session& s, ResponseHeader& r, void* x) final {
    return response_filter(s, r, c(x));
  }
  Result<void> e_response_body_filter(Session& s, BodyChunk& b, bool end, void* x) final {
    return response_body_filter(s, b, end, c(x));
  }
  Result<void> e_response_trailer_filter(Session& s, HeaderMap& t, void* x) final {
    return response_trailer_filter(s, t, c(x));
  }
  Error e_error_while_proxy(const HttpPeer& p, Session& s, Error e, void* x, bool reused) final {
    return error_while_proxy(p, s, std::move(e), c(x), reused);
  }
  task<FailToProxy> e_fail_to_proxy(Session& s, const Error& e, void* x) final {
    return fail_to_proxy(s, e, c(x));
  }
  bool e_suppress_error_log(const Session& s, const void* x, const Error& e) final {
    return suppress_error_log(s, *static_cast<const Ctx*>(x), e);
  }
  task<void> e_logging(Session& s, const Error* e, void* x) final { return logging(s, e, c(x)); }
};

namespace detail {

/// Which coroutine hooks `P` overrides. A member pointer names the class that declares the
/// member, so `&P::hook` has the base's type exactly when P (or a class between) keeps the default.
template <class P>
constexpr std::uint32_t overridden_hooks() noexcept {
  if constexpr (!requires { typename P::ctx_type; }) {
    return kAllHooks;
  } else {
    using B = ProxyHttp<typename P::ctx_type>;
    std::uint32_t m = 0;
#define PORTICO_HOOK_BIT(name, bit) \
  if (!std::is_same_v<decltype(&P::name), decltype(&B::name)>) m |= bit;
    PORTICO_HOOK_BIT(early_request_filter, kEarlyRequestFilter)
    PORTICO_HOOK_BIT(request_filter, kRequestFilter)
    PORTICO_HOOK_BIT(proxy_upstream_filter, kProxyUpstreamFilter)
    PORTICO_HOOK_BIT(connected_to_upstream, kConnectedToUpstream)
    PORTICO_HOOK_BIT(upstream_request_filter, kUpstreamRequestFilter)
    PORTICO_HOOK_BIT(response_filter, kResponseFilter)
    PORTICO_HOOK_BIT(logging, kLogging)
    PORTICO_HOOK_BIT(response_body_filter, kResponseBodyFilter)
#undef PORTICO_HOOK_BIT
    return m;
  }
}

}  // namespace detail

}  // namespace portico
