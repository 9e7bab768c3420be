// The example binary under real signals: SIGTERM drains, SIGINT exits at once.
#include "integration/helpers.hpp"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cstdio>

extern char** environ;

using namespace itest;
using portico::testing::Client;
using portico::testing::RawOrigin;

namespace {

/// reverse_proxy in a child process; the constructor waits for its "listening on" line.
class Child {
 public:
  explicit Child(const std::string& upstream) {
    int fds[2];
    if (::pipe(fds) != 0) return;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    std::string bin(PORTICO_EXAMPLES_DIR);
    bin += "/reverse_proxy";
    std::vector<std::string> args = {bin, "--listen", "127.0.0.1:0", "--upstream", upstream};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, bin.c_str(), &fa, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    FILE* out = ::fdopen(fds[0], "r");
    char line[256];
    // Bounded by the child: it prints the line or exits (EOF).
    while (out && std::fgets(line, sizeof line, out)) {
      std::string l(line);
      auto at = l.find("listening on 127.0.0.1:");
      if (at != std::string::npos) {
        port_ = static_cast<std::uint16_t>(std::stoi(l.substr(at + 23)));
        break;
      }
    }
    out_ = out;
  }
  ~Child() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_) std::fclose(out_);
  }
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

}  // namespace

TEST(Signals, SigtermLetsTheInFlightRequestFinish) {
  Latch got, release;
  RawOrigin origin([&](int fd) {
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    got.add();
    release.wait_for(1, 10s);
    pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ndrained!");
  });
  Child child(origin.addr().to_string());
  ASSERT_NE(child.port(), 0);
  Client c(child.port(), 15s);
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  ASSERT_TRUE(got.wait_for(1));
  child.signal(SIGTERM);
  release.add();
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "drained!");
  int st = child.wait();
  EXPECT_TRUE(WIFEXITED(st)) << st;
  EXPECT_EQ(WEXITSTATUS(st), 0);
}

TEST(Signals, SigintExitsAtOnce) {
  Latch got;
  RawOrigin origin([&](int fd) {
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    got.add();
    char b;
    ::recv(fd, &b, 1, 0);  // hold the request until the proxy goes away
  });
  Child child(origin.addr().to_string());
  ASSERT_NE(child.port(), 0);
  Client c(child.port(), 15s);
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  ASSERT_TRUE(got.wait_for(1));
  const auto t0 = std::chrono::steady_clock::now();
  child.signal(SIGINT);
  int st = child.wait();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_TRUE(WIFEXITED(st)) << st;
  EXPECT_TRUE(c.closed_by_peer());
}
