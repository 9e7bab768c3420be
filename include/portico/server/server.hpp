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
#include <portico/server/config.hpp>

namespace portico {

/// How a Server runs. to_server_conf() fills it from a ServerConfig; Cli::server_conf() adds
/// the command line's -u and the SIGHUP reload of the -c file.
struct ServerConf {
  /// Worker threads; each runs its own event loop and its own listening socket per address.
  std::size_t threads = 1;
  /// After SIGTERM or SIGQUIT, how long in-flight requests may take before the process exits
  /// anyway (`grace_period_seconds`). The server exits as soon as they are done.
  std::chrono::milliseconds grace_period{30000};
  /// Then, how long background services (health checks, discovery) get to finish before they
  /// are abandoned (`graceful_shutdown_timeout_seconds`).
  std::chrono::milliseconds graceful_shutdown_timeout{5000};
  /// Listen backlog of each listening socket.
  int backlog = 4096;
  /// TCP_DEFER_ACCEPT on each listening socket, in seconds (0: off): the kernel hands a new
  /// connection to a worker only once its first bytes have arrived (HTTP, TLS and PROXY
  /// protocol clients speak first), so a worker accepts and reads it in one wake-up instead of
  /// two; a client that sends nothing is still accepted after about this long. Listening
  /// sockets taken over in an upgrade keep the setting of the process that opened them.
  std::chrono::seconds defer_accept{0};

  /// Graceful upgrade, new process (`-u`): start() takes the listening sockets over from the
  /// running instance through `upgrade_sock` instead of binding them (an address the old process
  /// did not listen on is bound as usual). start() fails when nothing arrives within
  /// `upgrade_retries` seconds.
  bool upgrade = false;
  /// Unix socket of the handover, in both directions (`upgrade_sock`).
  std::string upgrade_sock = "/tmp/portico_upgrade.sock";
  /// Attempts, one second apart, to reach the other process
  /// (`upgrade_sock_connect_accept_max_retries`, default 5 as in Pingora).
  std::size_t upgrade_retries = 5;

  /// run_forever() detaches from the terminal before starting anything (`daemon`, `-d`). See
  /// run_forever() for the handshake with the parent.
  bool daemon = false;
  /// Daemon mode only: written with the daemon's pid (an existing one is renamed
  /// "<pid_file>.old"), removed at exit. Empty: none.
  std::string pid_file;
  /// Daemon mode only: the working directory; empty: "/".
  std::string working_directory;
  /// Daemon mode only: how long the parent waits for the daemon to be ready.
  std::chrono::seconds daemon_ready_timeout{600};
  /// run_forever(): the error log's destination: "" (stderr), "syslog" or a file (appended to;
  /// a daemon's stderr goes there too). SIGUSR1 reopens the file.
  std::string error_log;
  /// start() switches to this user (and its groups) and/or group once the listeners are bound,
  /// before any worker thread starts. Empty: no change.
  std::string user;
  std::string group;

  /// SIGHUP calls it for the new configuration, then reload(). Cli::server_conf() sets it to
  /// re-read the -c file. Unset: SIGHUP re-reads the TLS certificate files only.
  std::function<Result<ServerConfig>()> reload_config;
  /// The configuration this ServerConf was made from (to_server_conf() sets it); reload()
  /// compares the new configuration against it. Null: against ServerConfig{}.
  std::shared_ptr<const ServerConfig> config;
};

/// What Server::reload() did.
struct ReloadOutcome {
  /// Keys that changed and now apply (to new connections, for limits and timeouts).
  std::vector<std::string> applied;
  /// Keys that changed but need a restart (or an upgrade) to apply; the running values stay.
  std::vector<std::string> need_restart;
};

/// Runs services on N shared-nothing worker threads (one io_context each, SO_REUSEPORT
/// listeners) plus a control thread for background services (health checks, discovery).
///
/// Signals (run_forever()): SIGINT exits at once. SIGTERM stops accepting, closes idle
/// keep-alive connections, lets in-flight requests finish (up to `grace_period`), then returns
/// from run_forever(). SIGQUIT hands the listening sockets to a new process started with `-u`
/// (send_listeners()), then drains like SIGTERM; if the handover fails the server keeps serving.
/// SIGHUP reloads the configuration (reload()) and the TLS certificate files. SIGUSR1 reopens
/// the error log file (log rotation). docs/operations.md describes the procedures.
///
/// Graceful upgrade: each worker has its own SO_REUSEPORT socket per address, each with its own
/// accept queue. The old process sends all of them and the new one adopts all of them (a worker
/// may get several; when it has more workers than sockets, workers share one), so no socket is
/// ever closed and no connection waiting in an accept queue is lost. The old process stops
/// accepting only after the new one confirmed it accepts; connections it accepted before are
/// served, idle keep-alive ones closed.
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

  /// Binds every listener (or, with `upgrade`, takes them over from the old process), switches
  /// to `user`/`group`, and starts the workers, then returns. After it, each service's
  /// `local_endpoints()` names the bound addresses.
  Result<void> start();
  /// Takes SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1 for the server, sets the error log
  /// (`error_log`), daemonizes (`daemon`), starts the server (if needed), calls `on_ready`
  /// (e.g. to print or announce the bound addresses; signals are already handled then), and
  /// blocks until a signal or shutdown() ends the server. Returns the process exit status: 0
  /// after a stop, 1 when the server could not start.
  ///
  /// Daemon mode: call it before starting any thread (threads do not survive the fork). The
  /// process that called it waits until the daemon is ready (after `on_ready`, whose stdout
  /// output still reaches the caller's stdout) and exits 0, or exits 1 with the daemon's error
  /// on its stderr (e.g. a port in use), so a script sees a failed start.
  int run_forever(std::function<void()> on_ready = {});
  /// Graceful upgrade, old process: sends every listening socket to the new process listening
  /// on `path` (tried `upgrade_retries` times, a second apart) and waits for its confirmation
  /// that it accepts on them. Success: the caller should now shutdown(true) (run_forever() does
  /// on SIGQUIT). An error (no new process, refused, not confirmed) leaves this server serving
  /// as before. Blocks for seconds: call it from a control thread, not a worker.
  Result<void> send_listeners(const std::string& path);
  /// Applies a new configuration to the running server: the error log (destination and
  /// level), the grace periods, and every HttpProxyService's limits, timeouts and retry policy
  /// (for connections accepted afterwards; requests in flight finish with the old ones); the
  /// TLS certificate files are re-read. Keys that cannot change without a restart (threads,
  /// listeners, backlog, user, pool sizes, TLS settings other than the files' content, ...)
  /// are listed in the outcome and logged; their running values stay. An error (an error log
  /// that cannot be opened, workers too busy to pause) changes nothing. Any thread but a
  /// worker's.
  Result<ReloadOutcome> reload(const ServerConfig& next);
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
