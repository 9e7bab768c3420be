// ServerConfig: a server process's YAML configuration, with Pingora's keys and portico's own.
// The reference of every key is docs/configuration.md. yaml-cpp stays out of this header.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <portico/core/result.hpp>
#include <portico/proxy/peer.hpp>
#include <portico/server/options.hpp>
#include <portico/tls/tls_settings.hpp>

namespace portico {

struct ServerConf;
class Service;
class HttpProxyService;

/// Severity threshold of the error log.
enum class LogLevel : std::uint8_t { Trace, Debug, Info, Warn, Error, Critical, Off };

/// "trace", "debug", "info", "warn", "error", "critical" or "off".
std::string_view to_string(LogLevel l) noexcept;

/// One entry of `listeners:`.
struct ListenerConfig {
  /// "127.0.0.1:6188", "[::]:443" (port 0: any free port) or "unix:/run/portico.sock".
  std::string address;
  /// Set when the entry has a `tls:` block: the listener speaks TLS with these settings.
  std::optional<TlsSettings> tls;
  /// Cleartext HTTP/2 with prior knowledge next to HTTP/1.1 (ListenerOptions::h2c).
  bool h2c = false;
  /// Expect a PROXY protocol header (v1 or v2) before the client's bytes (ListenerOptions).
  bool proxy_protocol = false;
  /// Where the entry was written, "conf.yaml:12:5", for messages; not part of the value.
  std::string origin;
};

/// The `access_log:` block: where and how configure_service() makes the service write its
/// access log (include/portico/observe/access_log.hpp, docs/observability.md).
struct AccessLogConfig {
  /// File the access log is appended to; empty: no access log.
  std::string path;
  /// Line format; empty: the default format.
  std::string format;
};

/// A server process's configuration. Default-constructed, it is what a missing key means, so
/// a binary started without `-c` runs with `ServerConfig{}`. Fields marked "no effect yet" are
/// Pingora keys that portico reads, validates and keeps, but does not act on yet; Cli warns
/// when one of them is set to something other than its default (see ineffective_keys()).
struct ServerConfig {
  using seconds = std::chrono::seconds;

  // ----- Pingora's keys (docs/configuration.md keeps their names and meaning) -----

  /// Format version; portico reads version 1 (what Pingora writes).
  std::uint32_t version = 1;
  /// Detach from the terminal (double fork, setsid, pid file); `-d` sets it. The starting
  /// command returns once the daemon listens, or fails with the daemon's error.
  bool daemon = false;
  /// Error log: a file, "syslog", or empty for stderr. SIGUSR1 reopens the file.
  std::string error_log;
  /// Written by a daemon (an existing file is renamed `<pid_file>.old`), removed at exit.
  std::string pid_file = "/tmp/portico.pid";
  /// Unix socket the listening sockets are handed over on during an upgrade (SIGQUIT, `-u`).
  std::string upgrade_sock = "/tmp/portico_upgrade.sock";
  /// Privileges dropped to after binding, and a daemon's working directory.
  std::string user;
  std::string group;
  std::string working_directory;
  /// Worker threads (ServerConf::threads).
  std::size_t threads = 1;
  /// No effect yet: every worker runs one accept loop per listening socket.
  std::size_t listener_tasks_per_fd = 1;
  /// No effect: portico's workers share nothing, as Pingora's do with `work_stealing: false`.
  bool work_stealing = true;
  /// CA bundle for upstream certificates; empty: the system store. Applied by
  /// default_peer_options().
  std::string ca_file;
  /// s2n-tls only in Pingora. Accepted for compatibility, no effect.
  std::optional<std::size_t> s2n_config_cache_size;
  /// `grace_period_seconds`: after SIGTERM, how long in-flight requests may take
  /// (ServerConf::grace_period). portico exits as soon as they are done; Pingora always sleeps
  /// the whole period (default 300 s).
  seconds grace_period{30};
  /// `graceful_shutdown_timeout_seconds`: how long background services (health checks,
  /// discovery) get to finish at exit.
  seconds graceful_shutdown_timeout{5};
  /// Local addresses to connect to upstreams from. No effect yet.
  std::vector<std::string> client_bind_to_ipv4;
  std::vector<std::string> client_bind_to_ipv6;
  /// No effect (portico connects on the worker that needs the connection).
  std::optional<std::size_t> upstream_connect_offload_threadpools;
  std::optional<std::size_t> upstream_connect_offload_thread_per_pool;
  /// Log upstream TLS keys (SSLKEYLOGFILE). No effect yet.
  bool upstream_debug_ssl_keylog = false;
  /// Connection attempts (one per second) of an upgrade's handover; default 5.
  std::optional<std::size_t> upgrade_sock_connect_accept_max_retries;
  /// Tokio settings in Pingora. Accepted for compatibility, no effect.
  std::optional<std::size_t> max_blocking_threads;
  std::optional<seconds> blocking_threads_ttl;
  /// Daemon readiness: the starting command always waits for the daemon to listen (up to
  /// daemon_ready_timeout); the other two keys have no effect.
  bool daemon_wait_for_ready = false;
  seconds daemon_ready_timeout{600};
  seconds daemon_notify_timeout{60};
  // Pingora's `max_retries` and `upstream_keepalive_pool_size` are `http.max_retries` and
  // `http.pool_max_idle_per_key`.

  // ----- portico's keys -----

  /// Listen backlog of every listening socket (ServerConf::backlog).
  int backlog = 4096;
  /// `defer_accept_seconds`: TCP_DEFER_ACCEPT on every listening socket (ServerConf::
  /// defer_accept); 0, the default, leaves it off.
  seconds defer_accept{0};
  /// Error log threshold; apply_logging() sets it.
  LogLevel log_level = LogLevel::Info;
  AccessLogConfig access_log;
  /// Listening addresses; add_listeners() adds them to a service. Empty: the binary chooses.
  std::vector<ListenerConfig> listeners;
  /// `limits:`, `timeouts:`, `max_retries`, `upstream_keepalive_pool_size`,
  /// `allow_connect_method` and `pool_cross_worker`.
  HttpServerOptions http;

  /// The name the configuration was loaded from, for messages; not part of the value.
  std::string source;
};

/// Reads and validates a YAML file. On failure the error's context() is the message, one
/// problem per line in file order, each "FILE:LINE:COLUMN: what", e.g.
/// "conf.yaml:7:1: unknown key 'thraeds' (did you mean 'threads'?)". Never throws.
Result<ServerConfig> load_config_file(const std::string& path);
/// The same from text; `name` stands for the file in messages.
Result<ServerConfig> load_config_string(std::string_view yaml, std::string_view name = "<string>");

/// What -t checks beyond the loader: every TLS listener's certificates load and match their
/// keys, its client CA file is readable, and every listener address can be served (Unix
/// listening sockets cannot yet). The error names the listener ("conf.yaml:12:5: ...").
Result<void> verify_config(const ServerConfig& cfg);

/// threads, grace period and backlog, for `Server`.
ServerConf to_server_conf(const ServerConfig& cfg);
/// The limits, timeouts and retry policy, for `http_proxy_service()`.
HttpServerOptions to_http_server_options(const ServerConfig& cfg);
/// PeerOptions with the process-wide upstream settings applied (`ca_file`); a binary builds
/// its peers from them.
PeerOptions default_peer_options(const ServerConfig& cfg);
/// Adds every listener to `svc`, in order: add_tls() for the ones with TLS, add_tcp() for the
/// others. Stops at the first error, which names the listener.
Result<void> add_listeners(Service& svc, const ServerConfig& cfg);
/// add_listeners(), then the access log of `access_log:` (when a path is set) for `svc`. The
/// error names the listener or the access log file.
Result<void> configure_service(HttpProxyService& svc, const ServerConfig& cfg);
/// Sets the error log's level from `log_level`.
void apply_logging(const ServerConfig& cfg);

/// One key of a configuration with its value as text, e.g. {"timeouts.header_read_ms",
/// "60000"}. Listener keys are numbered: "listeners[0].tls.client_auth".
struct ConfigEntry {
  std::string key;
  std::string value;
  /// The value equals the key's default.
  bool is_default = true;
  /// A running server may take a new value without a restart (a later SIGHUP reload).
  bool reloadable = false;
  /// portico acts on the key; false for keys that are accepted with no effect yet.
  bool effective = true;
};

/// Every key of `cfg`, in the order of docs/configuration.md. A TLS listener lists its TLS keys;
/// a plain one does not.
std::vector<ConfigEntry> config_entries(const ServerConfig& cfg);
/// Keys whose value differs between two configurations (a key present in one only counts).
std::vector<std::string> changed_keys(const ServerConfig& before, const ServerConfig& after);
/// The changed keys a running server cannot take without a restart: a reload that changes one
/// of them should be refused or need a restart.
std::vector<std::string> non_reloadable_changes(const ServerConfig& before,
                                                const ServerConfig& after);
/// Keys set to something other than their default that have no effect yet.
std::vector<std::string> ineffective_keys(const ServerConfig& cfg);

}  // namespace portico
