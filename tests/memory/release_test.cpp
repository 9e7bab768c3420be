// Memory goes back to the system when connections go idle or leave, with mimalloc linked as the
// proxy examples link it (this executable does too; see tests/CMakeLists.txt). Raw sockets on
// the client side, so that the test's own allocations stay out of the process's RSS.
#include <mimalloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <latch>
#include <thread>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/memory.hpp"
#include "integration/helpers.hpp"

namespace itest {
namespace {

namespace memory = portico::detail::memory;

/// Resident memory of this process, in bytes.
long rss() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * ::sysconf(_SC_PAGESIZE);
}

TEST(MemoryRelease, WindowsTurnTheDecommitDelayOffWhileAnyIsOpen) {
  const long own = mi_option_get(mi_option_decommit_delay);
  mi_option_set(mi_option_decommit_delay, 40);  // as a user's MIMALLOC_DECOMMIT_DELAY would
  memory::release_begin();                      // worker 1
  EXPECT_EQ(mi_option_get(mi_option_decommit_delay), 0);
  memory::release_begin();  // worker 2, while 1's is open
  memory::release_end();    // worker 1's closes: 2's is still open
  EXPECT_EQ(mi_option_get(mi_option_decommit_delay), 0);
  memory::release_end();
  EXPECT_EQ(mi_option_get(mi_option_decommit_delay), 40) << "the user's delay is back";
  memory::release_end();  // one too many: nothing to close
  EXPECT_EQ(mi_option_get(mi_option_decommit_delay), 40);
  mi_option_set(mi_option_decommit_delay, own);
}

class Direct : public ProxyHttp<> {
 public:
  explicit Direct(SocketAddr origin) : peer_(make_peer(origin)) {}
  task<Result<HttpPeerPtr>> upstream_peer(Session&, NoCtx&) override { co_return peer_; }

 private:
  HttpPeerPtr peer_;
};

/// `n` keep-alive clients, each with one request answered: all connected and sent first, then
/// all answers read, so that the proxy holds all n connections busy at once.
std::vector<int> crowd(std::uint16_t port, int n) {
  std::vector<int> fds;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  static constexpr char kRequest[] = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
  for (int i = 0; i < n; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) break;
    fds.push_back(fd);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0 ||
        ::send(fd, kRequest, sizeof kRequest - 1, MSG_NOSIGNAL) != sizeof kRequest - 1) {
      ADD_FAILURE() << "client " << i << " could not send its request";
      break;
    }
  }
  for (const int fd : fds) {
    std::string got;
    char buf[512];
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (!got.ends_with("\r\n\r\nhello")) {  // bounded: the receive timeout ends a stall
      const ssize_t k = ::recv(fd, buf, sizeof buf, 0);
      if (k <= 0) break;
      got.append(buf, static_cast<std::size_t>(k));
    }
    EXPECT_TRUE(got.starts_with("HTTP/1.1 200") && got.ends_with("hello")) << got;
  }
  return fds;
}

// A crowd of clients goes idle: once the connections park, what they took while busy goes back
// to the system; and again when the crowd leaves.
// Workers ending their release windows at the same moment, the first ones in the process (ctest
// runs each test in a process of its own): glibc's allocator, never used with mimalloc in its
// place, is set up by the first malloc_trim, and a second thread entering meanwhile walked its
// bins unset (a crash seen in the sanitizer run).
TEST(MemoryRelease, WorkersReleasingAtOnceForTheFirstTimeDoNotRace) {
  constexpr int kThreads = 8;
  std::latch go(kThreads);
  std::vector<std::thread> ts;
  for (int i = 0; i < kThreads; ++i)
    ts.emplace_back([&] {
      memory::release_begin();
      go.arrive_and_wait();
      memory::release_end();
    });
  for (auto& t : ts) t.join();
  SUCCEED() << "no crash";
}

TEST(MemoryRelease, AnIdleCrowdAndACrowdThatLeftGiveTheirMemoryBack) {
  // Each client takes four descriptors here: its socket, the proxy's, and an upstream connection
  // at both ends (the origin runs in this process too).
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = files.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &files);
  if (files.rlim_cur < 4 * 2000 + 256)
    GTEST_SKIP() << "open-files limit too low: " << files.rlim_cur;
  pt::Origin origin(pt::Origin::text("hello"));
  HttpServerOptions opts;
  opts.keepalive_park_after = std::chrono::milliseconds(300);
  opts.pool_max_idle_total = 16;  // the upstream connections the crowd took are not kept
  auto svc = http_proxy_service(std::make_shared<Direct>(origin.addr()), opts, "mem");
  ASSERT_TRUE(svc->add_tcp("127.0.0.1:0"));
  Server server(ServerConf{.threads = 1});
  server.add_service(svc);
  ASSERT_TRUE(server.start());
  const auto port = svc->local_endpoints().at(0).port();
  for (const int fd : crowd(port, 16)) ::close(fd);  // warm-up: the first allocations are made
  const long before = rss();

  constexpr int kClients = 2000;
  std::vector<int> fds = crowd(port, kClients);
  ASSERT_EQ(fds.size(), static_cast<std::size_t>(kClients));
  const long busy = rss() - before;  // all connections busy, none parked yet
  ASSERT_GT(busy, kClients * 4L * 1024) << "the busy connections hold their buffers";
  EXPECT_TRUE(eventually([&] { return rss() - before < busy / 4; }))
      << "idle: " << (rss() - before) / 1024 << " KiB of " << busy / 1024 << " KiB kept";

  // Woken again (each serves a request), then gone.
  static constexpr char kRequest[] = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
  for (const int fd : fds) ::send(fd, kRequest, sizeof kRequest - 1, MSG_NOSIGNAL);
  for (const int fd : fds) {
    char buf[512];
    EXPECT_GT(::recv(fd, buf, sizeof buf, 0), 0);
  }
  for (const int fd : fds) ::close(fd);
  EXPECT_TRUE(eventually([&] { return rss() - before < busy / 4; }))
      << "after the close: " << (rss() - before) / 1024 << " KiB of " << busy / 1024 << " KiB kept";
  server.shutdown(false);
  server.wait();
}

}  // namespace
}  // namespace itest
