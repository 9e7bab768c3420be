// Operations under real signals, on the reverse_proxy binary: graceful upgrade (SIGQUIT + -u)
// under load, SIGTERM draining, SIGHUP reloading the configuration file, daemon mode with its
// pid file and readiness, SIGUSR1 reopening the error log. Every wait is a bounded poll.
#include "integration/helpers.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

extern char** environ;

using namespace itest;
using portico::testing::Client;
using portico::testing::RawOrigin;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::trunc);
  out << text;
}

/// A scratch directory for configuration, sockets, logs and pid files.
struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/portico_ops_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path operator/(const std::string& name) const { return path / name; }
  fs::path path;
};

/// reverse_proxy in a child process, its stdout on a pipe and its stderr in a file.
class Proc {
 public:
  Proc(std::vector<std::string> args, const fs::path& stderr_file) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, stderr_file.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    std::string bin = std::string(PORTICO_EXAMPLES_DIR) + "/reverse_proxy";
    args.insert(args.begin(), bin);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, bin.c_str(), &fa, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    out_ = fds[0];
  }
  ~Proc() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
  }
  pid_t pid() const { return pid_; }
  void signal(int s) const { ::kill(pid_, s); }

  /// Reads stdout until a "listening on 127.0.0.1:PORT" line; the port, or 0 after `limit` or
  /// at EOF.
  std::uint16_t wait_listening(std::chrono::milliseconds limit = 20s) {
    const auto end = std::chrono::steady_clock::now() + limit;
    for (;;) {
      if (auto at = buf_.find("listening on 127.0.0.1:"); at != std::string::npos) {
        auto nl = buf_.find('\n', at);
        if (nl != std::string::npos) return static_cast<std::uint16_t>(std::stoi(buf_.substr(at + 23)));
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return 0;
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char b[512];
      ssize_t n = ::read(out_, b, sizeof b);
      if (n <= 0) return 0;
      buf_.append(b, static_cast<std::size_t>(n));
    }
  }
  /// The exit status, or -1 when the process is still running after `limit`.
  int wait_exit(std::chrono::milliseconds limit = 20s) {
    int st = -1;
    const bool done = eventually(
        [&] {
          int s = 0;
          if (::waitpid(pid_, &s, WNOHANG) != pid_) return false;
          st = s;
          return true;
        },
        limit);
    if (done) reaped_ = true;
    return done ? st : -1;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string buf_;
  bool reaped_ = false;
};

int exit_code(int st) { return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1; }

/// A minimal HTTP/1.1 client for the load: reports whether a response started at all, which a
/// client needs to know to retry a request on a reused keep-alive connection the server closed.
class Conn {
 public:
  explicit Conn(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) close();
    timeval tv{10, 0};
    if (fd_ >= 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~Conn() { close(); }
  bool open() const { return fd_ >= 0; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  enum class Outcome { Ok, NoResponse, Failed };
  /// One GET; `status` gets the status code. NoResponse: not a byte came back.
  Outcome get(int& status, bool& server_closes) {
    static const std::string req = "GET /load HTTP/1.1\r\nHost: h\r\n\r\n";
    if (::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size()))
      return Outcome::NoResponse;
    std::string in;
    char b[4096];
    for (;;) {
      auto head_end = in.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        status = std::atoi(in.c_str() + 9);
        std::string head = in.substr(0, head_end);
        for (auto& ch : head) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        auto cl = head.find("content-length:");
        if (cl == std::string::npos) return Outcome::Failed;
        const std::size_t len = std::stoul(head.substr(cl + 15));
        if (in.size() >= head_end + 4 + len) {
          server_closes = head.find("connection: close") != std::string::npos;
          return Outcome::Ok;
        }
      }
      ssize_t n = ::recv(fd_, b, sizeof b, 0);
      if (n <= 0) return in.empty() ? Outcome::NoResponse : Outcome::Failed;
      in.append(b, static_cast<std::size_t>(n));
    }
  }

 private:
  int fd_ = -1;
};

/// Steady load from several threads: keep-alive connections and a new connection per request.
/// A request that got no byte back on a reused keep-alive connection is retried on a new one,
/// as HTTP clients do (the server may close an idle connection as the request arrives); every
/// other failure counts.
class Load {
 public:
  Load(std::uint16_t port, int keepalive_threads, int fresh_threads) : port_(port) {
    for (int i = 0; i < keepalive_threads; ++i) threads_.emplace_back([this] { run(true); });
    for (int i = 0; i < fresh_threads; ++i) threads_.emplace_back([this] { run(false); });
  }
  ~Load() { stop(); }
  void stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  std::atomic<std::uint64_t> ok{0}, failed{0}, retried{0};
  std::mutex mu;
  std::vector<std::string> failures;  // under mu, the first few

 private:
  void fail(const std::string& what) {
    ++failed;
    std::lock_guard lk(mu);
    if (failures.size() < 10) failures.push_back(what);
  }
  void run(bool keepalive) {
    std::unique_ptr<Conn> c;
    bool reused = false;
    while (!stop_) {
      if (!c || !c->open()) {
        c = std::make_unique<Conn>(port_);
        reused = false;
        if (!c->open()) {
          fail("connect refused");
          continue;
        }
      }
      int status = 0;
      bool closes = false;
      auto o = c->get(status, closes);
      if (o == Conn::Outcome::NoResponse && reused) {
        ++retried;
        c.reset();
        continue;
      }
      if (o != Conn::Outcome::Ok) {
        fail(o == Conn::Outcome::NoResponse ? "no response on a new connection" : "cut response");
        c.reset();
        continue;
      }
      if (status != 200) fail("status " + std::to_string(status));
      else ++ok;
      if (!keepalive || closes) c.reset();
      else reused = true;
    }
  }
  std::uint16_t port_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

/// A GET with `extra` header fields on a new connection; the status or 0.
int get_status(std::uint16_t port, int extra_fields) {
  Client c(port, 5s);
  std::string req = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < extra_fields; ++i) req += "X-F" + std::to_string(i) + ": v\r\n";
  req += "\r\n";
  if (!c.send(req)) return 0;
  auto r = c.read_response();
  return r ? r->status : 0;
}

std::string bin() { return std::string(PORTICO_EXAMPLES_DIR) + "/reverse_proxy"; }

}  // namespace

// Three consecutive upgrades under load (keep-alive and new connections): every request gets a
// 200, each old process exits, and the last one still serves. The new processes have 1, 3 and
// 2 workers: fewer and more sockets than workers are both adopted.
TEST(Ops, ThreeUpgradesUnderLoadLoseNoRequest) {
  TempDir dir;
  pt::Origin origin(pt::Origin::text("ok"));
  const fs::path conf = dir / "conf.yaml";
  spit(conf, "upgrade_sock: " + (dir / "upgrade.sock").string() + "\ngrace_period_seconds: 10\n");
  const std::string up = origin.addr().to_string();
  auto first = std::make_unique<Proc>(
      std::vector<std::string>{"-c", conf.string(), "--listen", "127.0.0.1:0", "--upstream", up,
                               "--threads", "2"},
      dir / "p0.err");
  const std::uint16_t port = first->wait_listening();
  ASSERT_NE(port, 0) << slurp(dir / "p0.err");
  const std::string listen = "127.0.0.1:" + std::to_string(port);

  Load load(port, 3, 3);
  ASSERT_TRUE(eventually([&] { return load.ok > 200; }))
      << load.failed << " failed, first: "
      << (load.failures.empty() ? "" : load.failures.front()) << "\n"
      << slurp(dir / "p0.err");
  std::unique_ptr<Proc> old = std::move(first);
  const char* threads[] = {"1", "3", "2"};
  for (int round = 0; round < 3; ++round) {
    const std::string err = "p" + std::to_string(round + 1) + ".err";
    fs::remove(dir / "upgrade.sock");
    auto next = std::make_unique<Proc>(
        std::vector<std::string>{"-u", "-c", conf.string(), "--listen", listen, "--upstream", up,
                                 "--threads", threads[round]},
        dir / err);
    ASSERT_TRUE(eventually([&] { return fs::exists(dir / "upgrade.sock"); })) << slurp(dir / err);
    old->signal(SIGQUIT);
    ASSERT_EQ(next->wait_listening(), port) << slurp(dir / err);
    const int st = old->wait_exit(20s);
    EXPECT_EQ(exit_code(st), 0) << "old process of round " << round << " status " << st << "\n"
                                << slurp(dir / ("p" + std::to_string(round) + ".err"));
    old = std::move(next);
    const auto before = load.ok.load();
    ASSERT_TRUE(eventually([&] { return load.ok > before + 200; }))
        << "no traffic after round " << round;
  }
  load.stop();
  std::printf("upgrade load: %llu ok, %llu failed, %llu keep-alive retries\n",
              static_cast<unsigned long long>(load.ok.load()),
              static_cast<unsigned long long>(load.failed.load()),
              static_cast<unsigned long long>(load.retried.load()));
  EXPECT_EQ(load.failed, 0u) << (load.failures.empty() ? "" : load.failures.front());
  for (int i = 0; i <= 3; ++i) {
    const std::string log = slurp(dir / ("p" + std::to_string(i) + ".err"));
    if (load.failed) std::printf("--- p%d\n%s", i, log.c_str());
  }
  EXPECT_EQ(get_status(port, 0), 200);
  old->signal(SIGTERM);
  EXPECT_EQ(exit_code(old->wait_exit()), 0);
}

// -u with no old process to hand anything over: a clear message and a non-zero exit.
TEST(Ops, UpgradeWithNothingToReceiveFails) {
  TempDir dir;
  spit(dir / "conf.yaml", "upgrade_sock: " + (dir / "up.sock").string() +
                              "\nupgrade_sock_connect_accept_max_retries: 1\n");
  Proc p({"-u", "-c", (dir / "conf.yaml").string(), "--listen", "127.0.0.1:0", "--upstream",
          "127.0.0.1:9"},
         dir / "err");
  const int st = p.wait_exit(15s);
  EXPECT_EQ(exit_code(st), 1);
  EXPECT_NE(slurp(dir / "err").find("no listening sockets received"), std::string::npos)
      << slurp(dir / "err");
}

// SIGQUIT with no new process listening: the old one says so and keeps serving.
TEST(Ops, FailedHandoverKeepsServing) {
  TempDir dir;
  pt::Origin origin(pt::Origin::text("ok"));
  spit(dir / "conf.yaml", "upgrade_sock: " + (dir / "up.sock").string() +
                              "\nupgrade_sock_connect_accept_max_retries: 1\n");
  Proc p({"-c", (dir / "conf.yaml").string(), "--listen", "127.0.0.1:0", "--upstream",
          origin.addr().to_string()},
         dir / "err");
  const auto port = p.wait_listening();
  ASSERT_NE(port, 0);
  p.signal(SIGQUIT);
  ASSERT_TRUE(eventually([&] { return slurp(dir / "err").find("still serving") != std::string::npos; }))
      << slurp(dir / "err");
  EXPECT_EQ(get_status(port, 0), 200);
  p.signal(SIGTERM);
  EXPECT_EQ(exit_code(p.wait_exit()), 0);
}

// SIGTERM with requests in flight on a slow origin: they complete, an idle keep-alive connection
// is closed at once, and the process exits when they are done, well within the grace period.
TEST(Ops, SigtermDrainsInFlightRequestsWithinTheGracePeriod) {
  TempDir dir;
  Latch arrived;
  RawOrigin origin([&](int fd) {
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    arrived.add();
    std::this_thread::sleep_for(1s);  // the slow origin itself, not a synchronisation
    pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow");
  });
  spit(dir / "conf.yaml", "grace_period_seconds: 10\ngraceful_shutdown_timeout_seconds: 1\n");
  Proc p({"-c", (dir / "conf.yaml").string(), "--listen", "127.0.0.1:0", "--upstream",
          origin.addr().to_string(), "--threads", "2"},
         dir / "err");
  const auto port = p.wait_listening();
  ASSERT_NE(port, 0);
  Client idle(port, 5s);
  ASSERT_TRUE(idle.connected());
  constexpr int kInFlight = 4;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kInFlight; ++i) {
    clients.push_back(std::make_unique<Client>(port, 15s));
    ASSERT_TRUE(clients.back()->send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n"));
  }
  ASSERT_TRUE(arrived.wait_for(kInFlight));
  const auto t0 = std::chrono::steady_clock::now();
  p.signal(SIGTERM);
  EXPECT_TRUE(idle.closed_by_peer());
  for (auto& c : clients) {
    auto r = c->read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "slow");
  }
  EXPECT_EQ(exit_code(p.wait_exit(10s)), 0);
  const auto took = std::chrono::steady_clock::now() - t0;
  std::printf("SIGTERM to exit with %d requests in flight (1 s origin): %lld ms\n", kInFlight,
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
  EXPECT_LT(took, 5s);
}

// grace_period_seconds from the file applies: a request that never ends does not hold the exit.
TEST(Ops, SigtermExitsWhenTheGracePeriodIsOver) {
  TempDir dir;
  Latch arrived, done;
  RawOrigin origin([&](int fd) {
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    arrived.add();
    done.wait_for(1, 30s);  // never answers while the test runs
  });
  spit(dir / "conf.yaml", "grace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 1\n");
  Proc p({"-c", (dir / "conf.yaml").string(), "--listen", "127.0.0.1:0", "--upstream",
          origin.addr().to_string()},
         dir / "err");
  const auto port = p.wait_listening();
  ASSERT_NE(port, 0);
  Client c(port, 15s);
  ASSERT_TRUE(c.send("GET /hang HTTP/1.1\r\nHost: h\r\n\r\n"));
  ASSERT_TRUE(arrived.wait_for(1));
  const auto t0 = std::chrono::steady_clock::now();
  p.signal(SIGTERM);
  EXPECT_EQ(exit_code(p.wait_exit(10s)), 0);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 900ms);
  EXPECT_LT(took, 4s);
  done.add();
}

// SIGHUP re-reads -c: a smaller header count limit refuses what was accepted (431) on new
// connections while an open keep-alive connection keeps working; a broken file keeps the
// running configuration; a key that needs a restart is named.
TEST(Ops, SighupReloadsTheConfigurationFile) {
  TempDir dir;
  pt::Origin origin(pt::Origin::text("ok"));
  const fs::path conf = dir / "conf.yaml";
  spit(conf, "limits:\n  max_header_count: 50\n");
  Proc p({"-c", conf.string(), "--listen", "127.0.0.1:0", "--upstream", origin.addr().to_string()},
         dir / "err");
  const auto port = p.wait_listening();
  ASSERT_NE(port, 0);
  EXPECT_EQ(get_status(port, 10), 200);
  Client kept(port, 5s);
  auto r = kept.get("/before");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);

  spit(conf, "limits:\n  max_header_count: 5\nthreads: 3\n");
  p.signal(SIGHUP);
  ASSERT_TRUE(eventually([&] {
    return slurp(dir / "err").find("SIGHUP: configuration reloaded") != std::string::npos;
  })) << slurp(dir / "err");
  EXPECT_NE(slurp(dir / "err").find("need a restart (or an upgrade) and were not applied: threads"),
            std::string::npos)
      << slurp(dir / "err");
  EXPECT_EQ(get_status(port, 10), 431);
  EXPECT_EQ(get_status(port, 2), 200);
  r = kept.get("/after");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);

  spit(conf, "limits:\n  max_header_count: 50\nthraeds: 2\n");
  p.signal(SIGHUP);
  ASSERT_TRUE(eventually([&] {
    return slurp(dir / "err").find("configuration not reloaded") != std::string::npos;
  })) << slurp(dir / "err");
  EXPECT_NE(slurp(dir / "err").find("thraeds"), std::string::npos);
  EXPECT_EQ(get_status(port, 10), 431);
  p.signal(SIGTERM);
  EXPECT_EQ(exit_code(p.wait_exit()), 0);
}

// -d returns once the daemon listens, the pid file names it, SIGTERM stops it and removes the
// pid file; an existing pid file becomes "<pid_file>.old".
TEST(Ops, DaemonStartsReportsReadyAndStops) {
  TempDir dir;
  pt::Origin origin(pt::Origin::text("ok"));
  const fs::path pid_file = dir / "portico.pid";
  spit(pid_file, "12345\n");
  spit(dir / "conf.yaml", "pid_file: " + pid_file.string() + "\nerror_log: " +
                              (dir / "error.log").string() + "\n");
  Proc parent({"-d", "-c", (dir / "conf.yaml").string(), "--listen", "127.0.0.1:0", "--upstream",
               origin.addr().to_string()},
              dir / "parent.err");
  const auto port = parent.wait_listening();
  ASSERT_NE(port, 0) << slurp(dir / "parent.err");
  EXPECT_EQ(exit_code(parent.wait_exit()), 0) << slurp(dir / "parent.err");
  EXPECT_EQ(slurp(dir / "portico.pid.old"), "12345\n");
  const pid_t daemon = static_cast<pid_t>(std::atol(slurp(pid_file).c_str()));
  ASSERT_GT(daemon, 1);
  EXPECT_NE(daemon, parent.pid());
  EXPECT_EQ(::kill(daemon, 0), 0);
  EXPECT_EQ(get_status(port, 0), 200);
  EXPECT_NE(slurp(dir / "error.log").find("portico started"), std::string::npos);
  ::kill(daemon, SIGTERM);
  // Not our child (it was reparented): its pid file going away marks the exit.
  EXPECT_TRUE(eventually([&] { return !fs::exists(pid_file); }));
  EXPECT_TRUE(eventually([&] { return get_status(port, 0) == 0; }));
  EXPECT_NE(slurp(dir / "error.log").find("portico stopped"), std::string::npos);
}

// user/group: the listeners are bound as root, then the process runs as the configured user.
TEST(Ops, UserAndGroupAreSwitchedAfterBinding) {
  if (::geteuid() != 0) GTEST_SKIP() << "switching user needs root";
  if (!::getpwnam("nobody") || !::getgrnam("nogroup")) GTEST_SKIP() << "no nobody/nogroup here";
  TempDir dir;
  pt::Origin origin(pt::Origin::text("ok"));
  spit(dir / "conf.yaml", "user: nobody\ngroup: nogroup\n");
  Proc p({"-c", (dir / "conf.yaml").string(), "--listen", "127.0.0.1:0", "--upstream",
          origin.addr().to_string()},
         dir / "err");
  const auto port = p.wait_listening();
  ASSERT_NE(port, 0) << slurp(dir / "err");
  const std::string status = slurp("/proc/" + std::to_string(p.pid()) + "/status");
  const passwd* pw = ::getpwnam("nobody");
  const group* gr = ::getgrnam("nogroup");
  const std::string uid = std::to_string(pw->pw_uid), gid = std::to_string(gr->gr_gid);
  // "Uid:\treal\teffective\tsaved\tfs": every one of them is nobody's.
  EXPECT_NE(status.find("Uid:\t" + uid + "\t" + uid + "\t" + uid + "\t" + uid), std::string::npos)
      << status;
  EXPECT_NE(status.find("Gid:\t" + gid + "\t" + gid + "\t" + gid + "\t" + gid), std::string::npos)
      << status;
  EXPECT_EQ(get_status(port, 0), 200) << "still serves after dropping root";
  p.signal(SIGTERM);
  EXPECT_EQ(exit_code(p.wait_exit()), 0) << slurp(dir / "err");
}

// -d on a port already in use: the parent exits 1 and says why.
TEST(Ops, DaemonOnABusyPortFailsVisibly) {
  TempDir dir;
  int busy = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(busy, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(busy, 1), 0);
  socklen_t len = sizeof a;
  ::getsockname(busy, reinterpret_cast<sockaddr*>(&a), &len);
  const std::string addr = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  spit(dir / "conf.yaml", "pid_file: " + (dir / "p.pid").string() + "\n");
  Proc parent({"-d", "-c", (dir / "conf.yaml").string(), "--listen", addr, "--upstream",
               "127.0.0.1:9"},
              dir / "parent.err");
  EXPECT_EQ(exit_code(parent.wait_exit()), 1);
  const std::string err = slurp(dir / "parent.err");
  EXPECT_NE(err.find("listen on " + addr), std::string::npos) << err;
  EXPECT_NE(err.find("in use"), std::string::npos) << err;
  EXPECT_TRUE(eventually([&] { return !fs::exists(dir / "p.pid"); }));
  ::close(busy);
}

// SIGUSR1 reopens the error log after logrotate renamed it.
TEST(Ops, SigusrOneReopensTheErrorLog) {
  TempDir dir;
  pt::Origin origin(pt::Origin::text("ok"));
  const fs::path log = dir / "error.log";
  spit(dir / "conf.yaml", "error_log: " + log.string() + "\n");
  Proc p({"-c", (dir / "conf.yaml").string(), "--listen", "127.0.0.1:0", "--upstream",
          origin.addr().to_string()},
         dir / "err");
  ASSERT_NE(p.wait_listening(), 0);
  ASSERT_TRUE(eventually([&] { return slurp(log).find("portico started") != std::string::npos; }));
  fs::rename(log, dir / "error.log.1");
  p.signal(SIGUSR1);
  ASSERT_TRUE(eventually([&] {
    return fs::exists(log) && slurp(log).find("error log reopened") != std::string::npos;
  })) << slurp(dir / "error.log.1");
  p.signal(SIGTERM);
  EXPECT_EQ(exit_code(p.wait_exit()), 0);
  EXPECT_NE(slurp(log).find("portico stopped"), std::string::npos);
  EXPECT_EQ(slurp(dir / "error.log.1").find("portico stopped"), std::string::npos);
}
