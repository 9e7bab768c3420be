// A plain reverse proxy: round robin over --upstream addresses. Benchmarks and conformance
// tests (tests/blackbox) drive this binary.
//
//   reverse_proxy --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000 [--upstream ...] [--threads N]
//                 [--connect-timeout-ms N] [--upstream-read-timeout-ms N]
//                 [--upstream-write-timeout-ms N] [--header-read-timeout-ms N]
//                 [--body-read-timeout-ms N] [--keepalive-timeout-ms N]
//                 [--tls-cert FILE --tls-key FILE]... [--upstream-tls] [--upstream-sni NAME]
//                 [--ca FILE] [--no-verify] [-c conf.yaml] [-t] [-d] [-u]
//   reverse_proxy --self-test
//
// The shared command line of portico binaries (portico::Cli) comes with it: -c FILE loads a
// configuration (docs/configuration.md) that sets threads, limits, timeouts, listeners and the
// upstream CA; a flag given on the command line overrides the file. -t checks the configuration
// and exits. --listen or --tls-cert replaces the file's listeners; with neither, and no
// listeners in the file, the proxy listens on 127.0.0.1:8080.
//
// TLS: with --tls-cert/--tls-key (repeatable; the first pair is the default certificate, the
// others are chosen by SNI) the listener speaks TLS; SIGHUP re-reads the files. --upstream-tls
// makes the upstreams TLS, verified against the system store or --ca FILE (or the
// configuration's ca_file), with --upstream-sni as SNI and the name checked (--no-verify turns
// verification off).
//
// The timeout flags set PeerOptions (connect, upstream read/write) and HttpServerOptions (header,
// body, keep-alive); unset ones keep the configuration's values or the library defaults
// (docs/http1.md).
#include <atomic>
#include <cstdio>
#include <string>
#include <vector>

#include <portico/portico.hpp>
#include <portico/server/cli.hpp>
#include <portico/server/config.hpp>
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

int main(int argc, char** argv) {
  Cli cli("reverse_proxy", "A reverse proxy: round robin over the --upstream addresses.");
  ServerConfig& cfg = cli.config();  // the defaults, then -c FILE, then the flags bound to it
  std::string listen;
  std::vector<std::string> upstreams, certs, keys;
  bool self_test = false, upstream_tls = false, no_verify = false, upstream_h2 = false,
       upstream_h2_prefer = false;
  std::string upstream_sni;
  PeerOptions peer_opts;
  cli.add_option("--listen", listen,
                 "ADDR:PORT to listen on (replaces the configuration's listeners)")
      .add_option("--upstream", upstreams, "ADDR:PORT of an upstream, taken in turn (repeatable)")
      .add_option("--threads", cfg.threads, "Worker threads", true)
      .add_option("--connect-timeout-ms", peer_opts.connection_timeout, "Upstream connect timeout")
      .add_option("--upstream-read-timeout-ms", peer_opts.read_timeout, "Upstream read timeout")
      .add_option("--upstream-write-timeout-ms", peer_opts.write_timeout, "Upstream write timeout")
      .add_option("--header-read-timeout-ms", cfg.http.header_read_timeout,
                  "Request header timeout")
      .add_option("--body-read-timeout-ms", cfg.http.body_read_timeout, "Request body timeout")
      .add_option("--keepalive-timeout-ms", cfg.http.keepalive_timeout, "Idle keep-alive timeout")
      .add_option("--tls-cert", certs,
                  "Certificate chain of a TLS listener (repeatable, the first is the default)")
      .add_option("--tls-key", keys, "Key of the --tls-cert at the same position")
      .add_flag("--upstream-tls", upstream_tls, "Connect to the upstreams over TLS")
      .add_option("--upstream-sni", upstream_sni,
                  "SNI sent to TLS upstreams, and the name verified")
      .add_option("--ca", cfg.ca_file, "CA bundle TLS upstreams are verified against")
      .add_flag("--no-verify", no_verify, "Do not verify TLS upstreams")
      .add_flag("--upstream-h2", upstream_h2,
                "Speak HTTP/2 to the upstreams (ALPN h2 over TLS, prior knowledge on plain text)")
      .add_flag("--upstream-h2-prefer", upstream_h2_prefer,
                "Offer h2 and http/1.1 to TLS upstreams and speak what they choose")
      .add_flag("--h2c", cfg.http.h2c,
                "Accept HTTP/2 with prior knowledge on plain listeners (TLS offers h2 anyway)")
      .add_flag("--self-test", self_test, "Start, proxy two requests to an embedded origin, exit");
  if (auto outcome = cli.parse(argc, argv); !outcome.run) return outcome.exit_code;

  std::unique_ptr<testing::Origin> origin;
  if (self_test) {
    origin = std::make_unique<testing::Origin>([](const testing::OriginRequest& r) {
      return testing::OriginResponse{200, {}, r.method + " " + r.target + " " + r.body};
    });
    upstreams = {origin->addr().to_string()};
    listen = "127.0.0.1:0";
  }
  if (upstreams.empty()) {
    std::fprintf(stderr, "at least one --upstream is required\n");
    return 2;
  }
  peer_opts.ca_file = default_peer_options(cfg).ca_file;
  if (no_verify) peer_opts.verify_cert = peer_opts.verify_hostname = false;
  if (upstream_h2) peer_opts.alpn = Alpn::H2;
  else if (upstream_h2_prefer) peer_opts.alpn = Alpn::H2H1;
  std::vector<HttpPeerPtr> peers;
  for (const auto& u : upstreams) {
    auto addr = SocketAddr::parse(u);
    if (!addr) {
      std::fprintf(stderr, "not a literal address: %s\n", u.c_str());
      return 2;
    }
    auto p = std::make_shared<HttpPeer>(*addr, upstream_tls, upstream_sni);
    p->options = peer_opts;
    peers.push_back(std::move(p));
  }
  if (keys.size() != certs.size()) {
    std::fprintf(stderr, "each --tls-cert needs its --tls-key\n");
    return 2;
  }
  // --listen and --tls-cert describe the one listener; without them the configuration's are used.
  // Applied again when SIGHUP reloads the configuration file.
  auto flags_over_file = [&](ServerConfig& c) {
    if (listen.empty() && certs.empty() && !c.listeners.empty()) return;
    ListenerConfig l;
    l.address = listen.empty() ? "127.0.0.1:8080" : listen;
    l.origin = "--listen";
    if (!certs.empty()) {
      l.tls.emplace();
      for (std::size_t k = 0; k < certs.size(); ++k)
        l.tls->certificates.push_back({certs[k], keys[k]});
    }
    c.listeners = {std::move(l)};
  };
  flags_over_file(cfg);

  // -u, -d, the daemon and upgrade keys, and SIGHUP re-reading -c come with server_conf().
  Server server(cli.server_conf(flags_over_file));
  auto svc = http_proxy_service(std::make_shared<ReverseProxy>(std::move(peers)),
                                to_http_server_options(cfg));
  if (auto added = configure_service(*svc, cfg); !added) {
    std::fprintf(stderr, "%s\n", std::string(added.error().context()).c_str());
    return 2;
  }
  server.add_service(svc);
  if (!self_test) {
    // Scripts and tests learn the bound port (e.g. after --listen 127.0.0.1:0) from this line.
    return server.run_forever([&] {
      for (const auto& ep : svc->local_endpoints())
        std::printf("listening on %s\n", ep.to_string().c_str());
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
