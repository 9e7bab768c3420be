// Shared pieces of the integration tests.
#pragma once

#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <portico/portico.hpp>
#include <portico/testing/client.hpp>
#include <portico/testing/origin.hpp>
#include <portico/testing/proxy.hpp>

extern char** environ;

namespace itest {

using namespace portico;
using namespace std::chrono_literals;
namespace pt = portico::testing;

/// Polls `cond` every millisecond until it holds, for at most `limit`: for conditions that
/// nothing signals (a counter in another process, a file appearing).
template <class Pred>
bool eventually(Pred cond, std::chrono::milliseconds limit = 10s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(1ms);
  }
}

/// A deterministic body of `n` bytes (xorshift) that no shifted copy of itself matches.
inline std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  std::uint32_t x = 2463534242u;
  for (auto& c : s) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x);
  }
  return s;
}

/// Runs a coroutine to completion on a private io_context and returns its result.
template <class T>
T run_task(task<T> t) {
  boost::asio::io_context ctx(1);
  std::optional<T> out;
  boost::asio::co_spawn(ctx, std::move(t), [&](std::exception_ptr e, T v) {
    if (e) std::rethrow_exception(e);
    out.emplace(std::move(v));
  });
  ctx.run();
  return std::move(*out);
}
inline void run_task(task<void> t) {
  boost::asio::io_context ctx(1);
  boost::asio::co_spawn(ctx, std::move(t), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  ctx.run();
}

#ifdef PORTICO_EXAMPLES_DIR
/// An example binary (built next to the tests, in PORTICO_EXAMPLES_DIR) in a child process. The
/// constructor waits for its "listening on 127.0.0.1:PORT" line, or its exit (port() is 0 then);
/// the destructor kills it unless wait() reaped it.
class ExampleProcess {
 public:
  ExampleProcess(const std::string& name, std::vector<std::string> args) {
    int fds[2];
    if (::pipe(fds) != 0) return;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    std::string bin = std::string(PORTICO_EXAMPLES_DIR) + "/" + name;
    args.insert(args.begin(), bin);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, bin.c_str(), &fa, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    out_ = ::fdopen(fds[0], "r");
    char line[512];
    // Bounded by the child: it prints the line or exits (EOF).
    while (out_ && std::fgets(line, sizeof line, out_)) {
      std::string l(line);
      auto at = l.find("listening on 127.0.0.1:");
      if (at != std::string::npos) {
        port_ = static_cast<std::uint16_t>(std::stoi(l.substr(at + 23)));
        break;
      }
    }
  }
  ~ExampleProcess() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_) std::fclose(out_);
  }
  ExampleProcess(const ExampleProcess&) = delete;
  ExampleProcess& operator=(const ExampleProcess&) = delete;

  std::uint16_t port() const { return port_; }
  void signal(int s) { ::kill(pid_, s); }
  /// Waits for the exit; returns the status, or -1.
  int wait() {
    int st = 0;
    if (::waitpid(pid_, &st, 0) != pid_) return -1;
    reaped_ = true;
    return st;
  }

 private:
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  FILE* out_ = nullptr;
  bool reaped_ = false;
};
#endif

/// A loopback port with nothing listening: connecting to it is refused. The port stays bound
/// (not listening) until the process exits: a port closed at once could be handed to the next
/// bind to port 0 in the process, a proxy's own listener, which would then connect to itself
/// without end (seen once in CI: thousands of connections, then "Too many open files").
inline std::uint16_t dead_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);  // fd is kept open on purpose
}

/// Counts events across threads and lets a test wait for them without sleeping.
class Latch {
 public:
  void add(int n = 1) {
    std::lock_guard lk(mu_);
    count_ += n;
    cv_.notify_all();
  }
  bool wait_for(int n, std::chrono::milliseconds t = 10s) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, t, [&] { return count_ >= n; });
  }
  int count() {
    std::lock_guard lk(mu_);
    return count_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_ = 0;
};

/// A proxy to one fixed peer that counts finished requests (logging) and keeps the last error.
class Forward : public ProxyHttp<> {
 public:
  explicit Forward(SocketAddr upstream) : peer_(make_peer(upstream)) {}
  explicit Forward(HttpPeerPtr peer) : peer_(std::move(peer)) {}
  task<Result<HttpPeerPtr>> upstream_peer(Session&, NoCtx&) override { co_return peer_; }
  task<void> logging(Session& s, const Error* e, NoCtx&) override {
    {
      std::lock_guard lk(mu);
      last_error = e ? std::optional<Error>(*e) : std::nullopt;
      last_status = s.response_status();
      last_reused = s.upstream_reused();
      last_retries = s.retries();
    }
    logged.add();
    co_return;
  }
  std::mutex mu;
  std::optional<Error> last_error;
  std::uint16_t last_status = 0;
  bool last_reused = false;
  std::uint32_t last_retries = 0;
  Latch logged;

 private:
  HttpPeerPtr peer_;
};

/// Forward that remembers which worker thread served each request.
class ThreadTagging : public Forward {
 public:
  using Forward::Forward;
  task<Result<HttpPeerPtr>> upstream_peer(Session& s, NoCtx& c) override {
    {
      std::lock_guard lk(tmu);
      threads.insert(std::this_thread::get_id());
    }
    co_return co_await Forward::upstream_peer(s, c);
  }
  std::size_t distinct_threads() {
    std::lock_guard lk(tmu);
    return threads.size();
  }
  std::mutex tmu;
  std::set<std::thread::id> threads;
};

/// Reads from `fd` until EOF, an error or `limit` bytes; returns what arrived.
inline std::string read_until_close(int fd, std::size_t limit = 64 << 20) {
  std::string out;
  char buf[65536];
  while (out.size() < limit) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

}  // namespace itest
