// HTTP/2 toward upstreams: a proxy A with PeerOptions::alpn = H2 / H2H1 in front of an HTTP/2
// origin that is itself a portico proxy B (an h2c or TLS listener) forwarding to an HTTP/1.1
// echo origin. B's hooks tell what arrived over HTTP/2: the version, the connection, the
// request count per connection.
#include <atomic>
#include <set>
#include <thread>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <gtest/gtest.h>

#include <portico/testing/tls.hpp>

#include "integration/helpers.hpp"

namespace itest {
namespace {

using pt::TestPki;

/// Proxy B: an HTTP/2 origin in front of an HTTP/1.1 one. Records what it sees; may hold each
/// request for `delay` before forwarding, so that requests overlap.
class H2Origin : public ProxyHttp<> {
 public:
  explicit H2Origin(SocketAddr origin) : peer_(make_peer(origin)) {}
  task<Result<HttpPeerPtr>> upstream_peer(Session& s, NoCtx&) override {
    {
      std::lock_guard lk(mu);
      versions.insert(static_cast<int>(s.downstream_version()));
      connections.insert(s.client_addr().to_string());
      hosts.insert(std::string(s.req_header().host()));
    }
    const int now = ++in_flight;
    for (int m = max_in_flight.load(); now > m && !max_in_flight.compare_exchange_weak(m, now);) {
    }
    if (delay.count() > 0) {
      boost::asio::steady_timer t(co_await boost::asio::this_coro::executor, delay);
      co_await t.async_wait(boost::asio::use_awaitable);
    }
    --in_flight;
    co_return peer_;
  }
  std::mutex mu;
  std::set<int> versions;
  std::set<std::string> connections;
  std::set<std::string> hosts;
  std::atomic<int> in_flight{0}, max_in_flight{0};
  std::chrono::milliseconds delay{0};

 private:
  HttpPeerPtr peer_;
};

HttpServerOptions h2c_options() {
  HttpServerOptions o;
  o.h2c = true;
  return o;
}

std::shared_ptr<HttpPeer> h2_peer(std::uint16_t port, Alpn alpn = Alpn::H2, std::uint32_t streams = 100) {
  auto p = std::make_shared<HttpPeer>(*SocketAddr::parse("127.0.0.1:" + std::to_string(port)),
                                      false);
  p->options.alpn = alpn;
  p->options.max_h2_streams = streams;
  return p;
}

TEST(H2Upstream, Http1ClientReachesAnH2cOriginAndBack) {
  pt::Origin origin([](const pt::OriginRequest& r) {
    return pt::OriginResponse{200, {{"X-Seen-Host", r.header("host")}},
                              r.method + " " + r.target + " " + std::to_string(r.body.size())};
  });
  auto b_app = std::make_shared<H2Origin>(origin.addr());
  pt::TestProxy b(b_app, h2c_options());
  auto a_app = std::make_shared<Forward>(h2_peer(b.port()));
  pt::TestProxy a(a_app);

  pt::Client c(a.port());
  auto r = c.request("GET", "/path?q=1", {{"Host", "svc.example"}, {"Cookie", "a=1; b=2"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(r->body, "GET /path?q=1 0");
  EXPECT_EQ(r->header("x-seen-host"), "svc.example") << "Host became :authority and back";
  const std::string big(1 << 20, 'x');
  auto p = c.request("POST", "/upload", {{"Host", "svc.example"}}, big);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->body, "POST /upload " + std::to_string(big.size()))
      << "1 MiB crossed the HTTP/2 hop under flow control";
  std::lock_guard lk(b_app->mu);
  EXPECT_EQ(b_app->versions, std::set<int>{static_cast<int>(Version::Http2)});
  EXPECT_EQ(b_app->connections.size(), 1u) << "both requests on one HTTP/2 connection";
}

TEST(H2Upstream, ConcurrentRequestsShareOneConnection) {
  pt::Origin origin(pt::Origin::text("ok"));
  auto b_app = std::make_shared<H2Origin>(origin.addr());
  b_app->delay = 100ms;
  pt::TestProxy b(b_app, h2c_options());
  pt::TestProxy a(std::make_shared<Forward>(h2_peer(b.port())));

  constexpr int kClients = 20;
  std::atomic<int> good{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < kClients; ++i)
    ts.emplace_back([&] {
      pt::Client c(a.port());
      auto r = c.get("/");
      if (r && r->status == 200 && r->body == "ok") ++good;
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(good.load(), kClients);
  EXPECT_GT(b_app->max_in_flight.load(), 1) << "the requests overlapped at the origin";
  std::lock_guard lk(b_app->mu);
  EXPECT_EQ(b_app->connections.size(), 1u) << "one multiplexed upstream connection";
  EXPECT_EQ(a.service().pool_stats().opened, 1u);
}

TEST(H2Upstream, PastMaxStreamsAnotherConnectionOpens) {
  pt::Origin origin(pt::Origin::text("ok"));
  auto b_app = std::make_shared<H2Origin>(origin.addr());
  b_app->delay = 300ms;
  pt::TestProxy b(b_app, h2c_options());
  pt::TestProxy a(std::make_shared<Forward>(h2_peer(b.port(), Alpn::H2, 2)));

  constexpr int kClients = 6;
  std::atomic<int> good{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < kClients; ++i)
    ts.emplace_back([&] {
      pt::Client c(a.port());
      auto r = c.get("/");
      if (r && r->status == 200) ++good;
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(good.load(), kClients);
  std::lock_guard lk(b_app->mu);
  EXPECT_GE(b_app->connections.size(), 3u) << "2 streams per connection, 6 at once";
  EXPECT_LE(b_app->connections.size(), static_cast<std::size_t>(kClients));
}

TEST(H2Upstream, IdleSessionClosesAfterTheIdleTimeout) {
  pt::Origin origin(pt::Origin::text("ok"));
  auto b_app = std::make_shared<H2Origin>(origin.addr());
  pt::TestProxy b(b_app, h2c_options());
  auto peer = h2_peer(b.port());
  peer->options.idle_timeout = 200ms;
  pt::TestProxy a(std::make_shared<Forward>(peer));
  auto registry = std::make_shared<observe::Registry>();
  a.service().set_metrics_registry(registry);  // A's series alone (B shares the default one)
  auto gauge = [&] {
    const std::string text = registry->render_prometheus();
    const std::string key = "portico_upstream_h2_sessions_active{service=\"";
    auto at = text.find(key);
    if (at == std::string::npos) return -1L;
    auto sp = text.find(' ', text.find('}', at));
    return std::stol(text.substr(sp + 1));
  };
  pt::Client c(a.port());
  auto r = c.get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(gauge(), 1L);
  EXPECT_TRUE(eventually([&] { return gauge() == 0L; }, 5s)) << "closed after 200 ms idle";
  // The next request opens a new session.
  auto r2 = c.get("/");
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->status, 200u);
  EXPECT_EQ(a.service().pool_stats().opened, 2u);
}

namespace {
std::string h2_frame(std::uint8_t type, std::uint8_t flags, std::uint32_t stream,
                     std::string_view payload) {
  const auto n = static_cast<std::uint32_t>(payload.size());
  std::string f{static_cast<char>(n >> 16),
                static_cast<char>(n >> 8),
                static_cast<char>(n),
                static_cast<char>(type),
                static_cast<char>(flags),
                static_cast<char>(stream >> 24),
                static_cast<char>(stream >> 16),
                static_cast<char>(stream >> 8),
                static_cast<char>(stream)};
  return f.append(payload);
}

/// An HTTP/2 origin of raw frames: reads the client's preface and frames until the HEADERS of
/// stream 1 has come, answers it with the header block `block` (END_HEADERS | END_STREAM),
/// then reads until the client closes.
pt::RawOrigin::Fn raw_h2_answer(std::string block) {
  return [block](int fd) {
    std::string in;
    char b[4096];
    bool headers = false;
    while (!headers) {
      const ssize_t n = ::recv(fd, b, sizeof b, 0);
      if (n <= 0) return;
      in.append(b, static_cast<std::size_t>(n));
      for (std::size_t at = 24; at + 9 <= in.size();) {  // after the 24-byte magic
        const std::size_t len = (static_cast<unsigned char>(in[at]) << 16) |
                                (static_cast<unsigned char>(in[at + 1]) << 8) |
                                static_cast<unsigned char>(in[at + 2]);
        if (in[at + 3] == 1) headers = true;  // HEADERS
        at += 9 + len;
      }
    }
    // SETTINGS, the ACK of the client's, the answer on stream 1.
    if (!pt::write_all(fd,
                       h2_frame(4, 0, 0, "") + h2_frame(4, 1, 0, "") + h2_frame(1, 5, 1, block)))
      return;
    while (::recv(fd, b, sizeof b, 0) > 0) {
    }
  };
}

/// Proxies one GET through a Forward to `peer`, which must fail: expects a 502 and returns
/// the error logging saw (empty if none).
std::string error_of_a_502(HttpPeerPtr peer) {
  auto fwd = std::make_shared<Forward>(std::move(peer));
  pt::TestProxy a(fwd);
  pt::Client c(a.port());
  auto r = c.get("/");
  EXPECT_TRUE(r);
  if (r) EXPECT_EQ(r->status, 502u);
  EXPECT_TRUE(fwd->logged.wait_for(1, 5s));
  std::lock_guard lk(fwd->mu);
  return fwd->last_error ? fwd->last_error->to_string() : std::string();
}
}  // namespace

// A response RFC 9113 calls malformed (here a 101, which HTTP/2 does not have; a 103 ending the
// stream; an uppercase field name) is answered with 502 and the reason reaches logging.
TEST(H2Upstream, MalformedResponseFromTheOriginIsA502) {
  struct Case {
    std::string block;
    const char* why;
  };
  const Case cases[] = {
      {std::string("\x08\x03") + "101", "101 in HTTP/2"},
      {std::string("\x08\x03") + "103", "interim response with END_STREAM"},
      {std::string("\x88\x00\x06", 3) + "Server" + "\x01" + "x", "uppercase field name"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.why);
    pt::RawOrigin origin(raw_h2_answer(k.block));
    const std::string why = error_of_a_502(h2_peer(origin.port()));
    EXPECT_NE(why.find(std::string("malformed HTTP/2 response: ") + k.why), std::string::npos)
        << why;
  }
}

TEST(H2Upstream, H2OnlyPeerThatRefusesH2IsA502) {
  TestPki pki;
  auto cert = pki.issue({"h1only.test"});
  pt::Origin origin(pt::Origin::text("ok"));
  TlsSettings s;
  s.certificates.push_back({cert.cert_file, cert.key_file});
  s.alpn = {"http/1.1"};
  pt::TestProxy b(std::make_shared<Forward>(origin.addr()), {}, 1, s);
  auto peer = std::make_shared<HttpPeer>(*SocketAddr::parse("127.0.0.1:" + std::to_string(b.port())),
                                         true, "h1only.test");
  peer->options.ca_file = pki.ca_file();
  peer->options.alpn = Alpn::H2;
  // The origin refuses the handshake (no_application_protocol alert), or, for a server that
  // ignores ALPN, the proxy refuses to speak HTTP/1.1 to an h2-only peer: either way it says so.
  const std::string why = error_of_a_502(peer);
  EXPECT_TRUE(why.find("no application protocol") != std::string::npos ||
              why.find("did not agree to HTTP/2") != std::string::npos)
      << why;
}

TEST(H2Upstream, PreferH2FallsBackToHttp11OverTls) {
  TestPki pki;
  auto cert = pki.issue({"pref.test"});
  pt::Origin origin(pt::Origin::text("ok"));
  for (const bool origin_speaks_h2 : {false, true}) {
    SCOPED_TRACE(origin_speaks_h2 ? "h2 agreed" : "http/1.1 agreed");
    TlsSettings s;
    s.certificates.push_back({cert.cert_file, cert.key_file});
    if (!origin_speaks_h2) s.alpn = {"http/1.1"};
    auto b_app = std::make_shared<H2Origin>(origin.addr());
    pt::TestProxy b(b_app, {}, 1, s);
    auto peer = std::make_shared<HttpPeer>(
        *SocketAddr::parse("127.0.0.1:" + std::to_string(b.port())), true, "pref.test");
    peer->options.ca_file = pki.ca_file();
    peer->options.alpn = Alpn::H2H1;
    pt::TestProxy a(std::make_shared<Forward>(peer));
    pt::Client c(a.port());
    for (int i = 0; i < 3; ++i) {
      auto r = c.get("/");
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 200u);
      EXPECT_EQ(r->body, "ok");
    }
    std::lock_guard lk(b_app->mu);
    EXPECT_EQ(b_app->versions,
              std::set<int>{static_cast<int>(origin_speaks_h2 ? Version::Http2 : Version::Http11)});
    EXPECT_EQ(b_app->connections.size(), 1u) << "reused: the h2 session, or the pooled h1 connection";
  }
}

}  // namespace
}  // namespace itest
