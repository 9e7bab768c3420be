// Built-in metrics, the /metrics service and the access log, end to end: a proxy under a known
// mix of requests, scraped over HTTP and parsed with the reference Prometheus parser
// (tests/observe/parse_metrics.py, python3-prometheus-client).
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include <gtest/gtest.h>

#include <portico/testing/tls.hpp>

#include "integration/h2_client.hpp"
#include "integration/helpers.hpp"

namespace itest {
namespace {

namespace obs = portico::observe;
using pt::Client;
using pt::Origin;

/// /dead* goes to a port nobody listens on; everything else to the origin.
class Router : public ProxyHttp<> {
 public:
  Router(SocketAddr good, SocketAddr dead) : good_(make_peer(good)), dead_(make_peer(dead)) {}
  task<Result<HttpPeerPtr>> upstream_peer(Session& s, NoCtx&) override {
    co_return s.req_header().path().starts_with("/dead") ? dead_ : good_;
  }

 private:
  HttpPeerPtr good_, dead_;
};

Origin::Handler origin_handler() {
  return [](const pt::OriginRequest& r) {
    pt::OriginResponse resp;
    if (r.target.starts_with("/missing")) resp.status = 404;
    resp.body = "hello";
    if (r.target.starts_with("/big")) resp.body = pattern(200 * 1024);
    if (r.method == "POST") resp.body = r.body;
    return resp;
  };
}

/// A proxy service and a metrics service on one Server, both recording into `registry`.
struct Stack {
  explicit Stack(std::shared_ptr<obs::Registry> reg, std::shared_ptr<obs::AccessLog> log = nullptr,
                 HttpServerOptions opts = {}, std::optional<TlsSettings> tls = std::nullopt)
      : registry(std::move(reg)),
        proxy(http_proxy_service(
            std::make_shared<Router>(origin.addr(), SocketAddr::loopback(dead_port())), opts,
            "obs_it")),
        metrics(obs::prometheus_service(registry)),
        server(ServerConf{.threads = 2}) {
    proxy->set_metrics_registry(registry);
    proxy->set_access_log(std::move(log));
    if (tls)
      EXPECT_TRUE(proxy->add_tls("127.0.0.1:0", std::move(*tls)));
    else
      EXPECT_TRUE(proxy->add_tcp("127.0.0.1:0"));
    EXPECT_TRUE(metrics->add_tcp("127.0.0.1:0"));
    server.add_service(proxy);
    server.add_service(metrics);
    EXPECT_TRUE(server.start());
  }
  ~Stack() {
    server.shutdown(false);
    server.wait();
  }
  std::uint16_t proxy_port() const { return proxy->local_endpoints().at(0).port(); }
  std::uint16_t metrics_port() const { return metrics->local_endpoints().at(0).port(); }

  /// A gauge of this service, by name.
  std::int64_t gauge(const std::string& name) {
    return registry->gauge_family(name, "", {"service"}).with({"obs_it"}).value();
  }
  /// Client connections the proxy accepted.
  std::uint64_t accepted() {
    return registry->counter_family("portico_downstream_connections_total", "", {"service"})
        .with({"obs_it"})
        .value();
  }

  std::uint64_t requests(std::string_view code_class) {
    return registry->counter_family("portico_requests_total", "", {"service", "code_class"})
        .with({"obs_it", code_class})
        .value();
  }

  Origin origin{origin_handler()};
  std::shared_ptr<obs::Registry> registry;
  std::shared_ptr<HttpProxyService> proxy;
  std::shared_ptr<HttpProxyService> metrics;
  Server server;
};

/// Runs parse_metrics.py on `text`; returns "name{labels}" -> value, or fails the test.
std::map<std::string, double> parse_exposition(const std::string& text) {
  std::map<std::string, double> out;
  const std::string file = ::testing::TempDir() + "portico_scrape_" + std::to_string(::getpid());
  std::ofstream(file) << text;
  const char* python = ::access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
  const std::string cmd = std::string(python) + " " + PORTICO_PARSE_METRICS + " " + file + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr);
  if (!p) return out;
  std::string all;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) all.append(buf, n);
  const int rc = ::pclose(p);
  std::remove(file.c_str());
  EXPECT_EQ(rc, 0) << "parse_metrics.py failed:\n" << all;
  std::istringstream in(all);
  for (std::string line; std::getline(in, line);) {
    const auto sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return out;
}

TEST(Metrics, ScrapedCountsMatchWhatWasSent) {
  auto reg = std::make_shared<obs::Registry>();
  Stack st(reg);
  constexpr int kKeepAliveOk = 20, kMissing = 10, kFreshOk = 10, kDead = 5;
  {
    Client c(st.proxy_port());
    for (int i = 0; i < kKeepAliveOk; ++i) ASSERT_EQ(c.get("/ok")->status, 200u);
    for (int i = 0; i < kMissing; ++i) ASSERT_EQ(c.get("/missing")->status, 404u);
  }
  for (int i = 0; i < kFreshOk; ++i) ASSERT_EQ(Client(st.proxy_port()).get("/fresh")->status, 200u);
  for (int i = 0; i < kDead; ++i) ASSERT_EQ(Client(st.proxy_port()).get("/dead")->status, 502u);
  // The counters are updated right after the response went out: wait for the last ones.
  ASSERT_TRUE(eventually([&] { return st.requests("5xx") == kDead; }));
  ASSERT_TRUE(eventually([&] { return st.gauge("portico_downstream_connections_active") == 0; }));

  Client scraper(st.metrics_port());
  auto resp = scraper.get("/metrics");
  ASSERT_TRUE(resp);
  ASSERT_EQ(resp->status, 200u);
  EXPECT_EQ(resp->header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  const UpstreamPoolStats pool = st.proxy->pool_stats();
  const auto m = parse_exposition(resp->body);
  ASSERT_FALSE(m.empty());

  auto at = [&](const std::string& key) {
    auto it = m.find(key);
    EXPECT_NE(it, m.end()) << key << " missing from:\n" << resp->body;
    return it == m.end() ? -1.0 : it->second;
  };
  const std::string svc = "service=\"obs_it\"";
  EXPECT_EQ(at("portico_requests_total{code_class=\"2xx\"," + svc + "}"), kKeepAliveOk + kFreshOk);
  EXPECT_EQ(at("portico_requests_total{code_class=\"4xx\"," + svc + "}"), kMissing);
  EXPECT_EQ(at("portico_requests_total{code_class=\"5xx\"," + svc + "}"), kDead);
  EXPECT_EQ(at("portico_requests_total{code_class=\"none\"," + svc + "}"), 0);
  const int total = kKeepAliveOk + kMissing + kFreshOk + kDead;
  EXPECT_EQ(at("portico_request_duration_seconds_count{" + svc + "}"), total);
  EXPECT_EQ(at("portico_request_duration_seconds_bucket{le=\"+Inf\"," + svc + "}"), total);
  EXPECT_GT(at("portico_request_duration_seconds_sum{" + svc + "}"), 0);
  EXPECT_EQ(at("portico_downstream_connections_total{" + svc + "}"), 1 + kFreshOk + kDead);
  EXPECT_EQ(at("portico_downstream_connections_active{" + svc + "}"), 0);
  EXPECT_GT(at("portico_downstream_sent_bytes_total{" + svc + "}"),
            (kKeepAliveOk + kMissing + kFreshOk) * 5.0);

  // Each /dead request: the first connect and max_retries retries are refused.
  const double tries = 1 + HttpServerOptions{}.max_retries;
  EXPECT_EQ(at("portico_upstream_errors_total{" + svc + ",type=\"ConnectRefused\"}"), kDead * tries);
  EXPECT_EQ(at("portico_upstream_retries_total{" + svc + "}"), kDead * (tries - 1));
  EXPECT_EQ(at("portico_request_errors_total{" + svc + ",source=\"Upstream\",type=\"ConnectRefused\"}"),
            kDead);

  // The pool numbers are the service's own pool_stats().
  EXPECT_EQ(at("portico_upstream_connections_opened_total{" + svc + "}"), pool.opened);
  EXPECT_EQ(at("portico_upstream_connections_reused_total{" + svc + "}"), pool.reused);
  EXPECT_DOUBLE_EQ(at("portico_upstream_connection_reuse_ratio{" + svc + "}"), pool.reuse_ratio());
  EXPECT_GT(pool.reused, 0u);
  EXPECT_EQ(pool.opened + pool.reused, static_cast<std::uint64_t>(kKeepAliveOk + kMissing + kFreshOk));
  EXPECT_EQ(at("portico_upstream_connections_evicted_total{reason=\"idle_timeout\"," + svc + "}"),
            pool.evicted_for(PoolEviction::IdleTimeout));

  // The metrics service counts itself; other paths are 404.
  EXPECT_EQ(scraper.get("/other")->status, 404u);
  EXPECT_EQ(scraper.request("POST", "/metrics")->status, 405u);
}

TEST(Metrics, Http2StreamsAndConnectionsAreCounted) {
  auto reg = std::make_shared<obs::Registry>();
  HttpServerOptions o;
  o.h2c = true;
  Stack st(reg, nullptr, o);
  constexpr int kStreams = 12;
  {
    h2test::H2Client c(st.proxy_port(), {});
    ASSERT_TRUE(c.connected()) << c.error();
    for (int i = 0; i < kStreams; ++i) {
      h2test::Request r;
      r.path = "/ok/" + std::to_string(i);
      auto s = c.request(r);
      ASSERT_TRUE(s);
      EXPECT_EQ(s->status, 200u);
    }
  }
  // Gauges go back to zero once the client has gone.
  auto gauge = [&](const char* name) { return st.gauge(name); };
  ASSERT_TRUE(eventually([&] {
    return gauge("portico_downstream_h2_connections_active") == 0 &&
           gauge("portico_downstream_h2_streams_active") == 0 && st.requests("2xx") == kStreams;
  }));
  Client scraper(st.metrics_port());
  auto resp = scraper.get("/metrics");
  ASSERT_TRUE(resp);
  const auto m = parse_exposition(resp->body);
  auto at = [&](const std::string& key) {
    auto it = m.find(key);
    EXPECT_NE(it, m.end()) << key << " missing";
    return it == m.end() ? -1.0 : it->second;
  };
  const std::string svc = "service=\"obs_it\"";
  EXPECT_EQ(at("portico_downstream_h2_streams_total{" + svc + "}"), kStreams);
  EXPECT_EQ(at("portico_requests_total{code_class=\"2xx\"," + svc + "}"), kStreams);
  EXPECT_EQ(at("portico_downstream_h2_connections_active{" + svc + "}"), 0);
  EXPECT_EQ(at("portico_downstream_h2_streams_active{" + svc + "}"), 0);
  EXPECT_EQ(at("portico_downstream_connections_total{" + svc + "}"), 1) << "all streams on one";
  EXPECT_EQ(at("portico_downstream_h2_client_resets_total{" + svc + "}"), 0);
  EXPECT_EQ(at("portico_downstream_h2_goaway_sent_total{code=\"enhance_your_calm\"," + svc + "}"), 0);
}

TEST(Metrics, LoadBalancerHealthIsExported) {
  obs::Registry reg;
  auto lb = std::make_shared<LoadBalancer<RoundRobin>>();
  ASSERT_TRUE(lb->update({*Backend::parse("127.0.0.1:1"), *Backend::parse("127.0.0.1:2")}));
  lb->set_health(lb->find(*SocketAddr::parse("127.0.0.1:2")), false, "test");
  const auto id = obs::register_load_balancer_metrics(reg, "web", lb);
  const auto m = parse_exposition(reg.render_prometheus());
  EXPECT_EQ(m.at("portico_lb_backend_healthy{backend=\"127.0.0.1:1\",lb=\"web\"}"), 1);
  EXPECT_EQ(m.at("portico_lb_backend_healthy{backend=\"127.0.0.1:2\",lb=\"web\"}"), 0);
  EXPECT_EQ(m.at("portico_lb_health_changes_total{direction=\"down\",lb=\"web\"}"), 1);
  lb.reset();  // gone: its samples disappear
  EXPECT_EQ(reg.render_prometheus().find("127.0.0.1:1"), std::string::npos);
  reg.remove_collector(id);
}

std::vector<std::vector<std::string>> read_fields(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::vector<std::string>> out;
  for (std::string l; std::getline(in, l);) {
    std::istringstream ls(l);
    std::vector<std::string> f;
    for (std::string w; ls >> w;) f.push_back(w);
    out.push_back(std::move(f));
  }
  return out;
}

TEST(AccessLogProxy, OneLinePerRequestWithItsFields) {
  const std::string path = ::testing::TempDir() + "portico_access_" + std::to_string(::getpid()) + ".log";
  std::remove(path.c_str());
  auto log = obs::AccessLog::open(path,
                                  "$method $path $status $upstream_reused $retries $error $bytes_sent "
                                  "$body_bytes_sent $upstream_addr $upstream_connect_time "
                                  "$upstream_header_time $request_time $remote_addr $time_iso8601");
  ASSERT_TRUE(log) << log.error().to_string();
  auto reg = std::make_shared<obs::Registry>();
  Stack st(reg, *log);
  constexpr int kOk = 15, kMissing = 5;
  {
    Client c(st.proxy_port());
    for (int i = 0; i < kOk; ++i) ASSERT_EQ(c.get("/ok?i=" + std::to_string(i))->status, 200u);
    for (int i = 0; i < kMissing; ++i) ASSERT_EQ(c.get("/missing")->status, 404u);
  }
  ASSERT_EQ(Client(st.proxy_port()).get("/dead")->status, 502u);
  const std::uint64_t n = kOk + kMissing + 1;
  ASSERT_TRUE(eventually([&] { return (*log)->lines_queued() == n; }));
  (*log)->flush();
  const auto lines = read_fields(path);
  ASSERT_EQ(lines.size(), n);
  const std::string origin = "127.0.0.1:" + std::to_string(st.origin.port());
  int reused = 0, ok = 0, missing = 0, dead = 0;
  std::string first_reused;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const auto& f = lines[i];
    ASSERT_EQ(f.size(), 14u) << i;
    EXPECT_EQ(f[0], "GET");
    EXPECT_EQ(f[12], "127.0.0.1");
    EXPECT_EQ(f[13].size(), 25u) << f[13];  // 2026-11-26T10:00:00+00:00
    if (f[1] != "/dead") {
      EXPECT_EQ(f[2], f[1] == "/ok" ? "200" : "404") << i;
      (f[1] == "/ok" ? ok : missing) += 1;
      EXPECT_EQ(f[4], "0");
      EXPECT_EQ(f[5], "-");
      EXPECT_EQ(f[7], "5");                   // "hello"
      EXPECT_GT(std::stoul(f[6]), 5u + 20u);  // the header counts too
      EXPECT_EQ(f[8], origin);
      EXPECT_NE(f[9], "-");
      EXPECT_NE(f[10], "-");
      EXPECT_LE(std::stod(f[10]), std::stod(f[11]) + 0.001);
      if (first_reused.empty()) first_reused = f[3];
      reused += f[3] == "1";
    } else {
      ++dead;
      EXPECT_EQ(f[2], "502");
      EXPECT_EQ(f[4], std::to_string(HttpServerOptions{}.max_retries));
      EXPECT_EQ(f[5], "ConnectRefused");
      EXPECT_EQ(f[9], "-");  // never connected
      EXPECT_EQ(f[10], "-");
    }
  }
  EXPECT_EQ(ok, kOk);
  EXPECT_EQ(missing, kMissing);
  EXPECT_EQ(dead, 1);
  // One client's lines keep their order: its first request had to connect, later ones found
  // the pooled connection.
  EXPECT_EQ(first_reused, "0");
  EXPECT_GE(reused, 1);
  EXPECT_EQ((*log)->lines_dropped(), 0u);
  std::remove(path.c_str());
}

// An idle keep-alive connection parks after keepalive_park_after (only its socket is kept) and
// its next request wakes it: served on the same TCP connection, the connection counted once.
TEST(Metrics, IdleKeepAliveConnectionsParkAndWakeUp) {
  auto reg = std::make_shared<obs::Registry>();
  HttpServerOptions opts;
  opts.keepalive_park_after = std::chrono::milliseconds(20);
  Stack st(reg, nullptr, opts);
  auto gauge = [&](const char* name) { return st.gauge(name); };
  auto accepted = [&] { return st.accepted(); };
  constexpr int kClients = 5;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<Client>(st.proxy_port()));
    auto r = clients.back()->get("/ok");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200u);
  }
  ASSERT_TRUE(eventually([&] { return gauge("portico_downstream_connections_parked") == kClients; }));
  EXPECT_EQ(gauge("portico_downstream_connections_active"), kClients);
  for (int round = 0; round < 3; ++round) {
    for (auto& c : clients) {
      auto r = c->get("/ok");
      ASSERT_TRUE(r) << "round " << round;
      EXPECT_EQ(r->status, 200u);
    }
    ASSERT_TRUE(eventually([&] { return gauge("portico_downstream_connections_parked") == kClients; }));
  }
  EXPECT_EQ(accepted(), static_cast<std::uint64_t>(kClients)) << "no connection was replaced";
  EXPECT_EQ(gauge("portico_downstream_connections_active"), kClients);
  // A client that leaves while parked: the connection closes, the gauges come back to zero.
  clients.clear();
  ASSERT_TRUE(eventually([&] {
    return gauge("portico_downstream_connections_active") == 0 &&
           gauge("portico_downstream_connections_parked") == 0;
  }));
}

/// One throwaway certificate for the TLS cases of this file.
const pt::TestPki::Issued& certificate() {
  static pt::TestPki pki;
  static const pt::TestPki::Issued cert = pki.issue({"h2.test", "127.0.0.1"});
  return cert;
}

TlsSettings tls_settings() {
  TlsSettings s;
  s.certificates.push_back({certificate().cert_file, certificate().key_file});
  return s;
}

/// `n` HTTPS clients of the proxy on `port` (its test certificate is not verified), each with
/// one GET /ok answered 200 "hello". A failure is reported here; the caller stops on
/// HasFailure().
std::vector<std::unique_ptr<pt::TlsClient>> answered_tls_clients(std::uint16_t port, int n) {
  pt::TlsClientOptions o;
  o.verify = false;
  std::vector<std::unique_ptr<pt::TlsClient>> clients;
  for (int i = 0; i < n; ++i) {
    auto& c = *clients.emplace_back(std::make_unique<pt::TlsClient>(port, o));
    EXPECT_TRUE(c.connected()) << "client " << i << ": " << c.error();
    if (!c.connected()) break;
    auto r = c.get("/ok");
    EXPECT_TRUE(r) << "client " << i;
    if (!r) break;
    EXPECT_EQ(r->status, 200u);
    EXPECT_EQ(r->body, "hello");
  }
  return clients;
}

// An idle HTTP/2 connection (h2c or over TLS) is parked after keepalive_park_after: the worker's
// ParkingLot keeps its socket, its nghttp2 session (and its SSL object) and nothing else. The
// requests that follow, their heads compressed against the dynamic tables both ends built
// before, are served on the same connection, large bodies both ways included, by a new
// connection object; each time the connection goes idle again it is parked again. A PING wakes
// it too, and is answered.
class IdleH2 : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(Metrics, IdleH2, ::testing::Values(false, true),
                         [](const auto& i) { return i.param ? "Tls" : "H2c"; });

TEST_P(IdleH2, ConnectionsAreParkedWithTheirSessionAndServeTheNextRequests) {
  const bool tls = GetParam();
  auto reg = std::make_shared<obs::Registry>();
  HttpServerOptions opts;
  opts.keepalive_park_after = std::chrono::milliseconds(20);
  opts.h2c = true;
  Stack st(reg, nullptr, opts, tls ? std::optional<TlsSettings>(tls_settings()) : std::nullopt);
  auto gauge = [&](const char* name) { return st.gauge(name); };
  auto parked = [&] { return gauge("portico_downstream_connections_parked"); };
  h2test::Request get;
  get.scheme = tls ? "https" : "http";
  get.path = "/ok";
  get.headers = {{"x-trace", "abc123"}, {"user-agent", "park-test/1"}};
  h2test::H2Client::Options copts;
  copts.tls = tls;
  constexpr int kClients = 3;
  std::vector<std::unique_ptr<h2test::H2Client>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<h2test::H2Client>(st.proxy_port(), copts));
    ASSERT_TRUE(clients.back()->connected()) << clients.back()->error();
    auto r = clients.back()->request(get);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200u);
    EXPECT_EQ(r->body, "hello");
  }
  ASSERT_TRUE(eventually([&] { return parked() == kClients; }));
  EXPECT_EQ(gauge("portico_downstream_h2_connections_active"), kClients) << "parked ones count";
  EXPECT_EQ(gauge("portico_downstream_connections_trimmed"), 0);
  const std::string big = pattern(200 * 1024), upload = pattern(100 * 1024);
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    for (auto& c : clients) {
      auto small = c->request(get);
      ASSERT_TRUE(small);
      EXPECT_EQ(small->status, 200u);
      EXPECT_EQ(small->body, "hello");
      h2test::Request b = get;
      b.path = "/big";
      auto large = c->request(b);
      ASSERT_TRUE(large);
      EXPECT_EQ(large->status, 200u);
      EXPECT_TRUE(large->body == big) << "a " << large->body.size() << "-byte body";
      h2test::Request post = get;
      post.method = "POST";
      post.path = "/echo";
      post.body = upload;
      auto echoed = c->request(post);
      ASSERT_TRUE(echoed);
      EXPECT_EQ(echoed->status, 200u);
      EXPECT_TRUE(echoed->body == upload) << "a " << echoed->body.size() << "-byte body";
    }
    ASSERT_TRUE(eventually([&] { return parked() == kClients; }));
    EXPECT_EQ(gauge("portico_downstream_h2_connections_active"), kClients);
  }
  for (auto& c : clients) EXPECT_TRUE(c->ping()) << "a parked connection answers a PING";
  ASSERT_TRUE(eventually([&] { return parked() == kClients; }));
  // Every head reached the origin intact: the decoding state outlived each park.
  const auto got = st.origin.received();
  ASSERT_EQ(got.size(), static_cast<std::size_t>(kClients * 10));
  for (const auto& r : got) {
    EXPECT_EQ(r.header("x-trace"), "abc123") << r.method << " " << r.target;
    EXPECT_EQ(r.header("user-agent"), "park-test/1") << r.method << " " << r.target;
  }
  EXPECT_EQ(st.accepted(), static_cast<std::uint64_t>(kClients)) << "no connection was replaced";
  for (auto& c : clients) EXPECT_TRUE(c->goaways().empty()) << "no GOAWAY while parked";
  // Clients that leave while parked: the gauges come back to zero.
  clients.clear();
  ASSERT_TRUE(eventually(
      [&] { return parked() == 0 && gauge("portico_downstream_h2_connections_active") == 0; }));
  EXPECT_EQ(gauge("portico_downstream_connections_trimmed"), 0);
}

// A drain ends parked HTTP/2 connections with a GOAWAY (NO_ERROR, no stream processed beyond
// those answered) and closes them; the gauges come back to zero.
TEST_P(IdleH2, ParkedConnectionsEndOnShutdownWithAGoaway) {
  const bool tls = GetParam();
  auto reg = std::make_shared<obs::Registry>();
  HttpServerOptions opts;
  opts.keepalive_park_after = std::chrono::milliseconds(20);
  opts.keepalive_timeout = std::chrono::seconds(60);
  opts.h2c = true;
  Stack st(reg, nullptr, opts, tls ? std::optional<TlsSettings>(tls_settings()) : std::nullopt);
  h2test::Request get;
  get.scheme = tls ? "https" : "http";
  get.path = "/ok";
  h2test::H2Client::Options copts;
  copts.tls = tls;
  std::vector<std::unique_ptr<h2test::H2Client>> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(std::make_unique<h2test::H2Client>(st.proxy_port(), copts));
    ASSERT_TRUE(clients.back()->connected()) << clients.back()->error();
    auto r = clients.back()->request(get);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200u);
  }
  ASSERT_TRUE(eventually([&] { return st.gauge("portico_downstream_connections_parked") == 3; }));
  const auto t0 = std::chrono::steady_clock::now();
  st.server.shutdown(true);
  st.server.wait();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  for (auto& c : clients) {
    EXPECT_TRUE(c->wait_closed(std::chrono::seconds(3)));
    ASSERT_FALSE(c->goaways().empty()) << "closed without a GOAWAY";
    EXPECT_EQ(c->goaways().back().code, 0u);
    EXPECT_EQ(c->goaways().back().last_stream_id, 1) << "the one stream answered";
  }
  EXPECT_EQ(st.gauge("portico_downstream_connections_parked"), 0);
  EXPECT_EQ(st.gauge("portico_downstream_h2_connections_active"), 0);
}

// An idle HTTP/1.1 keep-alive connection over TLS is parked with its SSL object: its next
// requests, small or large either way, are served by a new connection object that takes the
// TLS session over, on the same TCP connection and without another handshake.
TEST(Metrics, IdleTlsKeepAliveConnectionsAreParkedAndGoOnWithTheirSession) {
  auto reg = std::make_shared<obs::Registry>();
  HttpServerOptions opts;
  opts.keepalive_park_after = std::chrono::milliseconds(20);
  Stack st(reg, nullptr, opts, tls_settings());
  auto gauge = [&](const char* name) { return st.gauge(name); };
  auto parked = [&] { return gauge("portico_downstream_connections_parked"); };
  auto handshakes = [&] {
    return reg->counter_family("portico_downstream_tls_handshakes_total", "", {"service", "result"})
        .with({"obs_it", "full"})
        .value();
  };
  constexpr int kClients = 3;
  auto clients = answered_tls_clients(st.proxy_port(), kClients);
  ASSERT_FALSE(HasFailure());
  ASSERT_TRUE(eventually([&] { return parked() == kClients; }));
  EXPECT_EQ(gauge("portico_downstream_connections_trimmed"), 0);
  EXPECT_EQ(st.server.active_connections(), static_cast<std::size_t>(kClients));
  const std::string big = pattern(200 * 1024), upload = pattern(100 * 1024);
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    for (auto& c : clients) {
      auto small = c->get("/ok");
      ASSERT_TRUE(small);
      EXPECT_EQ(small->status, 200u);
      EXPECT_EQ(small->body, "hello");
      auto large = c->get("/big");
      ASSERT_TRUE(large);
      EXPECT_EQ(large->status, 200u);
      EXPECT_TRUE(large->body == big) << "a " << large->body.size() << "-byte body";
      ASSERT_TRUE(c->send("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: " +
                          std::to_string(upload.size()) + "\r\n\r\n" + upload));
      auto echoed = c->read_response();
      ASSERT_TRUE(echoed);
      EXPECT_EQ(echoed->status, 200u);
      EXPECT_TRUE(echoed->body == upload) << "a " << echoed->body.size() << "-byte body";
    }
    ASSERT_TRUE(eventually([&] { return parked() == kClients; }));
  }
  EXPECT_EQ(st.origin.requests(), static_cast<std::size_t>(kClients * 10));
  EXPECT_EQ(st.accepted(), static_cast<std::uint64_t>(kClients)) << "no connection was replaced";
  EXPECT_EQ(handshakes(), kClients) << "one handshake per connection, none after a park";
  clients.clear();
  ASSERT_TRUE(eventually(
      [&] { return parked() == 0 && gauge("portico_downstream_connections_active") == 0; }));
}

// A parked TLS connection still ends at its keep-alive timeout, counted from its last response
// (not from the park), and the gauge comes back to zero.
TEST(Metrics, ParkedTlsConnectionEndsAtTheKeepAliveTimeout) {
  auto reg = std::make_shared<obs::Registry>();
  HttpServerOptions opts;
  opts.keepalive_park_after = std::chrono::milliseconds(50);
  opts.keepalive_timeout = std::chrono::milliseconds(400);
  Stack st(reg, nullptr, opts, tls_settings());
  auto parked = [&] { return st.gauge("portico_downstream_connections_parked"); };
  auto clients = answered_tls_clients(st.proxy_port(), 1);
  ASSERT_FALSE(HasFailure());
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return parked() == 1; }));
  EXPECT_FALSE(clients[0]->read_response()) << "the connection should close, not answer";
  const auto idle = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(idle, std::chrono::milliseconds(300));
  EXPECT_LT(idle, std::chrono::milliseconds(5000));
  ASSERT_TRUE(eventually([&] { return parked() == 0; }));
}

// A graceful shutdown closes parked TLS connections at once (their SSL objects freed, a
// close_notify sent), as it does plain ones.
TEST(Metrics, ParkedTlsConnectionsEndOnShutdown) {
  auto reg = std::make_shared<obs::Registry>();
  HttpServerOptions opts;
  opts.keepalive_park_after = std::chrono::milliseconds(20);
  opts.keepalive_timeout = std::chrono::seconds(60);
  Stack st(reg, nullptr, opts, tls_settings());
  auto clients = answered_tls_clients(st.proxy_port(), 4);
  ASSERT_FALSE(HasFailure());
  ASSERT_TRUE(eventually([&] { return st.gauge("portico_downstream_connections_parked") == 4; }));
  const auto t0 = std::chrono::steady_clock::now();
  st.server.shutdown(true);
  st.server.wait();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  for (auto& c : clients) EXPECT_FALSE(c->read_response()) << "closed, not answered";
  EXPECT_EQ(st.gauge("portico_downstream_connections_parked"), 0);
}

// Many parked connections (more than one array of the worker's ParkingLot, more than one batch
// of its epoll set) whose next requests all arrive at once: every one is served on its own
// connection, and parked ones still count among the server's active connections.
TEST(Metrics, ManyParkedConnectionsWakeUpTogether) {
  auto reg = std::make_shared<obs::Registry>();
  HttpServerOptions opts;
  opts.keepalive_park_after = std::chrono::milliseconds(20);
  Stack st(reg, nullptr, opts);
  auto parked = [&] { return st.gauge("portico_downstream_connections_parked"); };
  constexpr int kClients = 600;  // two workers: more than 256 on at least one
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<Client>(st.proxy_port()));
    auto r = clients.back()->get("/ok");
    ASSERT_TRUE(r) << i;
    ASSERT_EQ(r->status, 200u);
  }
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(eventually([&] { return parked() == kClients; })) << "round " << round;
    EXPECT_EQ(st.server.active_connections(), static_cast<std::size_t>(kClients));
    for (auto& c : clients) ASSERT_TRUE(c->send("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"));
    for (int i = 0; i < kClients; ++i) {
      auto r = clients[i]->read_response();
      ASSERT_TRUE(r) << "round " << round << ", client " << i;
      EXPECT_EQ(r->status, 200u);
    }
  }
  ASSERT_TRUE(eventually([&] { return parked() == kClients; }));
  clients.clear();
  ASSERT_TRUE(eventually([&] { return parked() == 0 && st.server.active_connections() == 0; }));
}

// A parked connection still ends at its keep-alive timeout, and a graceful shutdown closes
// parked connections at once instead of waiting for them.
TEST(Metrics, ParkedConnectionsEndAtTheKeepAliveTimeoutAndOnShutdown) {
  auto reg = std::make_shared<obs::Registry>();
  HttpServerOptions opts;
  opts.keepalive_park_after = std::chrono::milliseconds(20);
  opts.keepalive_timeout = std::chrono::milliseconds(300);
  Stack st(reg, nullptr, opts);
  auto reg2 = std::make_shared<obs::Registry>();
  auto parked_in = [](obs::Registry& r) {
    return r.gauge_family("portico_downstream_connections_parked", "", {"service"})
        .with({"obs_it"})
        .value();
  };
  auto parked = [&] { return parked_in(*reg); };
  Client timed(st.proxy_port());
  ASSERT_EQ(timed.get("/ok")->status, 200u);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return parked() == 1; }));
  EXPECT_TRUE(timed.closed_by_peer());
  const auto lived = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(lived, std::chrono::milliseconds(250)) << "closed at the keep-alive timeout, not before";
  EXPECT_LT(lived, std::chrono::seconds(5));
  ASSERT_TRUE(eventually([&] { return parked() == 0; }));

  opts.keepalive_timeout = std::chrono::seconds(60);
  Stack st2(reg2, nullptr, opts);
  Client idle(st2.proxy_port());
  ASSERT_EQ(idle.get("/ok")->status, 200u);
  ASSERT_TRUE(eventually([&] { return parked_in(*reg2) == 1; }));
  const auto t1 = std::chrono::steady_clock::now();
  st2.server.shutdown(true);
  st2.server.wait();
  EXPECT_LT(std::chrono::steady_clock::now() - t1, std::chrono::seconds(5));
  EXPECT_TRUE(idle.closed_by_peer());
  EXPECT_EQ(parked_in(*reg2), 0);
}

}  // namespace
}  // namespace itest
