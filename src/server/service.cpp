#include <portico/proxy/service.hpp>

#include <boost/asio/co_spawn.hpp>

#include "core/log.hpp"
#include "observe/proxy_observer.hpp"
#include "proxy/h1_connection.hpp"
#include "server/worker.hpp"
#include "tls/tls.hpp"

namespace portico {

Service::~Service() = default;

Result<void> Service::add_tcp(std::string_view addr, ListenerOptions opts) {
  auto a = SocketAddr::parse(addr);
  if (!a || !a->is_ip())
    return Error::internal(ErrorType::BindError, "not a literal IP:port address: " + std::string(addr));
  std::lock_guard lk(mu_);
  listen_.push_back(*a);
  tls_.push_back(nullptr);
  listener_opts_.push_back(opts);
  bound_.clear();
  return ok();
}

Result<void> Service::add_tls(std::string_view addr, TlsSettings settings, ListenerOptions opts) {
  auto a = SocketAddr::parse(addr);
  if (!a || !a->is_ip())
    return Error::internal(ErrorType::BindError, "not a literal IP:port address: " + std::string(addr));
  auto tls = detail::ServerTls::create(std::move(settings));
  if (!tls) return tls.error();
  std::lock_guard lk(mu_);
  listen_.push_back(*a);
  tls_.push_back(std::move(*tls));
  listener_opts_.push_back(opts);
  bound_.clear();
  return ok();
}

ListenerOptions Service::listener_options(std::size_t i) const {
  std::lock_guard lk(mu_);
  return i < listener_opts_.size() ? listener_opts_[i] : ListenerOptions{};
}

std::shared_ptr<detail::ServerTls> Service::tls_of(std::size_t i) const {
  std::lock_guard lk(mu_);
  return i < tls_.size() ? tls_[i] : nullptr;
}

Result<void> Service::reload_tls() {
  std::vector<std::shared_ptr<detail::ServerTls>> all;
  {
    std::lock_guard lk(mu_);
    all = tls_;
  }
  Result<void> first = ok();
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (!all[i]) continue;
    if (auto r = all[i]->reload(); !r) {
      log::error_log().error("{}: TLS reload of listener {} failed, keeping its certificates: {}",
                             name(), i, r.error().to_string());
      if (first) first = r.error();
    } else {
      log::error_log().info("{}: TLS certificates of listener {} reloaded", name(), i);
    }
  }
  return first;
}

std::vector<SocketAddr> Service::listen_addrs() const {
  std::lock_guard lk(mu_);
  return listen_;
}

std::vector<SocketAddr> Service::local_endpoints() const {
  std::lock_guard lk(mu_);
  return bound_;
}

task<void> Service::run_connection(detail::Worker& w, detail::Accepted& a) {
  if (a.adopt()) serve_connection(w, a);
  co_return;
}

void Service::set_local_endpoint(std::size_t i, SocketAddr a) {
  std::lock_guard lk(mu_);
  if (bound_.size() <= i) bound_.resize(i + 1);
  bound_[i] = a;
}

struct HttpProxyService::Impl {
  std::shared_ptr<detail::PoolRegistry> registry = std::make_shared<detail::PoolRegistry>();
  std::shared_ptr<detail::ClientTls> client_tls = std::make_shared<detail::ClientTls>();
  std::shared_ptr<detail::ProxyObserver> observer;
  std::uint64_t pool_collector = 0;

  void observe_into(std::shared_ptr<observe::Registry> r, const std::string& name) {
    auto log = observer ? observer->access_log : nullptr;
    if (observer) observer->registry()->remove_collector(pool_collector);
    observer = std::make_shared<detail::ProxyObserver>(std::move(r), name);
    observer->access_log = std::move(log);
    pool_collector = detail::register_pool_collector(
        *observer->registry(), name,
        {[reg = registry] { return reg->total(); }, [tls = client_tls] { return tls->full(); },
         [tls = client_tls] { return tls->resumed(); }});
  }
};

HttpProxyService::HttpProxyService(std::shared_ptr<detail::ProxyHttpErased> app,
                                   HttpServerOptions opts, std::string name, std::uint32_t hooks)
    : Service(std::move(name)),
      app_(std::move(app)),
      opts_(opts),
      hooks_(hooks),
      impl_(std::make_unique<Impl>()) {
  impl_->observe_into(observe::default_registry(), this->name());
}

HttpProxyService::~HttpProxyService() {
  impl_->observer->registry()->remove_collector(impl_->pool_collector);
}

void HttpProxyService::set_metrics_registry(std::shared_ptr<observe::Registry> registry) {
  impl_->observe_into(registry ? std::move(registry) : observe::default_registry(), name());
}

std::shared_ptr<observe::Registry> HttpProxyService::metrics_registry() const {
  return impl_->observer->registry();
}

void HttpProxyService::set_access_log(std::shared_ptr<observe::AccessLog> log) {
  impl_->observer->access_log = std::move(log);
}

std::shared_ptr<observe::AccessLog> HttpProxyService::access_log() const {
  return impl_->observer->access_log;
}

std::shared_ptr<detail::ProxyObserver> HttpProxyService::observer() const {
  return impl_->observer;
}

void HttpProxyService::attach_worker(detail::Worker& w) {
  if (w.state_for(this)) return;
  detail::PoolLimits limits{opts_.pool_max_idle_per_key, opts_.pool_max_idle_total,
                            opts_.pool_cross_worker, opts_.pool_steal_timeout};
  // The pool belongs to the worker alone, so its sockets close on the worker's thread.
  auto pool = std::make_shared<detail::Pool>(w.executor(), limits, detail::upstream_parser_limits(opts_),
                                             impl_->registry, w.shares());
  w.set_state(this, std::make_shared<detail::ServiceWorkerState>(std::move(pool), impl_->client_tls));
}

namespace {
task<void> run_owned(std::unique_ptr<detail::H1Connection> c) { co_await c->run(); }
}  // namespace

std::unique_ptr<detail::H1Connection> HttpProxyService::new_connection(detail::Worker& w,
                                                                       detail::Accepted& a) {
  auto* st = static_cast<detail::ServiceWorkerState*>(w.state_for(this));
  if (!st) {
    attach_worker(w);
    st = static_cast<detail::ServiceWorkerState*>(w.state_for(this));
  }
  return std::make_unique<detail::H1Connection>(*this, *st, w, a,
                                                st->listener(*this, a.listener).tls);
}

void HttpProxyService::serve_connection(detail::Worker& w, detail::Accepted& a) {
  boost::asio::co_spawn(w.executor(), run_owned(new_connection(w, a)),
                        [](std::exception_ptr e) { log::ended_by(e, "connection"); });
}

task<void> HttpProxyService::run_connection(detail::Worker& w, detail::Accepted& a) {
  co_await new_connection(w, a)->run();
}

UpstreamPoolStats HttpProxyService::pool_stats() const { return impl_->registry->total(); }

std::vector<PeerPoolStats> HttpProxyService::pool_stats_by_peer() const {
  return impl_->registry->by_peer();
}

std::uint64_t HttpProxyService::upstream_tls_resumed() const { return impl_->client_tls->resumed(); }
std::uint64_t HttpProxyService::upstream_tls_full_handshakes() const { return impl_->client_tls->full(); }

std::uint64_t HttpProxyService::upstream_connections_opened() const { return pool_stats().opened; }

std::uint64_t HttpProxyService::upstream_connections_reused() const { return pool_stats().reused; }

}  // namespace portico
