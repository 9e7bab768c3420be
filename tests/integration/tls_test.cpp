// TLS on both sides: SNI certificates, ALPN, resumption, client certificates, reload, bad
// input; upstream verification, SNI, resumption, pooling (across workers too), mTLS.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include <portico/testing/tls.hpp>

#include "integration/helpers.hpp"

namespace itest {
namespace {

using pt::Origin;
using pt::TestPki;
using pt::TlsClient;
using pt::TlsClientOptions;

/// Forward that records what the client's TLS looked like, per request.
class TlsRecording : public Forward {
 public:
  using Forward::Forward;
  task<void> logging(Session& s, const Error* e, NoCtx& c) override {
    {
      std::lock_guard lk(tmu);
      infos.push_back(s.tls() ? std::optional<TlsInfo>(*s.tls()) : std::nullopt);
    }
    co_await Forward::logging(s, e, c);
  }
  std::optional<TlsInfo> last() {
    std::lock_guard lk(tmu);
    return infos.empty() ? std::nullopt : infos.back();
  }
  std::mutex tmu;
  std::vector<std::optional<TlsInfo>> infos;
};

TlsSettings settings_for(std::initializer_list<TestPki::Issued> certs) {
  TlsSettings s;
  for (const auto& c : certs) s.certificates.push_back({c.cert_file, c.key_file});
  return s;
}

TlsClientOptions trusting(const TestPki& pki, std::string sni = {}) {
  TlsClientOptions o;
  o.ca_file = pki.ca_file();
  o.sni = std::move(sni);
  return o;
}

/// Connects a plain TCP socket to 127.0.0.1:port with a receive timeout.
int raw_connect(std::uint16_t port, int timeout_s = 10) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{timeout_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  return fd;
}

// ---- downstream -----------------------------------------------------------------------------

TEST(Tls, SniChoosesTheCertificateExactThenWildcardElseTheDefault) {
  TestPki pki;
  auto a = pki.issue({"a.test"});
  auto b = pki.issue({"b.test"});
  auto w = pki.issue({"*.wild.test"});
  Origin origin(Origin::text("hello"));
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), {}, 1, settings_for({a, b, w}));
  struct Want {
    std::string sni;
    std::string cn;
  };
  for (const Want& want : {Want{"b.test", "b.test"}, Want{"B.Test", "b.test"}, Want{"x.wild.test", "*.wild.test"},
                           Want{"a.test", "a.test"}, Want{"unknown.test", "a.test"}, Want{"", "a.test"}}) {
    TlsClientOptions o = trusting(pki, want.sni);
    o.verify = false;  // the default certificate does not carry every name asked for
    TlsClient c(px.port(), o);
    ASSERT_TRUE(c.connected()) << want.sni << ": " << c.error();
    EXPECT_EQ(c.peer_common_name(), want.cn) << "SNI " << want.sni;
    auto r = c.get("/");
    ASSERT_TRUE(r) << want.sni;
    EXPECT_EQ(r->status, 200u);
    EXPECT_EQ(r->body, "hello");
  }
}

TEST(Tls, AlpnPrefersH2AndFallsBackToHttp11) {
  TestPki pki;
  auto a = pki.issue({"a.test"});
  Origin origin;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), {}, 1, settings_for({a}));
  {
    TlsClientOptions o = trusting(pki, "a.test");
    o.alpn = {"http/1.1", "h2"};
    TlsClient c(px.port(), o);
    ASSERT_TRUE(c.connected()) << c.error();
    EXPECT_EQ(c.alpn(), "h2") << "the server's preference decides";
  }
  {
    TlsClientOptions o = trusting(pki, "a.test");
    o.alpn = {"http/1.1"};
    TlsClient c(px.port(), o);
    ASSERT_TRUE(c.connected()) << c.error();
    EXPECT_EQ(c.alpn(), "http/1.1");
    auto r = c.get("/");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200u);
  }
  {
    TlsClientOptions o = trusting(pki, "a.test");
    o.alpn = {};
    TlsClient c(px.port(), o);
    ASSERT_TRUE(c.connected()) << "a client without ALPN speaks HTTP/1.1";
    EXPECT_TRUE(c.get("/"));
  }
}

TEST(Tls, AlpnListWithoutH2RefusesAnH2OnlyClient) {
  TestPki pki;
  auto a = pki.issue({"a.test"});
  Origin origin;
  TlsSettings s = settings_for({a});
  s.alpn = {"http/1.1"};
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), {}, 1, s);
  TlsClientOptions o = trusting(pki, "a.test");
  o.alpn = {"h2"};
  TlsClient c(px.port(), o);
  EXPECT_FALSE(c.connected()) << "no common protocol: no_application_protocol alert";
}

class TlsResumption : public ::testing::TestWithParam<bool> {};

TEST_P(TlsResumption, SecondConnectionResumesAndTheSessionSaysSo) {
  const bool tickets = GetParam();
  TestPki pki;
  auto a = pki.issue({"a.test"});
  Origin origin;
  auto fwd = std::make_shared<TlsRecording>(origin.addr());
  TlsSettings s = settings_for({a});
  s.session_tickets = tickets;
  pt::TestProxy px(fwd, {}, 2, s);
  std::shared_ptr<pt::TlsSessionHandle> saved;
  {
    TlsClient c(px.port(), trusting(pki, "a.test"));
    ASSERT_TRUE(c.connected()) << c.error();
    EXPECT_FALSE(c.resumed());
    ASSERT_TRUE(c.get("/"));
    saved = c.session();
  }
  ASSERT_TRUE(fwd->logged.wait_for(1));
  ASSERT_TRUE(fwd->last() && !fwd->last()->resumed);
  // Whichever worker takes the next connection, the session resumes: tickets are keyed by the
  // listener, the session cache is shared by its workers. Like a browser, each connection
  // offers the newest session it has (TLS 1.3 sessions are meant for one use).
  for (int i = 0; i < 4; ++i) {
    TlsClientOptions o = trusting(pki, "a.test");
    o.resume = saved;
    TlsClient c(px.port(), o);
    ASSERT_TRUE(c.connected()) << c.error();
    EXPECT_TRUE(c.resumed()) << "connection " << i;
    ASSERT_TRUE(c.get("/"));
    saved = c.session();
    ASSERT_TRUE(fwd->logged.wait_for(2 + i));
    auto info = fwd->last();
    ASSERT_TRUE(info);
    EXPECT_TRUE(info->resumed);
    EXPECT_EQ(info->sni, "a.test");
    EXPECT_EQ(info->alpn, "http/1.1");
    EXPECT_FALSE(info->version.empty());
  }
}

INSTANTIATE_TEST_SUITE_P(Tls, TlsResumption, ::testing::Bool(),
                         [](const auto& i) { return i.param ? "Tickets" : "SessionCache"; });

TEST(Tls, RequiredClientCertificateIsCheckedAndVisibleInTheSession) {
  TestPki pki;
  auto server = pki.issue({"a.test"});
  auto alice = pki.issue({"alice"}, 30, true);
  TestPki other;
  auto mallory = other.issue({"mallory"}, 30, true);
  Origin origin;
  auto fwd = std::make_shared<TlsRecording>(origin.addr());
  TlsSettings s = settings_for({server});
  s.client_auth = ClientAuth::Required;
  s.client_ca_file = pki.ca_file();
  pt::TestProxy px(fwd, {}, 1, s);
  {
    TlsClientOptions o = trusting(pki, "a.test");
    o.cert_file = alice.cert_file;
    o.key_file = alice.key_file;
    TlsClient c(px.port(), o);
    ASSERT_TRUE(c.connected()) << c.error();
    auto r = c.get("/");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200u);
    ASSERT_TRUE(fwd->logged.wait_for(1));
    auto info = fwd->last();
    ASSERT_TRUE(info);
    EXPECT_EQ(info->client_subject, "CN=alice");
  }
  for (const TestPki::Issued* cert : std::initializer_list<const TestPki::Issued*>{nullptr, &mallory}) {
    TlsClientOptions o = trusting(pki, "a.test");
    if (cert) {
      o.cert_file = cert->cert_file;
      o.key_file = cert->key_file;
    }
    TlsClient c(px.port(), o);
    // With TLS 1.3 the client finishes first and learns of the refusal on its first read.
    EXPECT_FALSE(c.connected() && c.get("/")) << (cert ? "untrusted certificate" : "no certificate");
  }
  EXPECT_EQ(origin.requests(), 1u);
}

TEST(Tls, OptionalClientCertificate) {
  TestPki pki;
  auto server = pki.issue({"a.test"});
  Origin origin;
  auto fwd = std::make_shared<TlsRecording>(origin.addr());
  TlsSettings s = settings_for({server});
  s.client_auth = ClientAuth::Optional;
  s.client_ca_file = pki.ca_file();
  pt::TestProxy px(fwd, {}, 1, s);
  TlsClient c(px.port(), trusting(pki, "a.test"));
  ASSERT_TRUE(c.connected()) << c.error();
  ASSERT_TRUE(c.get("/"));
  ASSERT_TRUE(fwd->logged.wait_for(1));
  ASSERT_TRUE(fwd->last());
  EXPECT_TRUE(fwd->last()->client_subject.empty());
}

TEST(Tls, ReloadServesNewCertificatesAndKeepsOpenConnections) {
  TestPki pki;
  auto live = pki.issue({"a.test"});
  Origin origin;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), {}, 1, settings_for({live}));
  TlsClient before(px.port(), trusting(pki, "a.test"));
  ASSERT_TRUE(before.connected()) << before.error();
  ASSERT_TRUE(before.get("/"));
  EXPECT_EQ(before.peer_common_name(), "a.test");

  // A broken new certificate: the reload fails and the old one stays.
  {
    std::ofstream(live.cert_file) << "not a certificate";
    auto r = px.service().reload_tls();
    EXPECT_FALSE(r);
    TlsClient c(px.port(), trusting(pki, "a.test"));
    ASSERT_TRUE(c.connected()) << c.error();
    EXPECT_EQ(c.peer_common_name(), "a.test");
  }
  // A good one: new handshakes see it, the open keep-alive connection is still served.
  TestPki::replace(live, pki.issue({"v2.a.test", "a.test"}));
  ASSERT_TRUE(px.service().reload_tls());
  TlsClient after(px.port(), trusting(pki, "a.test"));
  ASSERT_TRUE(after.connected()) << after.error();
  EXPECT_EQ(after.peer_common_name(), "v2.a.test");
  auto r = before.get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
}

TEST(Tls, CertificateHookChoosesPerServerName) {
  TestPki pki;
  auto fallback = pki.issue({"a.test"});
  auto special = pki.issue({"hook.test"});
  auto ck = CertifiedKey::from_files(special.cert_file, special.key_file);
  ASSERT_TRUE(ck);
  Origin origin;
  TlsSettings s = settings_for({fallback});
  std::atomic<int> calls{0};
  s.certificate_hook = [&, key = *ck](std::string sni) -> task<CertifiedKeyPtr> {
    ++calls;
    co_return sni == "hook.test" ? key : nullptr;
  };
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), {}, 1, s);
  {
    TlsClient c(px.port(), trusting(pki, "hook.test"));
    ASSERT_TRUE(c.connected()) << c.error();
    EXPECT_EQ(c.peer_common_name(), "hook.test");
    EXPECT_TRUE(c.get("/"));
  }
  {
    TlsClient c(px.port(), trusting(pki, "a.test"));
    ASSERT_TRUE(c.connected()) << c.error();
    EXPECT_EQ(c.peer_common_name(), "a.test");
  }
  EXPECT_EQ(calls.load(), 2);
}

TEST(Tls, BytesThatAreNotAClientHelloAreClosedAtOnce) {
  TestPki pki;
  auto a = pki.issue({"a.test"});
  Origin origin;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), {}, 1, settings_for({a}));
  int fd = raw_connect(px.port());
  ASSERT_TRUE(pt::write_all(fd, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"));
  const auto t0 = std::chrono::steady_clock::now();
  const std::string got = read_until_close(fd);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(got.find("HTTP/1.1 200"), std::string::npos);
  ::close(fd);
  EXPECT_EQ(origin.requests(), 0u);
}

TEST(Tls, StalledHandshakeIsClosedAtTheHandshakeTimeout) {
  TestPki pki;
  auto a = pki.issue({"a.test"});
  Origin origin;
  TlsSettings s = settings_for({a});
  s.handshake_timeout = 100ms;
  pt::TestProxy px(std::make_shared<Forward>(origin.addr()), {}, 1, s);
  int fd = raw_connect(px.port());
  ASSERT_TRUE(pt::write_all(fd, std::string("\x16\x03\x01\x02\x00", 5)));  // a record that never ends
  const auto t0 = std::chrono::steady_clock::now();
  read_until_close(fd);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 90ms);
  EXPECT_LT(took, 5s);
  ::close(fd);
  ASSERT_TRUE(px.server().wait_idle(5s));
}

TEST(Tls, ListenerWithUnreadableCertificateIsRefusedAtConfiguration) {
  auto svc = http_proxy_service(std::make_shared<Forward>(SocketAddr::loopback(1)));
  TlsSettings s;
  s.certificates.push_back({"/nonexistent/cert.pem", "/nonexistent/key.pem"});
  auto r = svc->add_tls("127.0.0.1:0", s);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().to_string().find("/nonexistent/cert.pem"), std::string::npos);
  TestPki pki;
  auto a = pki.issue({"a.test"});
  auto b = pki.issue({"b.test"});
  s.certificates = {{a.cert_file, b.key_file}};
  r = svc->add_tls("127.0.0.1:0", s);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().to_string().find("does not match"), std::string::npos);
}

// ---- upstream -------------------------------------------------------------------------------

/// A TLS origin: a portico proxy with a TLS listener in front of a plain origin.
struct TlsOrigin {
  explicit TlsOrigin(TestPki& pki, const TestPki::Issued& cert, std::size_t threads = 1,
                     ClientAuth auth = ClientAuth::None)
      : origin(Origin::text("secure")),
        fwd(std::make_shared<TlsRecording>(origin.addr())),
        px(fwd, {}, threads, [&] {
          TlsSettings s = settings_for({cert});
          s.client_auth = auth;
          if (auth != ClientAuth::None) s.client_ca_file = pki.ca_file();
          return s;
        }()) {}
  SocketAddr addr() const { return SocketAddr::loopback(const_cast<pt::TestProxy&>(px).port()); }
  Origin origin;
  std::shared_ptr<TlsRecording> fwd;
  pt::TestProxy px;
};

HttpPeerPtr tls_peer(SocketAddr a, std::string sni, auto&& set) {
  auto p = std::make_shared<HttpPeer>(a, true, std::move(sni));
  set(p->options);
  return p;
}

struct UpstreamCase {
  const char* name;
  const char* sni;
  bool use_ca;
  bool verify;
  int days;
  unsigned status;
};

class UpstreamTls : public ::testing::TestWithParam<UpstreamCase> {};

TEST_P(UpstreamTls, VerificationDecides) {
  const UpstreamCase& k = GetParam();
  TestPki pki;
  TlsOrigin up(pki, pki.issue({"origin.test"}, k.days));
  auto fwd = std::make_shared<Forward>(tls_peer(up.addr(), k.sni, [&](PeerOptions& o) {
    if (k.use_ca) o.ca_file = pki.ca_file();
    o.verify_cert = k.verify;
  }));
  pt::TestProxy px(fwd);
  pt::Client c(px.port());
  auto r = c.get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, k.status);
  if (k.status == 200) EXPECT_EQ(r->body, "secure");
  ASSERT_TRUE(fwd->logged.wait_for(1));
  std::lock_guard lk(fwd->mu);
  if (k.status == 502) {
    ASSERT_TRUE(fwd->last_error);
    EXPECT_EQ(fwd->last_error->type(), ErrorType::InvalidCert) << fwd->last_error->to_string();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Tls, UpstreamTls,
    ::testing::Values(UpstreamCase{"TrustedWithCaFile", "origin.test", true, true, 30, 200},
                      UpstreamCase{"UntrustedWithoutCa", "origin.test", false, true, 30, 502},
                      UpstreamCase{"UnverifiedWhenAsked", "origin.test", false, false, 30, 200},
                      UpstreamCase{"WrongHostName", "other.test", true, true, 30, 502},
                      UpstreamCase{"Expired", "origin.test", true, true, -1, 502}),
    [](const auto& i) { return std::string(i.param.name); });

TEST(UpstreamTlsPool, ConnectionsAreReusedAndNewOnesResume) {
  TestPki pki;
  TlsOrigin up(pki, pki.issue({"origin.test"}));
  auto peer = tls_peer(up.addr(), "origin.test", [&](PeerOptions& o) { o.ca_file = pki.ca_file(); });
  {
    auto fwd = std::make_shared<Forward>(peer);
    pt::TestProxy px(fwd);
    pt::Client c(px.port());
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(c.get("/")) << i;
    EXPECT_EQ(px.service().pool_stats().opened, 1u);
    EXPECT_EQ(px.service().pool_stats().reused, 4u);
  }
  {
    // One request per upstream connection: every handshake after the first resumes.
    HttpServerOptions o;
    o.upstream_request_limit = 1;
    auto fwd = std::make_shared<Forward>(peer);
    pt::TestProxy px(fwd, o);
    pt::Client c(px.port());
    for (int i = 0; i < 4; ++i) {
      auto r = c.get("/");
      ASSERT_TRUE(r);
      EXPECT_EQ(r->body, "secure");
    }
    EXPECT_EQ(px.service().upstream_tls_full_handshakes(), 1u);
    EXPECT_EQ(px.service().upstream_tls_resumed(), 3u);
  }
}

TEST(UpstreamTlsPool, ATlsConnectionMovesToAnotherWorker) {
  TestPki pki;
  TlsOrigin up(pki, pki.issue({"origin.test"}));
  auto peer = tls_peer(up.addr(), "origin.test", [&](PeerOptions& o) { o.ca_file = pki.ca_file(); });
  auto fwd = std::make_shared<ThreadTagging>(peer);
  pt::TestProxy px(fwd, {}, 2);
  int sent = 0;
  for (int i = 0; i < 64 && fwd->distinct_threads() < 2; ++i) {
    pt::Client c(px.port());
    auto r = c.get("/");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "secure");
    ASSERT_TRUE(fwd->logged.wait_for(++sent));
  }
  ASSERT_EQ(fwd->distinct_threads(), 2u);
  auto st = px.service().pool_stats();
  EXPECT_EQ(st.opened, 1u) << "one TLS connection served every request";
  EXPECT_GE(st.reused_cross_worker, 1u);
  EXPECT_EQ(px.service().upstream_tls_full_handshakes(), 1u);
}

TEST(UpstreamTlsPool, ClientCertificateForAnUpstreamThatRequiresOne) {
  TestPki pki;
  TlsOrigin up(pki, pki.issue({"origin.test"}), 1, ClientAuth::Required);
  auto me = pki.issue({"proxy.client"}, 30, true);
  for (bool with_cert : {true, false}) {
    auto fwd = std::make_shared<Forward>(tls_peer(up.addr(), "origin.test", [&](PeerOptions& o) {
      o.ca_file = pki.ca_file();
      if (with_cert) {
        o.client_cert_file = me.cert_file;
        o.client_key_file = me.key_file;
      }
    }));
    pt::TestProxy px(fwd);
    pt::Client c(px.port());
    auto r = c.get("/");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, with_cert ? 200u : 502u);
  }
  ASSERT_TRUE(up.fwd->logged.wait_for(1));
  auto info = up.fwd->last();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->client_subject, "CN=proxy.client");
}

}  // namespace
}  // namespace itest
