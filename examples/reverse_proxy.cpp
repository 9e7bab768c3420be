// A plain reverse proxy: round robin over --upstream addresses. Benchmarks and conformance
// tests (tests/blackbox) drive this binary.
//
//   reverse_proxy --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000 [--upstream ...] [--threads N]
//                 [--connect-timeout-ms N] [--upstream-read-timeout-ms N]
//                 [--upstream-write-timeout-ms N] [--header-read-timeout-ms N]
//                 [--body-read-timeout-ms N] [--keepalive-timeout-ms N]
//                 [--tls-cert FILE --tls-key FILE]... [--upstream-tls] [--upstream-sni NAME]
//                 [--ca FILE] [--no-verify]
//   reverse_proxy --self-test
//
// TLS: with --tls-cert/--tls-key (repeatable; the first pair is the default certificate, the
// others are chosen by SNI) the listener speaks TLS; SIGHUP re-reads the files. --upstream-tls
// makes the upstreams TLS, verified against the system store or --ca FILE, with --upstream-sni
// as SNI and the name checked (--no-verify turns verification off).
//
// The timeout flags set PeerOptions (connect, upstream read/write) and HttpServerOptions (header,
// body, keep-alive); unset ones keep the library defaults (docs/http1.md).
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include <portico/portico.hpp>
#include <portico/testing/client.hpp>
#include <portico/testing/origin.hpp>

using namespace portico;

// One shared, immutable peer per --upstream, taken in turn.
class ReverseProxy : public ProxyHttp<> {
 public:
  explicit ReverseProxy(std::vector<HttpPeerPtr> peers) : peers_(std::move(peers)) {}
  task<Result<HttpPeerPtr>> upstream_peer(Session&, NoCtx&) override {
    co_return peers_[next_.fetch_add(1, std::memory_order_relaxed) % peers_.size()];
  }

 private:
  std::vector<HttpPeerPtr> peers_;
  std::atomic<std::size_t> next_{0};
};

/// A positive number of milliseconds, or nullopt.
static std::optional<Millis> parse_ms(const char* s) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || *s == '-' || v == 0 || v > 86400000ULL) return std::nullopt;
  return Millis(static_cast<Millis::rep>(v));
}

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:8080";
  std::vector<std::string> upstreams;
  std::size_t threads = 1;
  bool self_test = false;
  HttpServerOptions opts;
  PeerOptions peer_opts;
  TlsSettings tls;
  std::vector<std::string> keys;
  bool upstream_tls = false;
  std::string upstream_sni;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    // "NAME N": stores N ms into `field`. False when the argument is not NAME; exits with status 2
    // when N is missing or not in 1..86400000.
    auto ms_flag = [&](const char* name, Millis& field) {
      if (a != name) return false;
      std::optional<Millis> v = i + 1 < argc ? parse_ms(argv[i + 1]) : std::nullopt;
      if (!v) {
        std::fprintf(stderr, "%s needs a number of milliseconds in 1..86400000\n", name);
        std::exit(2);
      }
      ++i;
      field = *v;
      return true;
    };
    if (a == "--listen" && i + 1 < argc) listen = argv[++i];
    else if (a == "--upstream" && i + 1 < argc) upstreams.push_back(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::strtoul(argv[++i], nullptr, 10);
    else if (a == "--self-test") self_test = true;
    else if (a == "--tls-cert" && i + 1 < argc) tls.certificates.push_back({argv[++i], ""});
    else if (a == "--tls-key" && i + 1 < argc) keys.push_back(argv[++i]);
    else if (a == "--upstream-tls") upstream_tls = true;
    else if (a == "--upstream-sni" && i + 1 < argc) upstream_sni = argv[++i];
    else if (a == "--ca" && i + 1 < argc) peer_opts.ca_file = argv[++i];
    else if (a == "--no-verify") peer_opts.verify_cert = peer_opts.verify_hostname = false;
    else if (ms_flag("--connect-timeout-ms", peer_opts.connection_timeout) ||
             ms_flag("--upstream-read-timeout-ms", peer_opts.read_timeout) ||
             ms_flag("--upstream-write-timeout-ms", peer_opts.write_timeout)) {
    } else if (ms_flag("--header-read-timeout-ms", opts.header_read_timeout) ||
             ms_flag("--body-read-timeout-ms", opts.body_read_timeout) ||
             ms_flag("--keepalive-timeout-ms", opts.keepalive_timeout)) {
    } else {
      std::fprintf(stderr,
                   "usage: %s --listen ADDR:PORT --upstream ADDR:PORT... [--threads N]\n"
                   "       [--connect-timeout-ms N] [--upstream-read-timeout-ms N]"
                   " [--upstream-write-timeout-ms N]\n"
                   "       [--header-read-timeout-ms N] [--body-read-timeout-ms N]"
                   " [--keepalive-timeout-ms N]\n"
                   "       [--tls-cert FILE --tls-key FILE]... [--upstream-tls]"
                   " [--upstream-sni NAME] [--ca FILE] [--no-verify]\n",
                   argv[0]);
      return 2;
    }
  }
  std::unique_ptr<testing::Origin> origin;
  if (self_test) {
    origin = std::make_unique<testing::Origin>([](const testing::OriginRequest& r) {
      return testing::OriginResponse{200, {}, r.method + " " + r.target + " " + r.body};
    });
    upstreams = {origin->addr().to_string()};
    listen = "127.0.0.1:0";
  }
  if (upstreams.empty()) { std::fprintf(stderr, "at least one --upstream is required\n"); return 2; }
  std::vector<HttpPeerPtr> peers;
  for (const auto& u : upstreams) {
    auto addr = SocketAddr::parse(u);
    if (!addr) { std::fprintf(stderr, "not a literal address: %s\n", u.c_str()); return 2; }
    auto p = std::make_shared<HttpPeer>(*addr, upstream_tls, upstream_sni);
    p->options = peer_opts;
    peers.push_back(std::move(p));
  }

  Server server(ServerConf{.threads = threads});
  auto svc = http_proxy_service(std::make_shared<ReverseProxy>(std::move(peers)), opts);
  if (keys.size() != tls.certificates.size()) {
    std::fprintf(stderr, "each --tls-cert needs its --tls-key\n");
    return 2;
  }
  for (std::size_t k = 0; k < keys.size(); ++k) tls.certificates[k].key_file = keys[k];
  auto added = tls.certificates.empty() ? svc->add_tcp(listen) : svc->add_tls(listen, tls);
  if (!added) { std::fprintf(stderr, "%s\n", added.error().to_string().c_str()); return 2; }
  server.add_service(svc);
  if (!self_test) {
    // Scripts and tests learn the bound port (e.g. after --listen 127.0.0.1:0) from this line.
    return server.run_forever([&] {
      std::printf("listening on %s\n", svc->local_endpoints().at(0).to_string().c_str());
      std::fflush(stdout);
    });
  }
  if (!server.start()) return 1;
  testing::Client c(svc->local_endpoints()[0].port());
  auto get = c.get("/hello?x=1");
  auto post = c.request("POST", "/submit", {}, "payload");
  bool good = get && get->body == "GET /hello?x=1 " && post && post->body == "POST /submit payload";
  std::printf("%s\n", good ? "ok" : "FAILED");
  return good ? 0 : 1;
}
