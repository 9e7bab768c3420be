#include <portico/lb/discovery.hpp>

#include <algorithm>
#include <charconv>
#include <cstring>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/log.hpp"

namespace portico {

namespace asio = boost::asio;

task<Result<std::vector<Backend>>> StaticDiscovery::discover() { co_return backends_; }

Result<DnsName> DnsName::parse(std::string_view text, std::uint32_t weight) {
  std::string_view host, port;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return Error::internal(ErrorType::InternalError, "not host:port: " + std::string(text));
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos)
      return Error::internal(ErrorType::InternalError, "not host:port: " + std::string(text));
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  unsigned p = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (host.empty() || port.empty() || ec != std::errc{} || ptr != port.data() + port.size() ||
      p == 0 || p > 65535)
    return Error::internal(ErrorType::InternalError, "not host:port: " + std::string(text));
  return DnsName{std::string(host), static_cast<std::uint16_t>(p), weight};
}

DnsDiscovery::DnsDiscovery(std::vector<DnsName> names, DnsResolver resolver)
    : names_(std::move(names)),
      resolve_(resolver ? std::move(resolver) : DnsResolver(&system_resolve)) {}

task<Result<std::vector<SocketAddr>>> DnsDiscovery::system_resolve(const std::string& host,
                                                                   std::uint16_t port) {
  // Asio runs getaddrinfo on its own resolver thread; the event loop does not block.
  asio::ip::tcp::resolver resolver(co_await asio::this_coro::executor);
  auto [ec, results] = co_await resolver.async_resolve(host, std::to_string(port),
                                                       asio::ip::tcp::resolver::numeric_service,
                                                       asio::as_tuple(asio::use_awaitable));
  if (ec)
    co_return Error::internal(ErrorType::ConnectNoRoute, "resolving " + host + ": " + ec.message());
  std::vector<SocketAddr> out;
  for (const auto& e : results) {
    const auto ep = e.endpoint();
    out.push_back(SocketAddr::from_sockaddr(ep.data(), static_cast<socklen_t>(ep.size())));
  }
  co_return out;
}

namespace {
bool addr_less(const SocketAddr& a, const SocketAddr& b) {
  if (a.family() != b.family()) return a.family() < b.family();
  if (a.size() != b.size()) return a.size() < b.size();
  return std::memcmp(a.data(), b.data(), a.size()) < 0;
}

std::string name_of(const DnsName& n) {
  const bool v6 = n.host.find(':') != std::string::npos;
  return (v6 ? "[" + n.host + "]" : n.host) + ":" + std::to_string(n.port);
}
}  // namespace

task<Result<std::vector<Backend>>> DnsDiscovery::discover() {
  std::vector<Backend> out;
  std::string failures;
  for (const auto& n : names_) {
    const std::string name = name_of(n);
    Result<std::vector<SocketAddr>> r = Error::internal(ErrorType::InternalError, "not resolved");
    try {
      r = co_await resolve_(n.host, n.port);
    } catch (const std::exception& e) {
      r = Error::internal(ErrorType::InternalError, std::string("resolver threw: ") + e.what());
    }
    std::vector<SocketAddr> addrs;
    if (r && !r->empty()) {
      for (auto& a : *r) addrs.push_back(a.is_ip() && a.port() == 0 ? a.with_port(n.port) : a);
      std::sort(addrs.begin(), addrs.end(), addr_less);
      addrs.erase(std::unique(addrs.begin(), addrs.end()), addrs.end());
      last_good_[name] = addrs;
    } else {
      const std::string why = r ? std::string("no address") : r.error().to_string();
      auto it = last_good_.find(name);
      log::error_log().warn("dns discovery: {}: {}; {}", name, why,
                            it == last_good_.end() ? "no previous address to keep"
                                                   : "keeping the last good addresses");
      failures += (failures.empty() ? "" : "; ") + name + ": " + why;
      if (it != last_good_.end()) addrs = it->second;
    }
    for (const auto& a : addrs) {
      Backend b;
      b.addr = a;
      b.weight = n.weight;
      b.name = name;
      b.metadata.emplace("dns", n.host);
      out.push_back(std::move(b));
    }
  }
  if (out.empty())
    co_return Error::internal(
        ErrorType::ConnectNoRoute,
        "dns discovery found no address" + (failures.empty() ? std::string() : ": " + failures));
  co_return out;
}

std::shared_ptr<CallbackDiscovery> CallbackDiscovery::from_sync(SyncFn fn) {
  // The lambda lives in the std::function inside the CallbackDiscovery, so its capture outlives
  // every coroutine it starts.
  return std::make_shared<CallbackDiscovery>(
      [fn = std::move(fn)]() -> task<Result<std::vector<Backend>>> { co_return fn(); });
}

task<Result<std::vector<Backend>>> CallbackDiscovery::discover() { return fn_(); }

DiscoveryService::DiscoveryService(std::shared_ptr<LoadBalancerBase> lb,
                                   std::shared_ptr<ServiceDiscovery> discovery, Millis interval)
    : lb_(std::move(lb)), discovery_(std::move(discovery)), interval_(interval) {
  if (interval_.count() <= 0) interval_ = Millis(30000);
}

task<Result<bool>> DiscoveryService::run_once() {
  runs_.fetch_add(1, std::memory_order_relaxed);
  Result<std::vector<Backend>> r = Error::internal(ErrorType::InternalError, "not run");
  try {
    r = co_await discovery_->discover();
  } catch (const std::exception& e) {
    r = Error::internal(ErrorType::HookPanic, std::string("discovery threw: ") + e.what());
  }
  if (!r) {
    failures_.fetch_add(1, std::memory_order_relaxed);
    log::error_log().warn("service discovery failed, keeping the current backends: {}",
                          r.error().to_string());
    co_return r.error();
  }
  const std::size_t n = r->size();
  auto changed = lb_->update(std::move(*r));
  if (!changed) {
    failures_.fetch_add(1, std::memory_order_relaxed);
    log::error_log().warn("service discovery returned an unusable set, keeping the current one: {}",
                          changed.error().to_string());
    co_return changed.error();
  }
  if (*changed) {
    changes_.fetch_add(1, std::memory_order_relaxed);
    log::error_log().info("service discovery: backend set changed, {} backend(s)", n);
  }
  co_return *changed;
}

task<void> DiscoveryService::start(ShutdownWatch shutdown) {
  while (!shutdown.stopped()) {
    const auto t0 = std::chrono::steady_clock::now();
    co_await run_once();
    detail::rcu::reclaim();
    // A statement, not a condition: GCC 12 mis-addresses a by-value coroutine parameter used in
    // a co_await inside an if/while condition.
    const bool slept = co_await shutdown.sleep_until(t0 + interval_);
    if (!slept) break;
  }
}

DiscoveryStats DiscoveryService::stats() const noexcept {
  return DiscoveryStats{runs_.load(std::memory_order_relaxed),
                        failures_.load(std::memory_order_relaxed),
                        changes_.load(std::memory_order_relaxed)};
}

}  // namespace portico
