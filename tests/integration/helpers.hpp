// Shared pieces of the integration tests.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
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

/// A loopback port with nothing listening: connecting to it is refused.
inline std::uint16_t dead_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
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
