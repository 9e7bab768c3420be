// Background services: long-running control-plane tasks (health checks, service discovery) that a
// Server runs on its control thread, or that an application co_spawns on its own io_context.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include <boost/asio/any_io_executor.hpp>

#include <portico/core/task.hpp>

namespace portico {

/// Tells a background service that the server is shutting down, and lets it sleep until then.
/// Copies share one state. Use it from coroutines running on the executor it was made for (a
/// single-threaded io_context or a strand); trigger() may be called from any thread.
class ShutdownWatch {
 public:
  explicit ShutdownWatch(boost::asio::any_io_executor ex);

  /// True once trigger() was called.
  bool stopped() const noexcept;
  /// Waits for `d`, or less when shutdown begins. True when the whole time passed, false when
  /// shutdown began (at once if it already had).
  task<bool> sleep_for(std::chrono::steady_clock::duration d) const;
  task<bool> sleep_until(std::chrono::steady_clock::time_point t) const;
  /// Runs `op` to completion, except that once shutdown begins the asynchronous operation `op`
  /// is waiting for is cancelled (terminal cancellation: a connect, read or timer wait ends with
  /// `operation_aborted`, and a later co_await on an I/O object throws it). For work that can
  /// take long (connects, DNS queries), so that shutdown is prompt. Exceptions from `op`
  /// propagate. Runs nothing when shutdown already began.
  task<void> cancel_on_shutdown(task<void> op) const;
  /// Begins shutdown: wakes every sleeper. Idempotent; any thread.
  void trigger() const;

  struct State;

 private:
  std::shared_ptr<State> s_;
};

/// A control-plane task. `start` runs until `shutdown` triggers, then returns promptly (sleep with
/// `shutdown.sleep_for`, which returns false on shutdown). A Server runs every service added
/// with Server::add_background on its control thread, started by Server::start() and stopped on
/// shutdown; when embedding, co_spawn `start(watch)` on your own io_context and call
/// `watch.trigger()` to stop it.
///
/// GCC 12 note: inside `start`, write `bool more = co_await shutdown.sleep_for(d); if (!more)
/// break;` rather than `while (co_await shutdown.sleep_for(d))`. GCC 12 reads a by-value
/// coroutine parameter from the caller's (dead) copy when a co_await on it sits in an if/while
/// condition.
class BackgroundService {
 public:
  virtual ~BackgroundService() = default;
  /// A short name for logs.
  virtual std::string_view name() const noexcept { return "background service"; }
  virtual task<void> start(ShutdownWatch shutdown) = 0;
};

}  // namespace portico
