// Health checks against real origins that go down and come back: TCP and HTTP checks, thresholds,
// parallel rounds, the service on the Server's control thread and embedded, passive health through
// the proxy, and the load_balancer example under a killed and revived backend.
#include <arpa/inet.h>
#include <signal.h>

#include <cstdio>
#include <map>
#include <set>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <portico/testing/tls.hpp>

#include "integration/helpers.hpp"


namespace itest {
namespace {

namespace asio = boost::asio;
using clock = std::chrono::steady_clock;

double ms_since(clock::time_point t0, clock::time_point t1 = clock::now()) {
  return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

/// An HTTP/1.1 origin on 127.0.0.1 that can be killed (listener and connections closed: connects
/// are refused) and started again on the same port. Requests to `health_path` are health checks,
/// answered with `health_status`; others get 200 and the origin's body.
class SwitchOrigin {
 public:
  explicit SwitchOrigin(std::string body, std::string health_path = "/health")
      : body_(std::move(body)), health_path_(std::move(health_path)) {
    EXPECT_TRUE(start());
  }
  ~SwitchOrigin() { stop(); }

  bool start() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port_);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 128) != 0) {
      ::close(fd);
      return false;
    }
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    lfd_ = fd;
    acceptor_ = std::thread([this, fd] {
      for (;;) {
        int c = ::accept(fd, nullptr, nullptr);
        if (c < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          return;  // the listener was shut down
        }
        std::lock_guard lk(mu_);
        conns_.insert(c);
        threads_.emplace_back([this, c] { serve(c); });
      }
    });
    return true;
  }
  /// Kills the origin: nothing listens on its port any more and open connections are closed.
  void stop() {
    if (lfd_ < 0) return;
    ::shutdown(lfd_, SHUT_RDWR);
    acceptor_.join();
    ::close(lfd_);
    lfd_ = -1;
    std::vector<std::thread> ts;
    {
      std::lock_guard lk(mu_);
      for (int c : conns_) ::shutdown(c, SHUT_RDWR);
      ts.swap(threads_);
    }
    for (auto& t : ts) t.join();
  }

  std::uint16_t port() const { return port_; }
  SocketAddr addr() const { return SocketAddr::loopback(port_); }
  std::string addr_string() const { return addr().to_string(); }
  std::size_t proxied() const { return proxied_.load(); }
  std::size_t health_checks() const { return health_.load(); }
  std::string last_health_request() {
    std::lock_guard lk(mu_);
    return last_health_;
  }
  std::atomic<unsigned> health_status{200};
  /// Counts proxied requests answered.
  Latch served;

 private:
  void serve(int c) {
    std::string buf;
    char tmp[4096];
    for (;;) {
      std::size_t end;
      while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
        ssize_t n = ::recv(c, tmp, sizeof tmp, 0);
        if (n <= 0) goto out;
        buf.append(tmp, static_cast<std::size_t>(n));
      }
      {
        const std::string head = buf.substr(0, end + 4);
        buf.erase(0, end + 4);
        const auto sp1 = head.find(' '), sp2 = head.find(' ', sp1 + 1);
        const std::string path = head.substr(sp1 + 1, sp2 - sp1 - 1);
        const bool health = path == health_path_;
        unsigned status = 200;
        std::string body;
        if (health) {
          status = health_status.load();
          ++health_;
          std::lock_guard lk(mu_);
          last_health_ = head;
        } else {
          body = body_;
        }
        std::string resp = "HTTP/1.1 " + std::to_string(status) +
                           " X\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
                           body;
        if (!pt::write_all(c, resp)) break;
        if (!health) {
          ++proxied_;
          served.add();
        }
      }
    }
  out:
    std::lock_guard lk(mu_);
    conns_.erase(c);
    ::close(c);
  }

  std::string body_, health_path_;
  std::uint16_t port_ = 0;
  int lfd_ = -1;
  std::thread acceptor_;
  std::mutex mu_;
  std::set<int> conns_;
  std::vector<std::thread> threads_;
  std::string last_health_;
  std::atomic<std::size_t> proxied_{0}, health_{0};
};

Backend backend_at(const SocketAddr& a) {
  Backend b;
  b.addr = a;
  return b;
}

std::shared_ptr<HttpHealthCheck> http_check(Millis read_timeout = Millis(1000)) {
  HttpHealthCheckOptions o;
  o.path = "/health";
  o.read_timeout = read_timeout;
  return HttpHealthCheck::create(o).value();
}

/// Records health flips with the time they happened, and lets a test wait for one.
struct Flips {
  void operator()(const Backend& b, bool up) {
    std::lock_guard lk(mu);
    log.push_back({b.addr.to_string(), up, clock::now()});
    cv.notify_all();
  }
  /// Waits for a flip of `addr` to `up`; returns its time, or nullopt after `limit`.
  std::optional<clock::time_point> wait(const std::string& addr, bool up, std::size_t from = 0,
                                        Millis limit = Millis(10000)) {
    std::unique_lock lk(mu);
    std::optional<clock::time_point> at;
    cv.wait_for(lk, limit, [&] {
      for (std::size_t i = from; i < log.size(); ++i) {
        if (log[i].addr == addr && log[i].up == up) {
          at = log[i].at;
          return true;
        }
      }
      return false;
    });
    return at;
  }
  std::size_t size() {
    std::lock_guard lk(mu);
    return log.size();
  }
  struct Entry {
    std::string addr;
    bool up;
    clock::time_point at;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Entry> log;
};

/// Wraps a check and counts the checks done, so a test can wait for a round to finish.
class CountingCheck : public HealthCheck {
 public:
  explicit CountingCheck(std::shared_ptr<HealthCheck> c) : inner_(std::move(c)) {}
  task<Result<void>> check(const Backend& b) override {
    auto r = co_await inner_->check(b);
    done.add();
    co_return r;
  }
  Latch done;

 private:
  std::shared_ptr<HealthCheck> inner_;
};

struct Ctx {
  InFlight in_flight;
};

/// The example's proxy: select skipping failed peers, passive reports, connect attempts counted.
class Balanced : public ProxyHttp<Ctx> {
 public:
  explicit Balanced(std::shared_ptr<LoadBalancerBase> lb) : lb_(std::move(lb)) {}
  task<Result<HttpPeerPtr>> upstream_peer(Session& s, Ctx& ctx) override {
    auto not_failed = [&](const Backend& b) {
      for (const auto& p : s.failed_peers())
        if (p->address == b.addr) return false;
      return true;
    };
    BackendRef b = lb_->select_any(s.req_header().path(), 256, not_failed);
    if (!b) co_return Error::http_status(503, "no healthy backend");
    ctx.in_flight = b.track();
    co_return b.peer();
  }
  Error fail_to_connect(Session&, const HttpPeer& p, Ctx&, Error e) override {
    {
      std::lock_guard lk(mu);
      ++connect_failures[p.address.to_string()];
    }
    lb_->report(p.address, false);
    return e;
  }
  task<void> logging(Session&, const Error* e, Ctx& ctx) override {
    if (!e) lb_->report(ctx.in_flight.backend(), true);
    logged.add();
    co_return;
  }
  int failures_to(const std::string& addr) {
    std::lock_guard lk(mu);
    return connect_failures[addr];
  }
  Latch logged;

 private:
  std::shared_ptr<LoadBalancerBase> lb_;
  std::mutex mu;
  std::map<std::string, int> connect_failures;
};

// ---------------------------------------------------------------------------------------------
// The checks themselves.

TEST(LbHealthCheck, TcpPassesOnAnOpenPortFailsOnAClosedOne) {
  SwitchOrigin o("a");
  TcpHealthCheck tcp;
  EXPECT_TRUE(run_task(tcp.check(backend_at(o.addr()))));
  auto r = run_task(tcp.check(backend_at(SocketAddr::loopback(dead_port()))));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().type(), ErrorType::ConnectRefused);
  // A port override probes another port of the same host.
  TcpHealthCheck other({.connect_timeout = Millis(1000), .port = o.port()});
  EXPECT_TRUE(run_task(other.check(backend_at(SocketAddr::loopback(dead_port())))));
}

TEST(LbHealthCheck, HttpSendsMethodPathHostAndChecksTheStatus) {
  SwitchOrigin o("a");
  HttpHealthCheckOptions opts;
  opts.method = "HEAD";
  opts.path = "/health";
  opts.host = "svc.internal";
  opts.headers = {{"X-Probe", "1"}};
  auto hc = HttpHealthCheck::create(opts);
  ASSERT_TRUE(hc);
  EXPECT_TRUE(run_task((*hc)->check(backend_at(o.addr()))));
  const std::string req = o.last_health_request();
  EXPECT_EQ(req.rfind("HEAD /health HTTP/1.1\r\n", 0), 0u) << req;
  EXPECT_NE(req.find("\r\nHost: svc.internal\r\n"), std::string::npos) << req;
  EXPECT_NE(req.find("\r\nX-Probe: 1\r\n"), std::string::npos) << req;

  o.health_status = 503;
  auto r = run_task((*hc)->check(backend_at(o.addr())));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().status(), 503u);

  // A validator decides instead of the expected status.
  opts.validator = [](const HealthCheckResponse& resp) {
    return resp.status == 503 && resp.header("content-length") == "0";
  };
  EXPECT_TRUE(run_task(HttpHealthCheck::create(opts).value()->check(backend_at(o.addr()))));
  // Default Host: the backend address.
  EXPECT_TRUE(run_task(http_check()->check(backend_at(o.addr()))).has_error());
  EXPECT_NE(o.last_health_request().find("\r\nHost: " + o.addr_string() + "\r\n"),
            std::string::npos);
}

TEST(LbHealthCheck, HttpTimesOutOnASilentBackend) {
  Latch release;
  pt::RawOrigin silent([&](int fd) {
    std::string extra;
    pt::read_head(fd, extra);
    release.wait_for(1);  // never answers while the check waits
  });
  const auto t0 = clock::now();
  auto r = run_task(http_check(Millis(150))->check(backend_at(silent.addr())));
  const double took = ms_since(t0);
  release.add();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().type(), ErrorType::ReadTimedout);
  EXPECT_GE(took, 140);
  EXPECT_LT(took, 2000);
}

TEST(LbHealthCheck, RefusesOptionsThatCannotWork) {
  HttpHealthCheckOptions o;
  o.path = "no-slash";
  EXPECT_FALSE(HttpHealthCheck::create(o));
  o.path = "/";
  o.method = "GE T";
  EXPECT_FALSE(HttpHealthCheck::create(o));
  o.method = "GET";
  o.host = "a\r\nX-Injected: 1";
  EXPECT_FALSE(HttpHealthCheck::create(o));
  o.host = "a.test";
  EXPECT_TRUE(HttpHealthCheck::create(o));
}

/// An HTTPS backend: a TLS listener (certificate from `pki` for "backend.test") in front of an
/// origin answering "secure".
struct HttpsBackend {
  explicit HttpsBackend(pt::TestPki& pki)
      : origin(pt::Origin::text("secure")),
        cert(pki.issue({"backend.test"})),
        px(std::make_shared<Forward>(origin.addr()), {}, 1, [&] {
          TlsSettings s;
          s.certificates.push_back({cert.cert_file, cert.key_file});
          return s;
        }()) {}
  Backend backend() { return backend_at(SocketAddr::loopback(px.port())); }
  pt::Origin origin;
  pt::TestPki::Issued cert;
  pt::TestProxy px;
};

TEST(LbHealthCheck, HttpsVerifiesTheBackendAndResumesItsSession) {
  pt::TestPki pki;
  HttpsBackend b(pki);
  HttpHealthCheckOptions o;
  o.tls = true;
  o.sni = "backend.test";
  o.tls_options.ca_file = pki.ca_file();
  auto hc = HttpHealthCheck::create(o).value();
  auto first = run_task(hc->check(b.backend()));
  ASSERT_TRUE(first) << first.error().to_string();
  EXPECT_EQ(hc->tls_full_handshakes(), 1u);
  auto second = run_task(hc->check(b.backend()));
  ASSERT_TRUE(second) << second.error().to_string();
  EXPECT_EQ(hc->tls_resumed(), 1u) << "the second probe resumes the first one's session";
  EXPECT_EQ(b.origin.requests(), 2u);
}

TEST(LbHealthCheck, HttpsBackendWithAnUntrustedOrWrongCertificateIsDown) {
  pt::TestPki pki;
  HttpsBackend b(pki);
  struct Case {
    const char* name;
    std::string sni;
    bool trust;
    bool verify;
    bool healthy;
  };
  const Case cases[] = {
      {"system store does not know the test CA", "backend.test", false, true, false},
      {"certificate for another name", "other.test", true, true, false},
      {"host name from Host when no SNI is set", "", true, true, true},
      {"verification off", "other.test", false, false, true},
  };
  for (const auto& c : cases) {
    HttpHealthCheckOptions o;
    o.tls = true;
    o.sni = c.sni;
    if (c.sni.empty()) o.host = "backend.test:443";
    if (c.trust) o.tls_options.ca_file = pki.ca_file();
    o.tls_options.verify_cert = c.verify;
    auto hc = HttpHealthCheck::create(o).value();
    auto r = run_task(hc->check(b.backend()));
    EXPECT_EQ(bool(r), c.healthy) << c.name;
    if (!r && !c.healthy) {
      EXPECT_EQ(r.error().type(), ErrorType::InvalidCert) << c.name;
      EXPECT_NE(r.error().to_string().find("certificate refused"), std::string::npos)
          << c.name << ": " << r.error().to_string();
    }
  }
}

TEST(LbHealthCheck, HttpsAgainstAPlainBackendFailsCleanly) {
  pt::Origin plain(pt::Origin::text("plain"));
  HttpHealthCheckOptions o;
  o.tls = true;
  o.tls_options.verify_cert = false;
  o.connect_timeout = Millis(2000);
  auto hc = HttpHealthCheck::create(o).value();
  auto r = run_task(hc->check(backend_at(plain.addr())));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().type(), ErrorType::TLSHandshakeFailure) << r.error().to_string();
}

TEST(LbHealthCheck, FlipsAfterConsecutiveResults) {
  SwitchOrigin o("a");
  Flips flips;
  LoadBalancerOptions lo;
  lo.on_health_change = std::ref(flips);
  auto lb =
      std::make_shared<LoadBalancer<RoundRobin>>(std::vector<Backend>{backend_at(o.addr())}, lo);
  HealthCheckService svc(lb, http_check(), {.consecutive_success = 3, .consecutive_failure = 2});
  auto healthy = [&] { return lb->status()[0].healthy; };
  run_task(svc.run_once());
  EXPECT_TRUE(healthy());
  o.health_status = 500;
  run_task(svc.run_once());
  EXPECT_TRUE(healthy()) << "one failure is not enough";
  o.health_status = 200;
  run_task(svc.run_once());  // a success resets the failure count
  o.health_status = 500;
  run_task(svc.run_once());
  EXPECT_TRUE(healthy());
  run_task(svc.run_once());
  EXPECT_FALSE(healthy()) << "two failures in a row";
  o.health_status = 200;
  run_task(svc.run_once());
  run_task(svc.run_once());
  EXPECT_FALSE(healthy());
  run_task(svc.run_once());
  EXPECT_TRUE(healthy()) << "three successes in a row";
  EXPECT_EQ(flips.size(), 2u);
  auto st = svc.stats();
  EXPECT_EQ(st.rounds, 8u);
  EXPECT_EQ(st.checks, 8u);
  EXPECT_EQ(st.failed_checks, 3u);
  EXPECT_EQ(st.marked_down, 1u);
  EXPECT_EQ(st.marked_up, 1u);
  EXPECT_EQ(lb->stats().marked_down, 1u);
}

TEST(LbHealthCheck, BackendsAreCheckedInParallel) {
  Latch release;
  std::vector<std::unique_ptr<pt::RawOrigin>> silent;
  std::vector<Backend> bs;
  for (int i = 0; i < 6; ++i) {
    silent.push_back(std::make_unique<pt::RawOrigin>([&](int fd) {
      std::string extra;
      pt::read_head(fd, extra);
      release.wait_for(1);
    }));
    bs.push_back(backend_at(silent.back()->addr()));
  }
  auto lb = std::make_shared<LoadBalancer<RoundRobin>>(bs);
  HealthCheckService svc(lb, http_check(Millis(300)));
  const auto t0 = clock::now();
  run_task(svc.run_once());
  const double took = ms_since(t0);
  release.add();
  EXPECT_LT(took, 6 * 300 / 2) << "six 300 ms timeouts took " << took << " ms";
  for (const auto& st : lb->status()) EXPECT_FALSE(st.healthy);
}

// ---------------------------------------------------------------------------------------------
// The service running while traffic flows.

struct Rig {
  explicit Rig(std::shared_ptr<HealthCheck> check, HealthCheckConfig cfg, int n = 3,
               std::uint32_t passive = 0)
      : server(ServerConf{.threads = 2}) {
    std::vector<Backend> bs;
    for (int i = 0; i < n; ++i) {
      origins.push_back(std::make_unique<SwitchOrigin>(std::string(1, static_cast<char>('a' + i))));
      bs.push_back(backend_at(origins.back()->addr()));
    }
    LoadBalancerOptions lo;
    lo.on_health_change = std::ref(flips);
    lo.passive_failures = passive;
    lb = std::make_shared<LoadBalancer<RoundRobin>>(bs, lo);
    proxy = std::make_shared<Balanced>(lb);
    svc = http_proxy_service(proxy);
    EXPECT_TRUE(svc->add_tcp("127.0.0.1:0"));
    server.add_service(svc);
    if (check) {
      health = std::make_shared<HealthCheckService>(lb, std::move(check), cfg);
      server.add_background(health);
    }
    EXPECT_TRUE(server.start());
  }
  std::uint16_t port() { return svc->local_endpoints().at(0).port(); }
  /// Sends `n` requests on one connection; returns how many got 200.
  int send(int n) {
    int good = 0;
    pt::Client c(port());
    for (int i = 0; i < n; ++i) {
      auto r = c.get("/req");
      good += r && r->status == 200;
    }
    return good;
  }

  Flips flips;
  std::vector<std::unique_ptr<SwitchOrigin>> origins;
  std::shared_ptr<LoadBalancer<RoundRobin>> lb;
  std::shared_ptr<Balanced> proxy;
  std::shared_ptr<HttpProxyService> svc;
  std::shared_ptr<HealthCheckService> health;
  Server server;
};

TEST(LbHealthService, OriginGoesDownAndComesBackWhileTrafficFlows) {
  Rig rig(http_check(), {.interval = Millis(200)});
  ASSERT_EQ(rig.send(30), 30);
  auto& b = *rig.origins[1];
  const std::string baddr = b.addr_string();

  const auto killed = clock::now();
  b.stop();
  auto down = rig.flips.wait(baddr, false);
  ASSERT_TRUE(down) << "never marked down";
  std::printf("origin killed -> marked down in %.0f ms (interval 200 ms, threshold 1)\n",
              ms_since(killed, *down));
  EXPECT_LT(ms_since(killed, *down), 200 + 500);

  // After the failure threshold: every request succeeds and none even tries the dead backend.
  const int tried_before = rig.proxy->failures_to(baddr);
  EXPECT_EQ(rig.send(60), 60);
  EXPECT_EQ(rig.proxy->failures_to(baddr), tried_before);

  const std::size_t served_before = b.proxied();
  const std::size_t flips_before = rig.flips.size();
  const auto revived = clock::now();
  ASSERT_TRUE(b.start());
  auto up = rig.flips.wait(baddr, true, flips_before);
  ASSERT_TRUE(up) << "never marked up";
  // The next rotation reaches it.
  EXPECT_EQ(rig.send(6), 6);
  EXPECT_GT(b.proxied(), served_before);
  std::printf("origin revived -> marked up in %.0f ms, serving again\n", ms_since(revived, *up));
  EXPECT_LT(ms_since(revived, *up), 1000);
  EXPECT_GE(rig.health->stats().rounds, 2u);
}

TEST(LbHealthService, NoRequestReachesABackendMarkedDownEvenIfItStillAnswers) {
  Rig rig(http_check(),
          {.interval = Millis(100), .consecutive_success = 1, .consecutive_failure = 2});
  auto& b = *rig.origins[2];
  b.health_status = 503;  // its health endpoint fails; ordinary requests would still work
  ASSERT_TRUE(rig.flips.wait(b.addr_string(), false));
  const std::size_t before = b.proxied();
  EXPECT_EQ(rig.send(100), 100);
  EXPECT_EQ(b.proxied(), before);
  b.health_status = 200;
  ASSERT_TRUE(rig.flips.wait(b.addr_string(), true));
  EXPECT_EQ(rig.send(30), 30);
  EXPECT_EQ(b.proxied(), before + 10);
}

TEST(LbHealthService, PassiveHealthMarksDownAfterRealFailuresAndTheCheckBringsItBack) {
  // The active check runs rarely here, so traffic finds the dead backend first.
  auto counting = std::make_shared<CountingCheck>(std::make_shared<TcpHealthCheck>());
  Rig rig(counting, {.interval = Millis(60000)}, 3, /*passive=*/2);
  ASSERT_TRUE(counting->done.wait_for(3)) << "the first round (all up) is over";
  auto& b = *rig.origins[0];
  const std::string baddr = b.addr_string();
  b.stop();
  // Failed connects are retried on another backend: the client sees no error.
  EXPECT_EQ(rig.send(30), 30);
  ASSERT_TRUE(rig.flips.wait(baddr, false));
  EXPECT_EQ(rig.proxy->failures_to(baddr), 2) << "two consecutive failures, then never tried again";
  EXPECT_EQ(rig.lb->stats().passive_marked_down, 1u);
  EXPECT_FALSE(rig.lb->find(b.addr()).usable()) << "an active check runs: only it brings it back";
  ASSERT_TRUE(b.start());
  run_task(rig.health->run_once());  // the check, run now instead of in a minute
  EXPECT_TRUE(rig.lb->find(b.addr()).healthy());
  EXPECT_EQ(rig.send(6), 6);
  EXPECT_GT(b.proxied(), 0u);
}

// ---------------------------------------------------------------------------------------------
// Background services on the control thread, and embedded.

class Ticker : public BackgroundService {
 public:
  task<void> start(ShutdownWatch w) override {
    thread = std::this_thread::get_id();
    started.add();
    // Not `while (co_await ...)`: GCC 12 mis-addresses the by-value parameter `w` in a
    // co_await inside a condition.
    for (;;) {
      const bool slept = co_await w.sleep_for(Millis(5));
      if (!slept) break;
      ticks.add();
    }
    exited.add();
  }
  std::thread::id thread;
  Latch started, ticks, exited;
};

TEST(LbBackground, ServicesRunOnTheControlThreadAndStopOnShutdown) {
  auto before = std::make_shared<Ticker>(), after = std::make_shared<Ticker>();
  pt::Origin o;
  auto fwd = std::make_shared<Forward>(o.addr());
  auto svc = http_proxy_service(fwd);
  ASSERT_TRUE(svc->add_tcp("127.0.0.1:0"));
  Server server;
  server.add_service(svc);
  server.add_background(before);
  ASSERT_TRUE(server.start());
  server.add_background(after);  // after start: begins at once
  ASSERT_TRUE(before->ticks.wait_for(3));
  ASSERT_TRUE(after->ticks.wait_for(3));
  EXPECT_NE(before->thread, std::this_thread::get_id());
  EXPECT_EQ(before->thread, after->thread) << "one control thread";
  pt::Client c(svc->local_endpoints()[0].port());
  EXPECT_EQ(c.get("/")->status, 200u) << "traffic flows meanwhile";
  server.shutdown(true);
  EXPECT_TRUE(before->exited.wait_for(1)) << "the watch woke the sleeping service";
  EXPECT_TRUE(after->exited.wait_for(1));
  server.wait();
}

TEST(LbBackground, HealthCheckEmbeddedOnTheApplicationsIoContext) {
  SwitchOrigin a("a"), b("b");
  Flips flips;
  LoadBalancerOptions lo;
  lo.on_health_change = std::ref(flips);
  auto lb = std::make_shared<LoadBalancer<RoundRobin>>(
      std::vector<Backend>{backend_at(a.addr()), backend_at(b.addr())}, lo);
  auto hc = std::make_shared<HealthCheckService>(lb, std::make_shared<TcpHealthCheck>(),
                                                 HealthCheckConfig{.interval = Millis(20)});
  asio::io_context ioc(1);
  ShutdownWatch watch(ioc.get_executor());
  asio::co_spawn(ioc, hc->start(watch), asio::detached);
  std::thread loop([&] { ioc.run(); });
  b.stop();
  EXPECT_TRUE(flips.wait(b.addr_string(), false));
  watch.trigger();
  loop.join();  // run() returns: the service ended and nothing else is pending
  EXPECT_TRUE(watch.stopped());
}

// ---------------------------------------------------------------------------------------------
// The load_balancer example with three backends and an HTTP check every 200 ms: one backend is
// killed while a client sends requests, then comes back.

TEST(LbExample, KilledBackendLosesNoRequestAfterTheThresholdAndIsUsedAgainWithinASecond) {
  std::vector<std::unique_ptr<SwitchOrigin>> origins;
  std::vector<std::string> args = {"--health-check", "http",       "--health-interval-ms", "200",
                                   "--selection",    "round_robin"};
  for (char name : {'a', 'b', 'c'}) {
    origins.push_back(std::make_unique<SwitchOrigin>(std::string(1, name), "/"));
    args.push_back("--backend");
    args.push_back(origins.back()->addr_string());
  }
  args.insert(args.begin(), {"--listen", "127.0.0.1:0"});
  ExampleProcess child("load_balancer", args);
  ASSERT_NE(child.port(), 0) << "load_balancer did not start";

  struct Sample {
    clock::time_point at;
    bool ok;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Sample> samples;
  std::atomic<bool> stop{false};
  std::thread client([&] {
    auto c = std::make_unique<pt::Client>(child.port(), std::chrono::seconds(5));
    for (int i = 0; i < 1000000 && !stop; ++i) {
      auto r = c->get("/req");
      const bool good = r && r->status == 200;
      {
        std::lock_guard lk(mu);
        samples.push_back({clock::now(), good});
      }
      cv.notify_all();
      if (!good || !r->keep_alive)
        c = std::make_unique<pt::Client>(child.port(), std::chrono::seconds(5));
    }
  });
  auto wait_sample_after = [&](clock::time_point t) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, std::chrono::seconds(10),
                       [&] { return !samples.empty() && samples.back().at > t; });
  };
  for (auto& o : origins) ASSERT_TRUE(o->served.wait_for(1)) << "warm-up";

  auto& b = *origins[1];
  const auto killed = clock::now();
  b.stop();
  // Let traffic run for a second after the kill: far beyond one 200 ms check interval.
  ASSERT_TRUE(wait_sample_after(killed + Millis(1000)));
  const std::size_t served_at_revival = b.proxied();
  const auto revived = clock::now();
  ASSERT_TRUE(b.start());
  const bool used_again =
      b.served.wait_for(static_cast<int>(served_at_revival) + 1, std::chrono::seconds(5));
  const auto used_at = clock::now();
  ASSERT_TRUE(wait_sample_after(used_at));
  stop = true;
  client.join();

  ASSERT_TRUE(used_again) << "the revived backend never got a request";
  const clock::time_point threshold = killed + Millis(200 + 300);  // one interval, plus slack
  int lost = 0, lost_after_threshold = 0, total_after_kill = 0;
  double last_failure = -1;
  for (const auto& s : samples) {
    if (s.at < killed) continue;
    ++total_after_kill;
    if (s.ok) continue;
    ++lost;
    last_failure = ms_since(killed, s.at);
    if (s.at > threshold) ++lost_after_threshold;
  }
  std::printf(
      "example: %d requests after the kill, %d failed (last at %.0f ms), %d after the "
      "threshold; revived backend used again after %.0f ms\n",
      total_after_kill, lost, last_failure, lost_after_threshold, ms_since(revived, used_at));
  EXPECT_EQ(lost_after_threshold, 0);
  EXPECT_LT(ms_since(revived, used_at), 1000);
}

}  // namespace
}  // namespace itest
