// An HTTP/1 upstream connection and the per-worker pool that keeps idle ones.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include <boost/asio/generic/stream_protocol.hpp>

#include <portico/core/result.hpp>
#include <portico/core/socket_addr.hpp>
#include <portico/core/task.hpp>
#include <portico/proxy/peer.hpp>

#include "core/watchdog.hpp"
#include "http1/codec.hpp"

namespace portico::detail {

using stream_socket = boost::asio::generic::stream_protocol::socket;

struct UpstreamConn {
  UpstreamConn(const boost::asio::any_io_executor& ex, http1::ParserLimits limits)
      : sock(ex), parser(http1::Kind::Response, limits) {}

  stream_socket sock;
  http1::Parser parser;
  std::vector<char> buf;
  std::size_t begin = 0;
  std::size_t end = 0;
  std::uint64_t key = 0;
  std::uint32_t requests = 0;
  SocketAddr peer;
  SocketAddr local;
  std::chrono::steady_clock::time_point idle_since{};
  std::chrono::milliseconds idle_timeout{0};

  int fd() noexcept { return sock.native_handle(); }
  /// Non-blocking check that an idle connection is still usable: no EOF, no stray byte.
  bool still_usable() noexcept;
};

using UpstreamConnPtr = std::unique_ptr<UpstreamConn>;

struct PoolLimits {
  std::size_t max_idle_per_key = 128;
  std::size_t max_idle_total = 4096;
};

/// Counters of one pool, written by its worker only and read by anyone.
struct PoolStats {
  std::atomic<std::uint64_t> opened{0};
  std::atomic<std::uint64_t> reused{0};
  std::atomic<std::uint64_t> evicted{0};
  static void bump(std::atomic<std::uint64_t>& c) noexcept {
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
};

/// Idle upstream connections of one service on one worker. Not thread-safe: the owning worker's
/// thread is the only one to touch it. LIFO within a key, so the warmest connection is reused.
class Pool {
 public:
  Pool(PoolLimits l, std::shared_ptr<PoolStats> stats) : limits_(l), stats_(std::move(stats)) {}
  UpstreamConnPtr take(std::uint64_t key);
  void put(UpstreamConnPtr c);
  std::size_t idle() const noexcept { return total_; }

  PoolStats& stats() noexcept { return *stats_; }

 private:
  PoolLimits limits_;
  std::shared_ptr<PoolStats> stats_;
  std::unordered_map<std::uint64_t, std::vector<UpstreamConnPtr>> idle_;
  std::size_t total_ = 0;
};

/// Connects to `peer` with its connect timeout. Failures are Upstream errors marked retryable
/// (nothing was sent).
task<Result<UpstreamConnPtr>> connect_upstream(const HttpPeer& peer, Watchdog& wd,
                                               http1::ParserLimits limits);

}  // namespace portico::detail
