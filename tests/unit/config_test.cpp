// ServerConfig from YAML: every key, the defaults, each kind of problem with its position,
// conversions to ServerConf / HttpServerOptions / TlsSettings, and the reload diff.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <portico/proxy/service.hpp>
#include <portico/server/config.hpp>
#include <portico/server/server.hpp>
#include <portico/testing/tls.hpp>

namespace {

using namespace portico;
using namespace std::chrono_literals;

/// The loader's message for `yaml` named "conf.yaml", or "loaded" when it loads.
std::string problem(std::string_view yaml) {
  auto c = load_config_string(yaml, "conf.yaml");
  return c ? std::string("loaded") : std::string(c.error().context());
}

ServerConfig load(std::string_view yaml) {
  auto c = load_config_string(yaml, "conf.yaml");
  EXPECT_TRUE(c) << c.error().context();
  return c ? *c : ServerConfig{};
}

bool contains(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// Every key set to something other than its default.
constexpr std::string_view kEveryKey = R"(version: 1
daemon: true
error_log: /var/log/portico/error.log
pid_file: /run/portico.pid
upgrade_sock: /run/portico_upgrade.sock
user: nobody
group: nogroup
working_directory: /srv
threads: 8
listener_tasks_per_fd: 2
work_stealing: false
ca_file: /etc/ssl/upstream-ca.pem
s2n_config_cache_size: 20
grace_period_seconds: 120
graceful_shutdown_timeout_seconds: 10
client_bind_to_ipv4: [10.0.0.1, 10.0.0.2]
client_bind_to_ipv6: ["2001:db8::1"]
upstream_keepalive_pool_size: 64
upstream_connect_offload_threadpools: 2
upstream_connect_offload_thread_per_pool: 4
upstream_debug_ssl_keylog: true
max_retries: 5
upgrade_sock_connect_accept_max_retries: 7
max_blocking_threads: 32
blocking_threads_ttl_seconds: 15
daemon_wait_for_ready: true
daemon_ready_timeout_seconds: 300
daemon_notify_timeout_seconds: 30
backlog: 1024
defer_accept_seconds: 1
log_level: debug
access_log:
  path: /var/log/portico/access.log
  format: "$remote_addr $status"
allow_connect_method: true
pool_cross_worker: false
batch_upstream_sends: false
batch_response_sends: false
limits:
  max_header_bytes: 32768
  max_header_count: 64
  max_request_target_bytes: 4096
  max_response_header_bytes: 16384
  max_response_header_count: 50
  body_buffer_bytes: 16384
  splice_min_body_bytes: 0
  retry_buffer_bytes: 0
  keepalive_request_limit: 1000
  upstream_request_limit: 500
  pool_max_idle_total: 100
timeouts:
  header_read_ms: 1000
  keepalive_ms: 2000
  keepalive_park_ms: 0
  body_read_ms: 3000
  write_ms: 4000
  request_ms: 5000
  tunnel_idle_ms: 6000
  pool_steal_ms: 0
listeners:
  - address: "127.0.0.1:6188"
    h2c: true
    proxy_protocol: true
  - address: "[::1]:6443"
    tls:
      certificates:
        - cert_file: a.pem
          key_file: a.key
        - {cert_file: b.pem, key_file: b.key}
      ca_file: clients.pem
      client_auth: required
      min_version: 1.3
      max_version: TLSv1.3
      alpn: [h2, http/1.1]
      ciphers: ECDHE-RSA-AES128-GCM-SHA256
      ciphersuites: TLS_AES_128_GCM_SHA256
      session_tickets: false
      ticket_key_rotation_ms: 60000
      session_cache_size: 0
      session_lifetime_ms: 1000
      handshake_timeout_ms: 2500
)";

TEST(ConfigTest, EveryKeyIsParsed) {
  const ServerConfig c = load(kEveryKey);
  EXPECT_EQ(c.source, "conf.yaml");
  EXPECT_EQ(c.version, 1u);
  EXPECT_TRUE(c.daemon);
  EXPECT_EQ(c.error_log, "/var/log/portico/error.log");
  EXPECT_EQ(c.pid_file, "/run/portico.pid");
  EXPECT_EQ(c.upgrade_sock, "/run/portico_upgrade.sock");
  EXPECT_EQ(c.user, "nobody");
  EXPECT_EQ(c.group, "nogroup");
  EXPECT_EQ(c.working_directory, "/srv");
  EXPECT_EQ(c.threads, 8u);
  EXPECT_EQ(c.listener_tasks_per_fd, 2u);
  EXPECT_FALSE(c.work_stealing);
  EXPECT_EQ(c.ca_file, "/etc/ssl/upstream-ca.pem");
  EXPECT_EQ(c.s2n_config_cache_size, 20u);
  EXPECT_EQ(c.grace_period, 120s);
  EXPECT_EQ(c.graceful_shutdown_timeout, 10s);
  EXPECT_EQ(c.client_bind_to_ipv4, (std::vector<std::string>{"10.0.0.1", "10.0.0.2"}));
  EXPECT_EQ(c.client_bind_to_ipv6, (std::vector<std::string>{"2001:db8::1"}));
  EXPECT_EQ(c.http.pool_max_idle_per_key, 64u);
  EXPECT_EQ(c.upstream_connect_offload_threadpools, 2u);
  EXPECT_EQ(c.upstream_connect_offload_thread_per_pool, 4u);
  EXPECT_TRUE(c.upstream_debug_ssl_keylog);
  EXPECT_EQ(c.http.max_retries, 5u);
  EXPECT_EQ(c.upgrade_sock_connect_accept_max_retries, 7u);
  EXPECT_EQ(c.max_blocking_threads, 32u);
  EXPECT_EQ(c.blocking_threads_ttl, 15s);
  EXPECT_TRUE(c.daemon_wait_for_ready);
  EXPECT_EQ(c.daemon_ready_timeout, 300s);
  EXPECT_EQ(c.daemon_notify_timeout, 30s);
  EXPECT_EQ(c.backlog, 1024);
  EXPECT_EQ(c.defer_accept, 1s);
  EXPECT_EQ(c.log_level, LogLevel::Debug);
  EXPECT_EQ(c.access_log.path, "/var/log/portico/access.log");
  EXPECT_EQ(c.access_log.format, "$remote_addr $status");
  EXPECT_TRUE(c.http.allow_connect_method);
  EXPECT_FALSE(c.http.pool_cross_worker);
  EXPECT_FALSE(c.http.batch_upstream_sends);
  EXPECT_FALSE(c.http.batch_response_sends);

  const HttpServerOptions& h = c.http;
  EXPECT_EQ(h.max_header_bytes, 32768u);
  EXPECT_EQ(h.max_header_count, 64u);
  EXPECT_EQ(h.max_request_target_bytes, 4096u);
  EXPECT_EQ(h.max_response_header_bytes, 16384u);
  EXPECT_EQ(h.max_response_header_count, 50u);
  EXPECT_EQ(h.body_buffer_bytes, 16384u);
  EXPECT_EQ(h.splice_min_body_bytes, 0u);
  EXPECT_EQ(h.retry_buffer_bytes, 0u);
  EXPECT_EQ(h.keepalive_request_limit, 1000u);
  EXPECT_EQ(h.upstream_request_limit, 500u);
  EXPECT_EQ(h.pool_max_idle_total, 100u);
  EXPECT_EQ(h.header_read_timeout, 1000ms);
  EXPECT_EQ(h.keepalive_park_after, 0ms);
  EXPECT_EQ(h.keepalive_timeout, 2000ms);
  EXPECT_EQ(h.body_read_timeout, 3000ms);
  EXPECT_EQ(h.write_timeout, 4000ms);
  EXPECT_EQ(h.request_timeout, 5000ms);
  EXPECT_EQ(h.tunnel_idle_timeout, 6000ms);
  EXPECT_EQ(h.pool_steal_timeout, 0ms);

  ASSERT_EQ(c.listeners.size(), 2u);
  const ListenerConfig& plain = c.listeners[0];
  EXPECT_EQ(plain.address, "127.0.0.1:6188");
  EXPECT_TRUE(plain.h2c);
  EXPECT_TRUE(plain.proxy_protocol);
  EXPECT_FALSE(plain.tls);
  EXPECT_EQ(plain.origin, "conf.yaml:61:5");
  const ListenerConfig& secure = c.listeners[1];
  EXPECT_EQ(secure.address, "[::1]:6443");
  EXPECT_FALSE(secure.h2c);
  ASSERT_TRUE(secure.tls);
  const TlsSettings& t = *secure.tls;
  ASSERT_EQ(t.certificates.size(), 2u);
  EXPECT_EQ(t.certificates[0].cert_file, "a.pem");
  EXPECT_EQ(t.certificates[0].key_file, "a.key");
  EXPECT_EQ(t.certificates[1].cert_file, "b.pem");
  EXPECT_EQ(t.certificates[1].key_file, "b.key");
  EXPECT_EQ(t.client_ca_file, "clients.pem");
  EXPECT_EQ(t.client_auth, ClientAuth::Required);
  EXPECT_EQ(t.min_version, TlsVersion::Tls13);
  EXPECT_EQ(t.max_version, TlsVersion::Tls13);
  EXPECT_EQ(t.alpn, (std::vector<std::string>{"h2", "http/1.1"}));
  EXPECT_EQ(t.ciphers, "ECDHE-RSA-AES128-GCM-SHA256");
  EXPECT_EQ(t.ciphersuites, "TLS_AES_128_GCM_SHA256");
  EXPECT_FALSE(t.session_tickets);
  EXPECT_EQ(t.ticket_key_rotation, 60000ms);
  EXPECT_EQ(t.session_cache_size, 0u);
  EXPECT_EQ(t.session_lifetime, 1000ms);
  EXPECT_EQ(t.handshake_timeout, 2500ms);

  // The key table covers the same keys: all but these differ from their defaults here (version
  // has one valid value; min_version 1.3 needs max_version 1.3, the default; h2c is refused on
  // TLS listeners).
  std::vector<std::string> at_default;
  for (const auto& e : config_entries(c))
    if (e.is_default) at_default.push_back(e.key);
  EXPECT_EQ(at_default, (std::vector<std::string>{"version", "listeners[0].tls", "listeners[1].h2c",
                                                  "listeners[1].proxy_protocol",
                                                  "listeners[1].tls.max_version",
                                                  "listeners[1].tls.alpn"}));
}

TEST(ConfigTest, MissingKeysTakeDefaults) {
  for (std::string_view yaml : {"", "# nothing\n", "version: 1\n", "---\n"}) {
    const ServerConfig c = load(yaml);
    const ServerConfig d;
    EXPECT_EQ(c.version, 1u);
    EXPECT_FALSE(c.daemon);
    EXPECT_EQ(c.pid_file, "/tmp/portico.pid");
    EXPECT_EQ(c.upgrade_sock, "/tmp/portico_upgrade.sock");
    EXPECT_EQ(c.threads, 1u);
    EXPECT_EQ(c.grace_period, 30s);
    EXPECT_EQ(c.http.max_retries, 3u);
    EXPECT_EQ(c.http.pool_max_idle_per_key, 128u);
    EXPECT_EQ(c.http.header_read_timeout, 60000ms);
    EXPECT_EQ(c.backlog, 4096);
    EXPECT_EQ(c.defer_accept, 0s);
    EXPECT_EQ(c.log_level, LogLevel::Info);
    EXPECT_TRUE(c.listeners.empty());
    EXPECT_TRUE(changed_keys(d, c).empty()) << yaml;
    for (const auto& e : config_entries(c)) EXPECT_TRUE(e.is_default) << e.key;
  }
  // A partial section keeps the defaults of the keys it does not name.
  const ServerConfig c = load("timeouts:\n  header_read_ms: 5\n");
  EXPECT_EQ(c.http.header_read_timeout, 5ms);
  EXPECT_EQ(c.http.keepalive_timeout, 60000ms);
  EXPECT_EQ(changed_keys(ServerConfig{}, c), std::vector<std::string>{"timeouts.header_read_ms"});
}

TEST(ConfigTest, PingoraOptionalKeysTakeNull) {
  const ServerConfig c = load(
      "error_log:\nuser: ~\nca_file: null\ns2n_config_cache_size:\n"
      "max_blocking_threads: ~\nblocking_threads_ttl_seconds:\n");
  EXPECT_TRUE(c.error_log.empty());
  EXPECT_TRUE(c.user.empty());
  EXPECT_FALSE(c.s2n_config_cache_size);
  EXPECT_FALSE(c.max_blocking_threads);
  EXPECT_FALSE(c.blocking_threads_ttl);
}

TEST(ConfigTest, UnknownKeyNamesKeyLineAndSuggestion) {
  EXPECT_EQ(problem("version: 1\n# workers\nthraeds: 4\n"),
            "conf.yaml:3:1: unknown key 'thraeds' (did you mean 'threads'?)");
  EXPECT_EQ(problem("timeouts:\n  header_reed_ms: 5\n"),
            "conf.yaml:2:3: unknown key 'timeouts.header_reed_ms' (did you mean "
            "'timeouts.header_read_ms'?)");
  EXPECT_EQ(
      problem("listeners:\n  - adress: 127.0.0.1:80\n    address: 127.0.0.1:81\n"),
      "conf.yaml:2:5: unknown key 'listeners[0].adress' (did you mean 'listeners[0].address'?)");
  EXPECT_EQ(problem("Threads: 2\n"),
            "conf.yaml:1:1: unknown key 'Threads' (did you mean 'threads'?)");
  // Nothing close: no suggestion.
  EXPECT_EQ(problem("frobnicate: true\n"), "conf.yaml:1:1: unknown key 'frobnicate'");
}

TEST(ConfigTest, DuplicateKeyIsAnError) {
  EXPECT_EQ(problem("threads: 2\ndaemon: false\nthreads: 4\n"),
            "conf.yaml:3:1: duplicate key 'threads' (first at line 1)");
  EXPECT_EQ(problem("limits:\n  max_header_count: 1\n  max_header_count: 2\n"),
            "conf.yaml:3:3: duplicate key 'limits.max_header_count' (first at line 2)");
}

TEST(ConfigTest, BadTypesNameKeyValueAndPosition) {
  EXPECT_EQ(problem("version: 1\nthreads: two\n"),
            "conf.yaml:2:10: 'threads' must be a positive integer, got \"two\"");
  EXPECT_EQ(problem("threads: 0\n"),
            "conf.yaml:1:10: 'threads' must be a positive integer, got \"0\"");
  EXPECT_EQ(problem("threads: -3\n"),
            "conf.yaml:1:10: 'threads' must be a positive integer, got \"-3\"");
  EXPECT_EQ(problem("threads: 1.5\n"),
            "conf.yaml:1:10: 'threads' must be a positive integer, got \"1.5\"");
  EXPECT_EQ(problem("threads: 5000\n"),
            "conf.yaml:1:10: 'threads' must be at most 1024, got \"5000\"");
  EXPECT_EQ(problem("threads: [1]\n"),
            "conf.yaml:1:10: 'threads' must be a positive integer, got a list");
  EXPECT_EQ(problem("threads:\n"),
            "conf.yaml:1:1: 'threads' must be a positive integer, got nothing");
  EXPECT_EQ(problem("daemon: yes\n"), "conf.yaml:1:9: 'daemon' must be true or false, got \"yes\"");
  EXPECT_EQ(problem("pid_file: \"\"\n"),
            "conf.yaml:1:11: 'pid_file' must be a non-empty string, got \"\"");
  EXPECT_EQ(problem("user: {a: 1}\n"), "conf.yaml:1:7: 'user' must be a string, got a mapping");
  EXPECT_EQ(
      problem("log_level: verbose\n"),
      "conf.yaml:1:12: 'log_level' must be one of trace, debug, info, warn, error, critical, off, "
      "got \"verbose\"");
  EXPECT_EQ(problem("version: 2\n"),
            "conf.yaml:1:10: 'version' must be 1 (the format portico reads), got \"2\"");
  EXPECT_EQ(problem("limits: 5\n"), "conf.yaml:1:9: 'limits' must be a mapping, got \"5\"");
  EXPECT_EQ(problem("max_retries: 99999999999\n"),
            "conf.yaml:1:14: 'max_retries' must be at most 4294967295, got \"99999999999\"");
  EXPECT_EQ(problem("client_bind_to_ipv4: [10.0.0.1, \"::1\"]\n"),
            "conf.yaml:1:33: 'client_bind_to_ipv4[1]' must be an IPv4 address, got \"::1\"");
  EXPECT_EQ(problem("max_blocking_threads: 0\n"),
            "conf.yaml:1:23: 'max_blocking_threads' must be a positive integer, got \"0\"");
  EXPECT_EQ(problem("upstream_connect_offload_threadpools: 2\n"),
            "conf.yaml:1:1: 'upstream_connect_offload_threadpools' needs "
            "'upstream_connect_offload_thread_per_pool' too");
  EXPECT_EQ(problem("- threads\n"),
            "conf.yaml:1:1: the configuration must be a mapping of keys to values, got a list");
}

TEST(ConfigTest, TimeoutsArePositiveAndBounded) {
  EXPECT_EQ(problem("timeouts:\n  keepalive_ms: 0\n"),
            "conf.yaml:2:17: 'timeouts.keepalive_ms' must be a positive integer, got \"0\"");
  EXPECT_EQ(problem("timeouts:\n  write_ms: 86400001\n"),
            "conf.yaml:2:13: 'timeouts.write_ms' must be at most 86400000, got \"86400001\"");
  EXPECT_EQ(problem("timeouts:\n  write_ms: 86400000\n"), "loaded");
  // 0 means "none" for the whole-request deadline and "do not wait" for the pool hand-over.
  const ServerConfig c = load("timeouts:\n  request_ms: 0\n  pool_steal_ms: 0\n");
  EXPECT_EQ(c.http.request_timeout, 0ms);
  EXPECT_EQ(c.http.pool_steal_timeout, 0ms);
  EXPECT_EQ(problem("limits:\n  max_header_bytes: 0\n"),
            "conf.yaml:2:21: 'limits.max_header_bytes' must be a positive integer, got \"0\"");
  EXPECT_EQ(problem("grace_period_seconds: 0\n"), "loaded");
}

TEST(ConfigTest, EveryProblemIsReportedInFileOrder) {
  EXPECT_EQ(problem("daemon: maybe\nthraeds: 2\nlimits:\n  max_header_count: x\n"),
            "conf.yaml:1:9: 'daemon' must be true or false, got \"maybe\"\n"
            "conf.yaml:2:1: unknown key 'thraeds' (did you mean 'threads'?)\n"
            "conf.yaml:4:21: 'limits.max_header_count' must be a positive integer, got \"x\"");
}

TEST(ConfigTest, SyntaxErrorsCarryThePosition) {
  const std::string p = problem("threads: 2\nlisteners: [ {address: x\n");
  EXPECT_EQ(p.rfind("conf.yaml:", 0), 0u) << p;
  EXPECT_NE(p.find("flow"), std::string::npos) << p;
  EXPECT_EQ(problem("threads: 2\n---\nthreads: 3\n"),
            "conf.yaml:3:1: only one YAML document is allowed");
}

TEST(ConfigTest, ListenerAddresses) {
  const ServerConfig c = load(
      "listeners:\n  - address: 127.0.0.1:0\n  - address: 127.0.0.1:0\n"
      "  - address: unix:/run/p.sock\n");
  ASSERT_EQ(c.listeners.size(), 3u);
  EXPECT_EQ(c.listeners[2].address, "unix:/run/p.sock");
  EXPECT_EQ(
      problem("listeners:\n  - address: localhost:80\n"),
      "conf.yaml:2:14: 'listeners[0].address' must be an IP:port address (\"127.0.0.1:6188\", "
      "\"[::1]:6188\") or \"unix:/path\", got \"localhost:80\"");
  EXPECT_EQ(
      problem("listeners:\n  - address: 127.0.0.1:70000\n"),
      "conf.yaml:2:14: 'listeners[0].address' must be a port in 0..65535, got \"127.0.0.1:70000\"");
  EXPECT_EQ(problem("listeners:\n  - h2c: true\n"),
            "conf.yaml:2:5: 'listeners[0].address' is required");
  EXPECT_EQ(
      problem("listeners:\n  - address: 127.0.0.1:80\n  - address: 127.0.0.1:80\n"),
      "conf.yaml:3:14: 'listeners[1].address' \"127.0.0.1:80\" is already used by 'listeners[0]'");
  EXPECT_EQ(problem("listeners: 127.0.0.1:80\n"),
            "conf.yaml:1:12: 'listeners' must be a list of listeners, got \"127.0.0.1:80\"");
  EXPECT_EQ(
      problem("listeners:\n  - 127.0.0.1:80\n"),
      "conf.yaml:2:5: 'listeners[0]' must be a mapping with an 'address', got \"127.0.0.1:80\"");
}

TEST(ConfigTest, TlsListeners) {
  // The shorthand for one certificate.
  const ServerConfig c = load(
      "listeners:\n  - address: 127.0.0.1:443\n    tls:\n"
      "      cert_file: c.pem\n      key_file: k.pem\n");
  ASSERT_TRUE(c.listeners.at(0).tls);
  ASSERT_EQ(c.listeners[0].tls->certificates.size(), 1u);
  EXPECT_EQ(c.listeners[0].tls->certificates[0].key_file, "k.pem");
  EXPECT_EQ(c.listeners[0].tls->client_auth, ClientAuth::None);
  EXPECT_EQ(c.listeners[0].tls->alpn, (std::vector<std::string>{"h2", "http/1.1"}));

  EXPECT_EQ(problem("listeners:\n  - address: 127.0.0.1:443\n    tls:\n      cert_file: c.pem\n"),
            "conf.yaml:4:7: 'listeners[0].tls.key_file' is required");
  EXPECT_EQ(
      problem(
          "listeners:\n  - address: 127.0.0.1:443\n    tls:\n      certificates:\n"
          "        - cert_file: a.pem\n          key_file: a.key\n        - cert_file: b.pem\n"),
      "conf.yaml:7:11: 'listeners[0].tls.certificates[1].key_file' is required");
  EXPECT_EQ(problem("listeners:\n  - address: 127.0.0.1:443\n    tls:\n      alpn: [h2]\n"),
            "conf.yaml:3:5: 'listeners[0].tls' needs a certificate: 'cert_file' and 'key_file', or "
            "'certificates'");
  EXPECT_EQ(
      problem("listeners:\n  - address: 127.0.0.1:443\n    tls:\n      cert_file: c.pem\n"
              "      key_file: k.pem\n      client_auth: required\n"),
      "conf.yaml:6:20: 'listeners[0].tls.client_auth: required' needs 'listeners[0].tls.ca_file', "
      "the CA client certificates must chain to");
  EXPECT_EQ(
      problem("listeners:\n  - address: 127.0.0.1:443\n    tls:\n      cert_file: c.pem\n"
              "      key_file: k.pem\n      client_auth: sometimes\n"),
      "conf.yaml:6:20: 'listeners[0].tls.client_auth' must be one of none, optional, required, "
      "got \"sometimes\"");
  EXPECT_EQ(
      problem("listeners:\n  - address: 127.0.0.1:443\n    tls:\n      cert_file: c.pem\n"
              "      key_file: k.pem\n      min_version: 1.3\n      max_version: 1.2\n"),
      "conf.yaml:6:20: 'listeners[0].tls.min_version' is above 'listeners[0].tls.max_version'");
  EXPECT_EQ(
      problem("listeners:\n  - address: 127.0.0.1:443\n    tls:\n      cert_file: c.pem\n"
              "      key_file: k.pem\n      min_version: 1.1\n"),
      "conf.yaml:6:20: 'listeners[0].tls.min_version' must be one of 1.2, 1.3, TLSv1.2, TLSv1.3, "
      "got \"1.1\"");
  EXPECT_EQ(
      problem("listeners:\n  - address: 127.0.0.1:443\n    h2c: true\n    tls:\n"
              "      cert_file: c.pem\n      key_file: k.pem\n"),
      "conf.yaml:2:5: 'listeners[0].h2c' is for cleartext listeners; a TLS listener offers h2 "
      "with 'tls.alpn'");
  EXPECT_EQ(
      problem("listeners:\n  - address: 127.0.0.1:443\n    tls:\n      cert_file: c.pem\n"
              "      key_file: k.pem\n      certificates: []\n"),
      "conf.yaml:4:7: 'listeners[0].tls.cert_file' and 'listeners[0].tls.certificates' cannot both "
      "be set: list every pair under 'certificates'");
  EXPECT_EQ(
      problem("listeners:\n  - address: 127.0.0.1:443\n    tls:\n      cert_file: c.pem\n"
              "      key_file: k.pem\n      alpn: []\n"),
      "conf.yaml:6:13: 'listeners[0].tls.alpn' must be a non-empty list of protocol names, got an "
      "empty list");
}

TEST(ConfigTest, LoadsFilesAndNamesThemInMessages) {
  const std::string path = ::testing::TempDir() + "portico_config_test.yaml";
  {
    std::ofstream f(path);
    f << "threads: 3\nthraeds: 4\n";
  }
  auto bad = load_config_file(path);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().context(), path + ":2:1: unknown key 'thraeds' (did you mean 'threads'?)");
  {
    std::ofstream f(path);
    f << "threads: 3\n";
  }
  auto good = load_config_file(path);
  ASSERT_TRUE(good) << good.error().context();
  EXPECT_EQ(good->threads, 3u);
  EXPECT_EQ(good->source, path);
  std::remove(path.c_str());

  auto missing = load_config_file("/nonexistent/portico.yaml");
  ASSERT_FALSE(missing);
  EXPECT_EQ(
      missing.error().context(),
      "cannot read configuration file '/nonexistent/portico.yaml': No such file or directory");
}

TEST(ConfigTest, Conversions) {
  const ServerConfig c = load(kEveryKey);
  const ServerConf sc = to_server_conf(c);
  EXPECT_EQ(sc.threads, 8u);
  EXPECT_EQ(sc.grace_period, 120000ms);
  EXPECT_EQ(sc.backlog, 1024);
  const HttpServerOptions o = to_http_server_options(c);
  EXPECT_EQ(o.max_retries, 5u);
  EXPECT_EQ(o.pool_max_idle_per_key, 64u);
  EXPECT_EQ(o.header_read_timeout, 1000ms);
  EXPECT_EQ(default_peer_options(c).ca_file, "/etc/ssl/upstream-ca.pem");
  EXPECT_TRUE(default_peer_options(ServerConfig{}).ca_file.empty());
  // defer_accept_seconds: 0 (off) to an hour.
  EXPECT_EQ(to_server_conf(load("defer_accept_seconds: 2\n")).defer_accept, 2s);
  EXPECT_EQ(to_server_conf(load("defer_accept_seconds: 0\n")).defer_accept, 0s);
  EXPECT_EQ(problem("defer_accept_seconds: 3601\n"),
            "conf.yaml:1:23: 'defer_accept_seconds' must be at most 3600, got \"3601\"");
}

class Nothing final : public Service {
 public:
  Nothing() : Service("nothing") {}
  void serve_connection(detail::Worker&, detail::Accepted&) override {}
};

TEST(ConfigTest, AddListenersAndVerify) {
  portico::testing::TestPki pki;
  const auto cert = pki.issue({"localhost"});
  const std::string yaml =
      "listeners:\n  - address: 127.0.0.1:0\n  - address: 127.0.0.1:0\n    tls:\n"
      "      cert_file: " +
      cert.cert_file + "\n      key_file: " + cert.key_file + "\n";
  const ServerConfig c = load(yaml);
  EXPECT_TRUE(verify_config(c)) << verify_config(c).error().context();
  Nothing svc;
  ASSERT_TRUE(add_listeners(svc, c));
  ASSERT_EQ(svc.listen_addrs().size(), 2u);
  EXPECT_EQ(svc.listen_addrs()[0].to_string(), "127.0.0.1:0");
  EXPECT_FALSE(svc.tls_of(0));
  EXPECT_TRUE(svc.tls_of(1));

  // A key that is not the certificate's: the loader accepts the names, -t does not.
  const auto other = pki.issue({"other"});
  const ServerConfig wrong =
      load("listeners:\n  - address: 127.0.0.1:0\n    tls:\n      cert_file: " + cert.cert_file +
           "\n      key_file: " + other.key_file + "\n");
  auto v = verify_config(wrong);
  ASSERT_FALSE(v);
  EXPECT_EQ(std::string(v.error().context()).rfind("conf.yaml:2:5: ", 0), 0u)
      << v.error().context();
  Nothing svc2;
  EXPECT_FALSE(add_listeners(svc2, wrong));

  const ServerConfig unix_listener = load("listeners:\n  - address: unix:/tmp/p.sock\n");
  v = verify_config(unix_listener);
  ASSERT_FALSE(v);
  EXPECT_EQ(
      v.error().context(),
      "conf.yaml:2:5: \"unix:/tmp/p.sock\": only IP:port listeners can be served yet (no Unix "
      "listening sockets)");
  v = verify_config(load("ca_file: /nonexistent/ca.pem\n"));
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().context(), "'ca_file' \"/nonexistent/ca.pem\": No such file or directory");
}

TEST(ConfigTest, ReloadableDiff) {
  const std::string base =
      "threads: 2\ntimeouts:\n  header_read_ms: 100\nlisteners:\n"
      "  - address: 127.0.0.1:8443\n    tls:\n      cert_file: a.pem\n      key_file: a.key\n";
  const ServerConfig before = load(base);
  EXPECT_TRUE(changed_keys(before, load(base)).empty());

  ServerConfig after = load(base);
  after.threads = 4;
  after.http.header_read_timeout = 200ms;
  after.listeners[0].tls->certificates[0].cert_file = "b.pem";
  after.log_level = LogLevel::Warn;
  EXPECT_EQ(changed_keys(before, after),
            (std::vector<std::string>{"threads", "log_level", "timeouts.header_read_ms",
                                      "listeners[0].tls.certificates"}));
  EXPECT_EQ(non_reloadable_changes(before, after), std::vector<std::string>{"threads"});

  // Moving, adding and removing listeners needs a restart.
  ServerConfig moved = before;
  moved.listeners[0].address = "127.0.0.1:9443";
  EXPECT_EQ(non_reloadable_changes(before, moved),
            std::vector<std::string>{"listeners[0].address"});
  ServerConfig added = before;
  added.listeners.emplace_back().address = "127.0.0.1:80";
  const auto add_changes = non_reloadable_changes(before, added);
  EXPECT_TRUE(contains(add_changes, "listeners[1].address"));
  EXPECT_TRUE(contains(add_changes, "listeners[1].tls"));
  const auto removed = non_reloadable_changes(added, before);
  EXPECT_TRUE(contains(removed, "listeners[1].address"));
  // TLS on or off is a restart; its parameters are not.
  ServerConfig plain = before;
  plain.listeners[0].tls.reset();
  EXPECT_TRUE(contains(non_reloadable_changes(before, plain), "listeners[0].tls"));

  // The table says which keys are which.
  for (const auto& e : config_entries(before)) {
    if (e.key == "threads" || e.key == "daemon" || e.key == "pid_file" || e.key == "backlog" ||
        e.key == "listeners[0].address")
      EXPECT_FALSE(e.reloadable) << e.key;
    if (e.key.starts_with("timeouts.") || e.key.starts_with("limits.") || e.key == "log_level" ||
        e.key == "max_retries" || e.key.starts_with("listeners[0].tls."))
      EXPECT_TRUE(e.reloadable) << e.key;
  }
}

TEST(ConfigTest, IneffectiveKeysAreListed) {
  EXPECT_TRUE(ineffective_keys(ServerConfig{}).empty());
  const ServerConfig c = load(
      "daemon: true\nthreads: 4\nwork_stealing: false\nlisteners:\n"
      "  - address: 127.0.0.1:80\n    h2c: true\n");
  EXPECT_EQ(ineffective_keys(c), (std::vector<std::string>{"work_stealing"}));
}

TEST(ConfigTest, LogLevelNames) {
  EXPECT_EQ(to_string(LogLevel::Warn), "warn");
  EXPECT_EQ(load("log_level: off\n").log_level, LogLevel::Off);
  EXPECT_EQ(load("log_level: trace\n").log_level, LogLevel::Trace);
}

}  // namespace
