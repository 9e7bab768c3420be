// Server: worker threads, listeners and signals for a set of services.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <portico/core/result.hpp>
#include <portico/proxy/service.hpp>
#include <portico/server/background.hpp>

namespace portico {

struct ServerConf {
  /// Worker threads; each runs its own event loop and its own listening socket per address.
  std::size_t threads = 1;
  /// After SIGTERM, how long in-flight requests may take before the process exits anyway.
  std::chrono::milliseconds grace_period{30000};
  /// Listen backlog of each listening socket.
  int backlog = 4096;
};

/// Runs services on N shared-nothing worker threads (one io_context each, SO_REUSEPORT
/// listeners) plus a control thread for background services (health checks, discovery).
///
/// SIGINT exits at once. SIGTERM stops accepting, closes idle keep-alive connections, lets
/// in-flight requests finish (up to `grace_period`), then returns from run_forever().
class Server {
 public:
  explicit Server(ServerConf conf = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void add_service(std::shared_ptr<Service> s);
  /// Runs `s` on the control thread (one extra thread with its own io_context, started by
  /// start()): health checks, service discovery and other control-plane work, concurrent with
  /// traffic. shutdown() triggers the ShutdownWatch each service got; wait() joins the thread
  /// after the workers, abandoning what is still running then. Services added after start()
  /// begin at once.
  void add_background(std::shared_ptr<BackgroundService> s);

  /// Binds every listener and starts the workers, then returns. After it, each service's
  /// `local_endpoints()` names the bound addresses.
  Result<void> start();
  /// Takes SIGINT/SIGTERM/SIGHUP/SIGQUIT for the server, starts it (if needed), calls
  /// `on_ready` (e.g. to print or announce the bound addresses; signals are already handled
  /// then), and blocks until a signal or shutdown() ends the server. Returns the process exit
  /// status: 0 after a stop, 1 when the server could not start.
  int run_forever(std::function<void()> on_ready = {});
  /// Stops the server from any thread. Graceful: stop accepting, drain in-flight requests up to
  /// the grace period. Not graceful: close everything now. Returns without waiting; see wait().
  void shutdown(bool graceful = true);
  /// Blocks until every worker has stopped.
  void wait();
  /// Connections currently open on all workers.
  std::size_t active_connections() const;
  /// Blocks until no connection is open on any worker, or `timeout` passes; true when idle.
  bool wait_idle(std::chrono::milliseconds timeout) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace portico
