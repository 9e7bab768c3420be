// A minimal LoadBalancer<RoundRobin> over a fixed backend list (the full module is its own
// issue: weights, hashing, health checks, discovery).
#pragma once

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <portico/core/result.hpp>
#include <portico/core/socket_addr.hpp>
#include <portico/proxy/peer.hpp>

namespace portico {

/// One upstream server a load balancer can pick.
struct Backend {
  SocketAddr addr;
  std::uint32_t weight = 1;
};

/// Picks backends in turn; lock-free, safe to call from every worker.
class RoundRobin {
 public:
  explicit RoundRobin(std::size_t n) : n_(n) {}
  /// The index of the next backend.
  std::size_t next(std::string_view /*key*/) noexcept {
    return n_ ? counter_.fetch_add(1, std::memory_order_relaxed) % n_ : 0;
  }

 private:
  std::size_t n_;
  std::atomic<std::size_t> counter_{0};
};

template <class Selection>
class LoadBalancer {
 public:
  explicit LoadBalancer(std::vector<Backend> backends)
      : backends_(std::move(backends)), sel_(backends_.size()) {
    for (auto& b : backends_) peers_.push_back(make_peer(b.addr));
  }

  /// Builds a balancer from literal "IP:port" strings; an error names the first bad one.
  template <class Range>
  static Result<std::shared_ptr<LoadBalancer>> try_from_iter(const Range& addrs) {
    std::vector<Backend> bs;
    for (const auto& a : addrs) {
      auto sa = SocketAddr::parse(a);
      if (!sa)
        return Error::internal(ErrorType::InternalError, "not a backend address: " + std::string(a));
      bs.push_back(Backend{*sa, 1});
    }
    return std::make_shared<LoadBalancer>(std::move(bs));
  }
  static Result<std::shared_ptr<LoadBalancer>> try_from_iter(
      std::initializer_list<std::string_view> addrs) {
    return try_from_iter(std::vector<std::string_view>(addrs));
  }

  /// The next backend for `key`, or nullopt when there is none. `max_iterations` bounds the
  /// search once health checks can skip backends.
  std::optional<Backend> select(std::string_view key = {}, std::size_t max_iterations = 256) {
    if (backends_.empty() || max_iterations == 0) return std::nullopt;
    return backends_[sel_.next(key)];
  }
  /// Like select(), returning a shared plain-HTTP peer for the backend (no allocation).
  HttpPeerPtr select_peer(std::string_view key = {}) {
    if (backends_.empty()) return nullptr;
    return peers_[sel_.next(key)];
  }
  const std::vector<Backend>& backends() const noexcept { return backends_; }

 private:
  std::vector<Backend> backends_;
  std::vector<HttpPeerPtr> peers_;
  Selection sel_;
};

}  // namespace portico
