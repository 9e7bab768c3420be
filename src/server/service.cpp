#include <portico/proxy/service.hpp>

#include <boost/asio/co_spawn.hpp>

#include "core/log.hpp"
#include "proxy/h1_connection.hpp"
#include "server/worker.hpp"

namespace portico {

Service::~Service() = default;

Result<void> Service::add_tcp(std::string_view addr) {
  auto a = SocketAddr::parse(addr);
  if (!a || !a->is_ip())
    return Error::internal(ErrorType::BindError, "not a literal IP:port address: " + std::string(addr));
  std::lock_guard lk(mu_);
  listen_.push_back(*a);
  bound_.clear();
  return ok();
}

std::vector<SocketAddr> Service::listen_addrs() const {
  std::lock_guard lk(mu_);
  return listen_;
}

std::vector<SocketAddr> Service::local_endpoints() const {
  std::lock_guard lk(mu_);
  return bound_;
}

void Service::set_local_endpoint(std::size_t i, SocketAddr a) {
  std::lock_guard lk(mu_);
  if (bound_.size() <= i) bound_.resize(i + 1);
  bound_[i] = a;
}

struct HttpProxyService::Impl {
  std::shared_ptr<detail::PoolRegistry> registry = std::make_shared<detail::PoolRegistry>();
};

HttpProxyService::HttpProxyService(std::shared_ptr<detail::ProxyHttpErased> app,
                                   HttpServerOptions opts, std::string name, std::uint32_t hooks)
    : Service(std::move(name)),
      app_(std::move(app)),
      opts_(opts),
      hooks_(hooks),
      impl_(std::make_unique<Impl>()) {}

HttpProxyService::~HttpProxyService() = default;

void HttpProxyService::attach_worker(detail::Worker& w) {
  if (w.state_for(this)) return;
  detail::PoolLimits limits{opts_.pool_max_idle_per_key, opts_.pool_max_idle_total,
                            opts_.pool_cross_worker, opts_.pool_steal_timeout};
  // The pool belongs to the worker alone, so its sockets close on the worker's thread.
  auto pool = std::make_shared<detail::Pool>(w.executor(), limits, detail::upstream_parser_limits(opts_),
                                             impl_->registry, w.shares());
  w.set_state(this, std::make_shared<detail::ServiceWorkerState>(std::move(pool)));
}

namespace {
task<void> run_connection(std::unique_ptr<detail::H1Connection> c) { co_await c->run(); }
}  // namespace

void HttpProxyService::serve_connection(detail::Worker& w, detail::Accepted& a) {
  auto* st = static_cast<detail::ServiceWorkerState*>(w.state_for(this));
  if (!st) {
    attach_worker(w);
    st = static_cast<detail::ServiceWorkerState*>(w.state_for(this));
  }
  auto conn = std::make_unique<detail::H1Connection>(*this, *st, w, std::move(a.socket));
  boost::asio::co_spawn(w.executor(), run_connection(std::move(conn)), [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      log::error_log().error("connection ended by an exception: {}", x.what());
    } catch (...) {
      log::error_log().error("connection ended by an unknown exception");
    }
  });
}

UpstreamPoolStats HttpProxyService::pool_stats() const { return impl_->registry->total(); }

std::vector<PeerPoolStats> HttpProxyService::pool_stats_by_peer() const {
  return impl_->registry->by_peer();
}

std::uint64_t HttpProxyService::upstream_connections_opened() const { return pool_stats().opened; }

std::uint64_t HttpProxyService::upstream_connections_reused() const { return pool_stats().reused; }

}  // namespace portico
