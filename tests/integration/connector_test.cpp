// Connecting to upstreams: Unix sockets, a bind address, the PROXY protocol header.
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <thread>

#include <gtest/gtest.h>

#include "integration/helpers.hpp"

namespace itest {
namespace {

using pt::Client;
using pt::RawOrigin;

/// The local port of a connected socket.
std::uint16_t local_port(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

/// Reads one request head from `fd` into `buf` (keeping bytes that follow it there) and returns
/// it; a PROXY v2 header in front of it (which itself starts with CRLF CRLF) is part of it.
std::string next_head(int fd, std::string& buf) {
  static const std::string kV2("\r\n\r\n\0\r\nQUIT\n", 12);
  char tmp[4096];
  for (;;) {
    std::size_t from = 0;
    if (buf.compare(0, kV2.size(), kV2) == 0 && buf.size() >= 16)
      from = 16 + ((static_cast<unsigned char>(buf[14]) << 8) | static_cast<unsigned char>(buf[15]));
    if (buf.size() >= from) {
      auto pos = buf.find("\r\n\r\n", from);
      if (pos != std::string::npos && (from > 0 || buf.compare(0, kV2.size(), kV2) != 0)) {
        std::string head = buf.substr(0, pos + 4);
        buf.erase(0, pos + 4);
        return head;
      }
    }
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return {};
    buf.append(tmp, static_cast<std::size_t>(n));
  }
}

/// An origin that records every request head (with what came before it on the connection) and
/// the address each connection came from.
struct RecordingOrigin {
  RecordingOrigin()
      : origin([this](int fd) {
          std::string buf;
          for (;;) {
            std::string head = next_head(fd, buf);
            if (head.empty()) return;
            {
              std::lock_guard lk(mu);
              heads.push_back(head);
              sockaddr_in peer{};
              socklen_t len = sizeof peer;
              ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len);
              char ip[INET_ADDRSTRLEN] = {};
              ::inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
              peers.emplace_back(ip);
            }
            if (!pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) return;
          }
        }) {}
  std::vector<std::string> snapshot() {
    std::lock_guard lk(mu);
    return heads;
  }
  std::mutex mu;
  std::vector<std::string> heads;
  std::vector<std::string> peers;
  RawOrigin origin;
};

HttpPeerPtr peer_with(SocketAddr a, auto&& set) {
  auto p = std::make_shared<HttpPeer>(a, false);
  set(p->options);
  return p;
}

TEST(Connector, ProxyProtocolV1HeaderPrecedesTheFirstRequest) {
  RecordingOrigin o;
  auto fwd = std::make_shared<Forward>(
      peer_with(o.origin.addr(), [](PeerOptions& po) { po.proxy_protocol = ProxyProtocol::V1; }));
  pt::TestProxy px(fwd);
  Client c(px.port());
  ASSERT_TRUE(c.get("/a"));
  ASSERT_TRUE(c.get("/b"));
  auto heads = o.snapshot();
  ASSERT_EQ(heads.size(), 2u);
  const std::string want = "PROXY TCP4 127.0.0.1 127.0.0.1 " + std::to_string(local_port(c.fd())) +
                           " " + std::to_string(px.port()) + "\r\nGET /a HTTP/1.1\r\n";
  EXPECT_EQ(heads[0].substr(0, want.size()), want);
  EXPECT_EQ(heads[1].substr(0, 16), "GET /b HTTP/1.1\r") << "the header is sent once per connection";
  EXPECT_EQ(o.origin.connections(), 1u) << "the client's second request reuses its connection";
}

TEST(Connector, ProxyProtocolV2HeaderIsBinary) {
  RecordingOrigin o;
  auto fwd = std::make_shared<Forward>(
      peer_with(o.origin.addr(), [](PeerOptions& po) { po.proxy_protocol = ProxyProtocol::V2; }));
  pt::TestProxy px(fwd);
  Client c(px.port());
  ASSERT_TRUE(c.get("/"));
  auto heads = o.snapshot();
  ASSERT_EQ(heads.size(), 1u);
  const std::string& h = heads[0];
  ASSERT_GE(h.size(), 28u);
  EXPECT_EQ(h.substr(0, 12), std::string("\r\n\r\n\0\r\nQUIT\n", 12));
  EXPECT_EQ(h.substr(12, 4), std::string("\x21\x11\x00\x0c", 4));
  EXPECT_EQ(h.substr(16, 8), std::string("\x7f\x00\x00\x01\x7f\x00\x00\x01", 8));
  const auto port = [&](std::size_t at) {
    return static_cast<std::uint16_t>((static_cast<unsigned char>(h[at]) << 8) |
                                      static_cast<unsigned char>(h[at + 1]));
  };
  EXPECT_EQ(port(24), local_port(c.fd()));
  EXPECT_EQ(port(26), px.port());
  EXPECT_EQ(h.substr(28, 14), "GET / HTTP/1.1");
}

TEST(Connector, ProxyProtocolConnectionsAreNeverSharedBetweenClients) {
  RecordingOrigin o;
  auto fwd = std::make_shared<Forward>(
      peer_with(o.origin.addr(), [](PeerOptions& po) { po.proxy_protocol = ProxyProtocol::V1; }));
  pt::TestProxy px(fwd, {}, 2);
  for (int i = 0; i < 4; ++i) {
    Client c(px.port());
    ASSERT_TRUE(c.get("/"));
  }
  ASSERT_TRUE(fwd->logged.wait_for(4));
  EXPECT_EQ(o.origin.connections(), 4u);
  for (const auto& h : o.snapshot()) EXPECT_EQ(h.substr(0, 11), "PROXY TCP4 ");
  EXPECT_EQ(px.service().pool_stats().reused, 0u);
}

TEST(Connector, BindAddressIsTheUpstreamSource) {
  RecordingOrigin o;
  auto fwd = std::make_shared<Forward>(peer_with(
      o.origin.addr(), [](PeerOptions& po) { po.bind_to = SocketAddr::parse("127.0.0.2:0"); }));
  pt::TestProxy px(fwd);
  Client c(px.port());
  ASSERT_TRUE(c.get("/"));
  std::lock_guard lk(o.mu);
  ASSERT_EQ(o.peers.size(), 1u);
  EXPECT_EQ(o.peers[0], "127.0.0.2");
}

TEST(Connector, BindToAnAddressNotOnThisHostIsA502WithTheReason) {
  RecordingOrigin o;
  auto fwd = std::make_shared<Forward>(peer_with(
      o.origin.addr(), [](PeerOptions& po) { po.bind_to = SocketAddr::parse("192.0.2.1:0"); }));
  pt::TestProxy px(fwd);
  Client c(px.port());
  auto r = c.get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 502u);
  ASSERT_TRUE(fwd->logged.wait_for(1));
  std::lock_guard lk(fwd->mu);
  ASSERT_TRUE(fwd->last_error);
  EXPECT_EQ(fwd->last_error->type(), ErrorType::BindError);
  EXPECT_EQ(o.origin.connections(), 0u);
}

TEST(Connector, UnixSocketUpstream) {
  // A one-thread origin on a Unix socket in a fresh temporary directory.
  char dir[] = "/tmp/portico-unix-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/origin.sock";
  int ls = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
  ASSERT_EQ(::bind(ls, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ASSERT_EQ(::listen(ls, 8), 0);
  std::atomic<int> accepted{0};
  std::thread origin([&] {
    int fd = ::accept(ls, nullptr, nullptr);
    if (fd < 0) return;
    ++accepted;
    for (;;) {
      std::string extra;
      if (pt::read_head(fd, extra).empty()) break;
      if (!pt::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nunix")) break;
    }
    ::close(fd);
  });
  // However the test ends, the origin thread is woken (shutdown ends a blocked accept) and joined.
  struct Cleanup {
    int ls;
    std::thread& t;
    std::string path;
    const char* dir;
    ~Cleanup() {
      ::shutdown(ls, SHUT_RDWR);
      t.join();
      ::close(ls);
      ::unlink(path.c_str());
      ::rmdir(dir);
    }
  } cleanup{ls, origin, path, dir};
  {
    auto fwd = std::make_shared<Forward>(make_peer(*SocketAddr::parse("unix:" + path)));
    pt::TestProxy px(fwd);
    Client c(px.port());
    for (int i = 0; i < 3; ++i) {
      auto r = c.get("/");
      ASSERT_TRUE(r);
      EXPECT_EQ(r->body, "unix");
    }
    EXPECT_EQ(px.service().pool_stats().opened, 1u);
  }  // the proxy closes its pooled connection, which ends the origin's loop
  EXPECT_EQ(accepted.load(), 1);
}

}  // namespace
}  // namespace itest
