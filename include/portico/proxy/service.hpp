// Service and HttpProxyService: what a Server runs on its listeners.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <portico/core/result.hpp>
#include <portico/core/socket_addr.hpp>
#include <portico/proxy/proxy_http.hpp>
#include <portico/server/options.hpp>
#include <portico/tls/tls_settings.hpp>
#include <portico/upstream/pool.hpp>

namespace portico {

namespace observe {
class Registry;
class AccessLog;
}  // namespace observe

namespace detail {
class Worker;
struct Accepted;
class H1Connection;
struct ServiceWorkerState;
class ServerTls;
class ProxyObserver;
}  // namespace detail

/// Settings of one listening address.
struct ListenerOptions {
  /// Every connection starts with a PROXY protocol header (v1 or v2, HAProxy's specification),
  /// sent by the load balancer in front: the client and server addresses in Session, logs and
  /// an upstream PROXY header are the ones it carries. A connection whose header is missing,
  /// malformed or late (header_read_timeout) is closed and the reason logged. Only enable it
  /// behind a balancer that always sends one: anyone else could claim any address.
  bool proxy_protocol = false;
  /// Cleartext HTTP/2 with prior knowledge next to HTTP/1.1 on this plain-text listener (see
  /// HttpServerOptions::h2c, which turns it on for every plain listener of a service).
  bool h2c = false;
};

/// Something that serves connections accepted on its listening addresses.
class Service {
 public:
  explicit Service(std::string name) : name_(std::move(name)) {}
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;
  virtual ~Service();

  const std::string& name() const noexcept { return name_; }

  /// Listens on a TCP address, e.g. "127.0.0.1:6188", "[::]:8080", or port 0 for any free port.
  /// Returns an error when the text is not a literal address.
  Result<void> add_tcp(std::string_view addr, ListenerOptions opts = {});
  /// Listens on a TCP address with TLS. The certificates are loaded now: an unreadable file, a
  /// key that does not match or bad settings are reported here, not at the first handshake.
  Result<void> add_tls(std::string_view addr, TlsSettings settings, ListenerOptions opts = {});
  /// Re-reads the certificate files of every TLS listener. New handshakes use the new ones;
  /// established connections keep theirs. A listener whose new files do not load keeps its
  /// current certificates; the first such error is returned (and each is logged).
  Result<void> reload_tls();
  /// The options of listener `i` (add_tcp/add_tls order).
  ListenerOptions listener_options(std::size_t i) const;
  /// The TLS of listener `i` (add_tcp/add_tls order), or null for plain text.
  std::shared_ptr<detail::ServerTls> tls_of(std::size_t i) const;
  /// The addresses given to add_tcp, in order.
  std::vector<SocketAddr> listen_addrs() const;
  /// The addresses actually bound (port 0 resolved), in add_tcp order; empty before the server
  /// started.
  std::vector<SocketAddr> local_endpoints() const;

  /// Engine entry point: serve one accepted connection on the calling worker.
  virtual void serve_connection(detail::Worker& w, detail::Accepted& a) = 0;
  /// Engine entry point: serve one accepted connection on the calling worker, in the calling
  /// coroutine, until it ends (the engine keeps such coroutines to serve the next connections).
  /// By default: serve_connection.
  virtual task<void> run_connection(detail::Worker& w, detail::Accepted& a);
  /// Engine entry point: called once per worker before it accepts.
  virtual void attach_worker(detail::Worker&) {}

  /// Used by Server and serve(): records a bound address.
  void set_local_endpoint(std::size_t i, SocketAddr a);

 private:
  std::string name_;
  mutable std::mutex mu_;
  std::vector<SocketAddr> listen_;
  std::vector<std::shared_ptr<detail::ServerTls>> tls_;  // per listener, null for plain
  std::vector<ListenerOptions> listener_opts_;           // per listener
  std::vector<SocketAddr> bound_;
};

/// An HTTP proxy service: the engine driving a ProxyHttp's hooks.
class HttpProxyService final : public Service {
 public:
  /// `hooks` lists the coroutine hooks the proxy overrides (detail::HookBit); the others are
  /// not called. http_proxy_service() computes it; the default calls every hook.
  HttpProxyService(std::shared_ptr<detail::ProxyHttpErased> app, HttpServerOptions opts,
                   std::string name = "proxy", std::uint32_t hooks = detail::kAllHooks);
  ~HttpProxyService() override;

  const HttpServerOptions& options() const noexcept { return opts_; }
  /// Changes options; takes effect for connections accepted afterwards. Call before start.
  HttpServerOptions& mutable_options() noexcept { return opts_; }
  detail::ProxyHttpErased& app() noexcept { return *app_; }
  std::uint32_t hooks() const noexcept { return hooks_; }

  void serve_connection(detail::Worker& w, detail::Accepted& a) override;
  task<void> run_connection(detail::Worker& w, detail::Accepted& a) override;
  void attach_worker(detail::Worker& w) override;

  /// Upstream connection pool counters summed over workers and peers; any thread may call.
  UpstreamPoolStats pool_stats() const;
  /// The same per pool key, sorted by peer.
  std::vector<PeerPoolStats> pool_stats_by_peer() const;
  /// Upstream TLS handshakes that resumed a session, and full ones.
  std::uint64_t upstream_tls_resumed() const;
  std::uint64_t upstream_tls_full_handshakes() const;
  /// Shorthands for pool_stats().opened and pool_stats().reused.
  std::uint64_t upstream_connections_opened() const;
  std::uint64_t upstream_connections_reused() const;

  /// Records this service's built-in metrics (docs/observability.md) in `registry` instead of
  /// observe::default_registry(). Call before the server starts.
  void set_metrics_registry(std::shared_ptr<observe::Registry> registry);
  std::shared_ptr<observe::Registry> metrics_registry() const;
  /// Writes one line per finished request to `log` (null: no access log). Call before the server
  /// starts. See observe::AccessLog::open and observe::open_access_log (the `access_log:` block).
  void set_access_log(std::shared_ptr<observe::AccessLog> log);
  std::shared_ptr<observe::AccessLog> access_log() const;
  /// Engine: what connections record into.
  std::shared_ptr<detail::ProxyObserver> observer() const;

 private:
  std::unique_ptr<detail::H1Connection> new_connection(detail::Worker& w, detail::Accepted& a);
  struct Impl;
  std::shared_ptr<detail::ProxyHttpErased> app_;
  HttpServerOptions opts_;
  std::uint32_t hooks_;
  std::unique_ptr<Impl> impl_;
};

/// Wraps a proxy into a service; add listeners with `add_tcp`, then hand it to a Server.
template <class P>
std::shared_ptr<HttpProxyService> http_proxy_service(std::shared_ptr<P> proxy,
                                                     HttpServerOptions opts = {},
                                                     std::string name = "proxy") {
  constexpr std::uint32_t hooks = detail::overridden_hooks<P>();
  return std::make_shared<HttpProxyService>(std::move(proxy), opts, std::move(name), hooks);
}

}  // namespace portico
