// An HTTP/1 upstream connection, the per-worker pool that keeps idle ones, and the registry that
// lets a worker take an idle connection from another worker.
//
// Threading: a Pool belongs to one worker and is touched on that worker's thread only (no locks
// on the request path). The PoolRegistry is shared by the workers of one service: its key table
// is guarded by a mutex taken once per key per worker, and its counters are atomics, each
// written by one worker only. A connection moves between workers as a bare descriptor: the
// giving worker unregisters it from its reactor, the taking worker registers it with its own.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>

#include <portico/core/result.hpp>
#include <portico/core/socket_addr.hpp>
#include <portico/core/task.hpp>
#include <portico/proxy/peer.hpp>
#include <portico/upstream/pool.hpp>

#include "core/deferred.hpp"
#include "core/watchdog.hpp"
#include "http1/codec.hpp"
#include "tls/tls_stream.hpp"

namespace portico::detail {

class ClientTls;
using stream_socket = boost::asio::generic::stream_protocol::socket;
using tls_stream = TlsStream<stream_socket>;

/// What survives a move to another worker: everything but the reactor registration. Owns the
/// descriptor and the TLS reference until adopted.
struct ConnParts {
  ConnParts() = default;
  ConnParts(ConnParts&& o) noexcept { *this = std::move(o); }
  ConnParts& operator=(ConnParts&& o) noexcept;
  ~ConnParts();

  int fd = -1;
  int family = 0;
  int protocol = 0;
  std::uint64_t key = 0;
  std::uint32_t requests = 0;
  SocketAddr peer;
  SocketAddr local;
  std::chrono::milliseconds idle_timeout{0};
  std::vector<char> buf;
  // TLS state (one reference), and who owns the session cache its handshakes fed.
  SSL* ssl = nullptr;
  std::shared_ptr<ClientTls> tls_owner;

 private:
  /// Closes the descriptor and frees the SSL object (what a move leaves behind: -1, null).
  void release() noexcept;
};

struct UpstreamConn {
  UpstreamConn(const boost::asio::any_io_executor& ex, http1::ParserLimits limits)
      : sock(ex), parser(http1::Kind::Response, limits) {}
  ~UpstreamConn();
  UpstreamConn(const UpstreamConn&) = delete;
  UpstreamConn& operator=(const UpstreamConn&) = delete;

  stream_socket sock;
  // TLS over `sock` (declared after it, so it goes first); null for plain text.
  std::unique_ptr<tls_stream> tls;
  std::shared_ptr<ClientTls> tls_owner;
  http1::Parser parser;
  std::vector<char> buf;
  std::size_t begin = 0;
  std::size_t end = 0;
  std::uint64_t key = 0;
  std::uint32_t requests = 0;
  int family = 0;
  int protocol = 0;
  SocketAddr peer;
  SocketAddr local;
  std::chrono::steady_clock::time_point idle_since{};
  std::chrono::milliseconds idle_timeout{0};
  /// Identifies one stay in the pool, so a late idle-watch completion cannot evict the
  /// connection after it was taken (and perhaps pooled again).
  std::uint64_t watch_gen = 0;
  char peek_byte = 0;
  /// While pooled: the idle watch, armed once the connection stayed idle a little (Deferred).
  Deferred::Entry watch_later;
  class Pool* idle_in = nullptr;
  bool watching = false;

  int fd() noexcept { return sock.native_handle(); }
  /// Unregisters the socket from this worker's reactor and hands out what another worker needs
  /// to adopt it. The connection is empty afterwards.
  ConnParts detach();
  /// Adopts a connection another worker detached, on `ex`. Null if the descriptor cannot be
  /// registered (it is closed then).
  static std::unique_ptr<UpstreamConn> adopt(ConnParts&& p, const boost::asio::any_io_executor& ex,
                                             http1::ParserLimits limits);
};

using UpstreamConnPtr = std::unique_ptr<UpstreamConn>;

struct PoolLimits {
  std::size_t max_idle_per_key = 128;
  std::size_t max_idle_total = 4096;
  /// Take idle connections from other workers before connecting.
  bool cross_worker = true;
  /// How long to wait for another worker to hand over a connection.
  std::chrono::milliseconds steal_timeout{10};
};

/// One worker's counters for one key. Written by that worker only (relaxed load + store, no
/// locked instructions), read by anyone. Padded so workers do not share cache lines.
struct alignas(64) KeyWorkerStats {
  std::atomic<std::uint64_t> opened{0};
  std::atomic<std::uint64_t> reused{0};
  std::atomic<std::uint64_t> reused_cross{0};
  std::atomic<std::uint64_t> evicted[kPoolEvictionKinds] = {};
  std::atomic<std::uint64_t> idle{0};

  static void bump(std::atomic<std::uint64_t>& c, std::uint64_t by = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
  }
  static void drop(std::atomic<std::uint64_t>& c) noexcept {
    c.store(c.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
  }
  void add_to(UpstreamPoolStats& s) const noexcept;
};

/// Workers that can share connections; more attach without sharing.
inline constexpr std::size_t kMaxSharingWorkers = 256;

/// A pool key as the workers of a service see it. Never freed before the registry.
struct KeyEntry {
  std::uint64_t key = 0;
  std::string label;
  /// Per worker slot, allocated by that worker on first use.
  std::array<std::atomic<KeyWorkerStats*>, kMaxSharingWorkers> workers{};
  ~KeyEntry();
  /// The slot of worker `i`, allocating it; call on worker i's thread only.
  KeyWorkerStats& slot(std::size_t i);
};

class Pool;

/// The pools of one service's workers and their per-key counters.
class PoolRegistry {
 public:
  struct Slot {
    boost::asio::any_io_executor ex;
    /// Read and written on the slot's own worker thread only (and before workers start).
    Pool* pool = nullptr;
    std::atomic<bool> active{false};
  };

  /// Registers a pool and returns its counter slot. With `share`, other workers may take its
  /// idle connections. Slots are never reused; past kMaxSharingWorkers - 1 pools, the rest
  /// share the last slot's counters and do not share connections (`share` is reset).
  std::size_t add(const boost::asio::any_io_executor& ex, Pool* pool, bool& share);
  /// Called on the pool's own worker thread when it drains or goes away.
  void remove(std::size_t slot) noexcept;
  Slot& slot(std::size_t i) noexcept { return slots_[i]; }
  std::size_t slots() const noexcept { return n_slots_.load(std::memory_order_acquire); }

  /// The entry of `key`, created with `label` when new. Takes the mutex: call once per key per
  /// worker and keep the reference.
  KeyEntry& entry(std::uint64_t key, const std::string& label);

  UpstreamPoolStats total() const;
  std::vector<PeerPoolStats> by_peer() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::uint64_t, std::unique_ptr<KeyEntry>> keys_;
  std::array<Slot, kMaxSharingWorkers> slots_;
  std::atomic<std::size_t> n_slots_{0};
};

/// Idle upstream connections of one service on one worker. LIFO within a key, so the warmest
/// connection is reused. Every idle connection is watched: a close or a stray byte from the
/// upstream evicts it at once; a timer evicts those idle past their idle timeout.
class Pool : public std::enable_shared_from_this<Pool> {
 public:
  Pool(boost::asio::any_io_executor ex, PoolLimits limits, http1::ParserLimits parser_limits,
       std::shared_ptr<PoolRegistry> registry, bool share);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  /// An idle connection of this worker for `key`, or null. Never suspends. `now`: a clock
  /// reading the caller just took (an idle connection older than its timeout is dropped).
  UpstreamConnPtr take(std::uint64_t key, std::chrono::steady_clock::time_point now =
                                              std::chrono::steady_clock::now());
  /// An idle connection of another worker for `peer`'s key, moved to this worker, or null
  /// (none idle, or the other worker did not answer within steal_timeout).
  task<UpstreamConnPtr> take_remote(const HttpPeer& peer, std::uint64_t key);
  /// Counts a connection this worker opened for `peer`.
  void opened(const HttpPeer& peer, std::uint64_t key);
  /// Counts a reuse of a connection kept outside the pool (one client's own).
  void reused(std::uint64_t key);
  /// Keeps `c` for reuse (or closes it when over a limit or draining).
  void put(UpstreamConnPtr c);
  /// Closes every idle connection and refuses new ones (graceful shutdown).
  void drain();

  std::size_t idle() const noexcept { return total_; }

 private:
  struct Bucket {
    std::vector<UpstreamConnPtr> conns;  // oldest first
    KeyEntry* entry = nullptr;
    KeyWorkerStats* stats = nullptr;
  };
  Bucket& bucket(std::uint64_t key, const std::string& label);
  Bucket* find(std::uint64_t key);
  /// The newest usable idle connection of `b`, its watch cancelled; evicts expired ones.
  UpstreamConnPtr pop(Bucket& b, std::chrono::steady_clock::time_point now);
  void watch(UpstreamConn& c);
  void on_watch(std::uint64_t key, const UpstreamConn* c, std::uint64_t gen, bool stray);
  void evict(Bucket& b, std::size_t i, PoolEviction why);
  void evict_all(PoolEviction why);
  bool evict_oldest();
  void arm_sweep(std::chrono::steady_clock::time_point when);
  void sweep();

 public:
  /// Runs on this worker for another worker's take_remote: an idle connection of `key`, or null.
  UpstreamConnPtr give(std::uint64_t key);

 private:
  boost::asio::any_io_executor ex_;
  PoolLimits limits_;
  http1::ParserLimits parser_limits_;
  std::shared_ptr<PoolRegistry> registry_;
  std::size_t slot_ = 0;
  bool share_ = false;
  bool draining_ = false;
  std::unordered_map<std::uint64_t, Bucket> buckets_;
  std::size_t total_ = 0;
  std::uint64_t gen_ = 0;
  boost::asio::steady_timer sweep_;
  std::chrono::steady_clock::time_point sweep_at_ = std::chrono::steady_clock::time_point::max();
  Deferred watch_later_;
};

/// The PROXY protocol header announcing a client connection from `src` to `dst`.
std::string proxy_protocol_header(ProxyProtocol version, const SocketAddr& src, const SocketAddr& dst);

/// A PROXY protocol header read on a listener that expects one.
struct ProxyHeaderIn {
  /// Bytes the header takes at the start of the stream.
  std::size_t length = 0;
  /// v1 UNKNOWN, v2 LOCAL, or an address family other than TCP over IP: the connection's own
  /// addresses stand.
  bool local = false;
  SocketAddr src;
  SocketAddr dst;
};
enum class ProxyParse { Complete, Incomplete, Invalid };
/// Parses a PROXY protocol v1 or v2 header at the start of `data` (HAProxy's specification,
/// strictly). Incomplete: more bytes are needed. Invalid: `why` says what is wrong. A v2 header
/// longer than kMaxProxyHeader is invalid.
inline constexpr std::size_t kMaxProxyHeader = 1024;
ProxyParse parse_proxy_header(const unsigned char* data, std::size_t len, ProxyHeaderIn& out,
                              std::string& why);

/// Connects to `peer` with its connect timeout, sends `preamble` (a PROXY protocol header) if
/// any, and for a TLS peer runs the handshake (`tls` holds contexts and sessions; `key` is the
/// pool key its session is kept under). Connect and handshake failures other than a refused
/// certificate are Upstream errors marked retryable (no request byte was sent).
task<Result<UpstreamConnPtr>> connect_upstream(const HttpPeer& peer, Watchdog& wd,
                                               http1::ParserLimits limits,
                                               std::string_view preamble = {},
                                               const std::shared_ptr<ClientTls>& tls = nullptr,
                                               std::uint64_t key = 0);

}  // namespace portico::detail
