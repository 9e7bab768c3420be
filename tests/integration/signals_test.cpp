// The example binary under real signals: SIGTERM drains, SIGINT exits at once.
#include "integration/helpers.hpp"

using namespace itest;
using portico::testing::Client;
using portico::testing::RawOrigin;

TEST(Signals, SigtermLetsTheInFlightRequestFinish) {
  Latch got, release;
  RawOrigin origin([&](int fd) {
    std::string extra;
    if (pt::read_head(fd, extra).empty()) return;
    got.add();
    release.wait_for(1, 10s);
    pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ndrained!");
  });
  ExampleProcess child("reverse_proxy",
                       {"--listen", "127.0.0.1:0", "--upstream", origin.addr().to_string()});
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
  ExampleProcess child("reverse_proxy",
                       {"--listen", "127.0.0.1:0", "--upstream", origin.addr().to_string()});
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
