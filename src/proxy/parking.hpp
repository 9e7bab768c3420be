// ParkingLot: idle keep-alive client connections reduced to their descriptor.
//
// A parked connection (HttpServerOptions::keepalive_park_after, see H1Connection::park) keeps
// its socket alone. Kept as an Asio socket with a pending wait, it would still hold the
// reactor's per-socket state (~170 bytes), the wait operation (~140) and an object around them
// (~200), allocated at different times and so scattered over pages that also held the freed
// request state: most of those pages stay resident. Here the descriptor leaves Asio's reactor
// (whose per-socket state goes back to Asio's free list, for the next connection) for an epoll
// set of the lot's own, which Asio watches as a single descriptor; what is left per connection
// is a 40-byte slot in arrays of the lot. The next request (or the client's close) hands the
// descriptor to a new H1Connection; the keep-alive deadline or a drain closes it. A TLS
// connection keeps its SSL object too (the session's keys and sequence numbers, which a new
// connection object takes over without a handshake) and what its handshake told (TlsInfo); an
// HTTP/2 connection keeps its h2::Session (its HPACK tables, settings, flow-control
// windows, stream numbering), which the next connection object goes on with. The keep-alive
// deadline or a drain ends a parked HTTP/2 connection with a GOAWAY.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <openssl/ssl.h>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <portico/tls/tls_settings.hpp>

#include "http2/session.hpp"
#include "server/worker.hpp"

namespace portico {
class HttpProxyService;
}

namespace portico::detail {

class ProxyObserver;
class ServerCtxSet;
struct ServiceWorkerState;

/// What a parked connection keeps besides its descriptor, when it is more than a plain
/// HTTP/1.1 connection.
struct ParkedConn {
  ParkedConn() = default;
  ParkedConn(const ParkedConn&) = delete;
  ParkedConn& operator=(const ParkedConn&) = delete;
  ~ParkedConn();
  SSL* ssl = nullptr;  // TLS: one reference, with the BIO of the stream it came from
  std::unique_ptr<TlsInfo> info;
  std::shared_ptr<const ServerCtxSet> set;  // the certificates the handshake used
  /// HTTP/2: the session (HPACK tables, settings, windows, stream numbering) of an idle
  /// connection, which has no stream and nothing to send.
  std::unique_ptr<h2::Session> h2;
};

class ParkingLot {
 public:
  /// Parked connections of `svc` on worker `w` (whose thread alone uses the lot); each is
  /// closed once parked for `timeout`.
  ParkingLot(HttpProxyService& svc, ServiceWorkerState& state, Worker& w,
             std::chrono::milliseconds timeout);
  /// Closes the connections still parked.
  ~ParkingLot();
  ParkingLot(const ParkingLot&) = delete;
  ParkingLot& operator=(const ParkingLot&) = delete;

  /// Takes the descriptor of `s`, which served `served` requests on listener `listener`; `v6`:
  /// its address family. false: the connection could not be parked and `s` is closed (or left
  /// open when the lot could not make its epoll set); the caller then counts the close. A
  /// parked connection counts among the worker's active ones and in the service's
  /// `connection_parked` gauge.
  bool park(boost::asio::ip::tcp::socket& s, std::size_t listener, std::uint32_t served, bool v6,
            ParkedConnPtr parked = nullptr) noexcept;

  /// The worker drains: closes every parked connection (idle, and each served requests, so
  /// nothing is lost) and stops the lot's waits, so nothing keeps the event loop running.
  /// Nothing is parked afterwards.
  void drain() noexcept;

  /// Connections parked now.
  std::size_t size() const noexcept { return size_; }

 private:
  static constexpr std::uint32_t kNone = 0xffffffffu;
  static constexpr std::uint32_t kChunk = 256;  // slots per array (10 KiB)
  static constexpr int kWakeBatch = 64;         // connections woken per readiness of the set

  struct Slot {
    int fd = -1;            // -1: free
    std::uint32_t gen = 0;  // bumped on every reuse: epoll events carry it
    std::uint32_t served = 0;
    std::uint32_t listener = 0;  // the top bit: an IPv6 socket
    std::uint32_t prev = kNone;  // the deadline queue when parked, the free list when free
    std::uint32_t next = kNone;
    std::chrono::steady_clock::rep due = 0;
    ParkedConn* more = nullptr;  // TLS and HTTP/2 state (owned)
  };
  static_assert(sizeof(Slot) == 40);

  // The lot's handlers outlive it when they are queued as it goes: they reach it through this.
  struct Token {
    ParkingLot* lot;
  };

  Slot& at(std::uint32_t i) noexcept { return chunks_[i / kChunk][i % kChunk]; }
  std::uint32_t take_slot();
  void free_slot(std::uint32_t i) noexcept;
  void unlink(std::uint32_t i) noexcept;
  /// Frees slot `i` and closes its descriptor (the client did not come back).
  void close(std::uint32_t i) noexcept;
  /// One connection fewer: the gauges and the worker's count.
  void left(bool closed) noexcept;
  void arm_wait();
  void arm_timer();
  void on_ready() noexcept;
  void on_timer() noexcept;

  HttpProxyService& svc_;
  ServiceWorkerState& state_;  // told of the closes (a crowd leaving gives memory back)
  Worker& w_;
  std::shared_ptr<ProxyObserver> obs_;
  std::chrono::steady_clock::duration timeout_;
  std::shared_ptr<Token> token_;
  boost::asio::posix::stream_descriptor epoll_;
  boost::asio::steady_timer timer_;
  std::vector<std::unique_ptr<Slot[]>> chunks_;
  std::uint32_t free_ = kNone;
  std::uint32_t head_ = kNone;  // parked, the earliest deadline first
  std::uint32_t tail_ = kNone;
  std::size_t size_ = 0;
  bool waiting_ = false;  // an epoll wait is pending
  bool timing_ = false;   // the timer is pending
  bool drained_ = false;
};

}  // namespace portico::detail
