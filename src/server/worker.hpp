// Worker: one event loop thread and what it owns.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <unordered_map>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <portico/core/socket_addr.hpp>

#include "core/deferred.hpp"
#include "core/raw_fd.hpp"
#include "core/send_batch.hpp"

namespace portico::detail {

/// A connection the worker can ask to stop (graceful shutdown).
class Drainable {
 public:
  virtual ~Drainable() = default;
  /// Stop after the current request; close now when idle.
  virtual void drain() noexcept = 0;
  /// Close now.
  virtual void abort() noexcept = 0;
  Drainable* prev_ = nullptr;
  Drainable* next_ = nullptr;
};

/// What a service keeps per worker (its upstream pool, ...).
class WorkerState {
 public:
  virtual ~WorkerState() = default;
  /// The worker is shutting down: release what is idle, keep what is in use.
  virtual void drain() noexcept {}
};

class Worker {
 public:
  /// `shares` marks a worker of a Server, whose siblings may take its idle upstream
  /// connections; serve() runs a worker alone.
  Worker(boost::asio::any_io_executor ex, std::size_t index, bool shares = false)
      : executor_(std::move(ex)), index_(index), shares_(shares) {}

  const boost::asio::any_io_executor& executor() const noexcept { return executor_; }
  std::size_t index() const noexcept { return index_; }
  bool draining() const noexcept { return draining_; }
  bool shares() const noexcept { return shares_; }

  void add(Drainable* c) noexcept {
    c->prev_ = nullptr;
    c->next_ = head_;
    if (head_) head_->prev_ = c;
    head_ = c;
    active_.fetch_add(1, std::memory_order_relaxed);
  }
  void remove(Drainable* c) noexcept {
    if (c->prev_) c->prev_->next_ = c->next_; else head_ = c->next_;
    if (c->next_) c->next_->prev_ = c->prev_;
    c->prev_ = c->next_ = nullptr;
    if (active_.fetch_sub(1, std::memory_order_relaxed) == 1 && on_empty_) on_empty_();
  }
  /// Counts one more (hold) or one fewer (unhold) active connection that is not a Drainable of
  /// its own: the parked ones (ParkingLot), which their service's state closes on a drain.
  void hold() noexcept { active_.fetch_add(1, std::memory_order_relaxed); }
  void unhold() noexcept {
    if (active_.fetch_sub(1, std::memory_order_relaxed) == 1 && on_empty_) on_empty_();
  }
  /// Called on the worker's thread whenever its last connection closes.
  void set_on_empty(std::function<void()> f) { on_empty_ = std::move(f); }
  /// On the worker's thread: every connection finishes its current request and closes.
  void drain_all() noexcept {
    draining_ = true;
    if (deferred_) deferred_->quiesce();
    for (auto& [svc, st] : states_) st->drain();
    for (Drainable* c = head_; c;) {
      Drainable* n = c->next_;
      c->drain();
      c = n;
    }
  }
  void abort_all() noexcept {
    draining_ = true;
    if (deferred_) deferred_->quiesce();
    for (auto& [svc, st] : states_) st->drain();
    for (Drainable* c = head_; c;) {
      Drainable* n = c->next_;
      c->abort();
      c = n;
    }
  }
  std::size_t active() const noexcept { return active_.load(std::memory_order_relaxed); }

  /// Per-service state owned by this worker (its upstream pool, ...). Worker thread only.
  WorkerState* state_for(const void* service) const noexcept {
    auto it = states_.find(service);
    return it == states_.end() ? nullptr : it->second.get();
  }
  void set_state(const void* service, std::shared_ptr<WorkerState> st) {
    states_[service] = std::move(st);
  }
  /// Watches worth arming only when a wait lasts (see Deferred). Worker thread only.
  Deferred& deferred() {
    if (!deferred_) deferred_ = std::make_unique<Deferred>(executor_, kWatchDelay);
    return *deferred_;
  }
  /// The worker's batch of sends (upstream request heads, ends of keep-alive responses;
  /// core/send_batch.hpp), made on first use by the worker's thread (a Server's worker makes it
  /// before Server::start returns); null without io_uring, or once its ring failed.
  SendBatch* send_batch() noexcept {
    if (!batch_tried_) {
      batch_tried_ = true;
      batch_ = SendBatch::make();
    }
    return batch_ && batch_->usable() ? batch_.get() : nullptr;
  }
  /// An unopened timer of the worker's event loop to move a new one from (it stays one after
  /// the move). Constructing a timer from an executor looks its service up in the io_context's
  /// registry, under a mutex and comparing type names, once per connection and per request
  /// stream; a move takes the service from the prototype. Worker thread only.
  boost::asio::steady_timer& timer_prototype() {
    if (!timer_proto_) timer_proto_.emplace(executor_);
    return *timer_proto_;
  }
  /// The same for a TCP socket: each accepted (or unparked) connection's socket is moved from
  /// it. Worker thread only.
  boost::asio::ip::tcp::socket& socket_prototype() {
    if (!socket_proto_) socket_proto_.emplace(executor_);
    return *socket_proto_;
  }
  /// Drops every service state (closing pooled upstream connections) and the worker's own
  /// timers: whatever is bound to the event loop. Worker thread only.
  void clear_states() noexcept {
    states_.clear();
    deferred_.reset();
    batch_.reset();  // (a flush still queued then does nothing)
    timer_proto_.reset();
    socket_proto_.reset();
  }
  ~Worker() { clear_states(); }

 private:
  boost::asio::any_io_executor executor_;
  std::size_t index_;
  bool shares_;
  bool draining_ = false;
  Drainable* head_ = nullptr;
  std::atomic<std::size_t> active_{0};
  std::function<void()> on_empty_;
  std::unordered_map<const void*, std::shared_ptr<WorkerState>> states_;
  std::unique_ptr<Deferred> deferred_;
  std::unique_ptr<SendBatch> batch_;  // made and freed by the worker's thread
  std::optional<boost::asio::steady_timer> timer_proto_;
  std::optional<boost::asio::ip::tcp::socket> socket_proto_;
  bool batch_tried_ = false;
};

/// What a parked connection keeps besides its descriptor (see ParkingLot): its TLS session, its
/// HTTP/2 session. Freed through its own function so that Accepted needs no definition of it.
struct ParkedConn;
struct ParkedConnDelete {
  void operator()(ParkedConn* p) const noexcept;
};
using ParkedConnPtr = std::unique_ptr<ParkedConn, ParkedConnDelete>;

struct Accepted {
  boost::asio::ip::tcp::socket socket;
  /// Index of the listener (Service::add_tcp / add_tls order) that accepted it.
  std::size_t listener = 0;
  /// The client's address as accept() returned it, and the local address when the listener is
  /// bound to a specific one (empty: ask the socket).
  SocketAddr peer;
  SocketAddr local;
  /// The listener has TCP_NODELAY, which accepted sockets inherit on Linux.
  bool nodelay = false;
  /// Requests the connection served before it was parked (see H1Connection); 0: a new one.
  std::uint32_t served = 0;
  /// A parked connection's TLS session (taken over instead of a handshake) and HTTP/2 session
  /// (the connection goes on with it); null for a parked plain HTTP/1.1 connection.
  ParkedConnPtr parked = nullptr;
  /// The connection's descriptor when `socket` is not open: accepted but not yet given to Asio
  /// (see accept_raw). Services other than HTTP proxies get it in `socket` (adopt()).
  RawFd raw;

  /// Gives `raw` to `socket` (registered with the reactor). False (logged) when that failed: the
  /// connection is then closed.
  bool adopt();
};

}  // namespace portico::detail
