// A gRPC proxy: HTTP/2 from the clients (h2c with prior knowledge, or h2 over TLS), HTTP/2 to
// the upstreams, each call forwarded with its messages, trailers (grpc-status, grpc-message),
// deadline and cancellation. Calls of many clients share multiplexed upstream connections.
//
//   grpc_proxy --listen 127.0.0.1:50051 --upstream 127.0.0.1:50052 [--upstream ...]
//              [--tls-cert FILE --tls-key FILE] [--upstream-tls [--ca FILE] [--upstream-sni NAME]]
//              [--max-streams N]
//
// What a gRPC client expects differs from a browser in one place: when the proxy cannot reach
// an upstream, the answer must be a gRPC status, not an HTML error page. fail_to_proxy sends a
// "trailers-only" response (RFC 9113 HEADERS with END_STREAM: :status 200, grpc-status,
// grpc-message), mapping the HTTP status the proxy would have sent the way gRPC's own
// HTTP-to-gRPC table does (502/503/504 -> UNAVAILABLE, ...).
//
// tests/grpc/run_direct.sh --proxy drives this binary with a python3-grpcio server and client.
#include <atomic>
#include <cstdio>
#include <string>
#include <vector>

#include <portico/portico.hpp>
#include <portico/server/cli.hpp>
#include <portico/server/config.hpp>

using namespace portico;

namespace {

/// gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
enum GrpcStatus : int {
  kInternal = 13,
  kUnavailable = 14,
  kUnimplemented = 12,
  kUnauthenticated = 16,
  kPermissionDenied = 7,
  kUnknown = 2,
};

int grpc_status_for_http(std::uint16_t http) {
  switch (http) {
    case 400: return kInternal;
    case 401: return kUnauthenticated;
    case 403: return kPermissionDenied;
    case 404: return kUnimplemented;
    case 429:
    case 502:
    case 503:
    case 504: return kUnavailable;
    default: return kUnknown;
  }
}

bool is_grpc(const RequestHeader& r) {
  auto ct = r.headers().get("content-type");
  return ct && ct->substr(0, 16) == "application/grpc";
}

class GrpcProxy : public ProxyHttp<> {
 public:
  explicit GrpcProxy(std::vector<HttpPeerPtr> peers) : peers_(std::move(peers)) {}

  task<Result<bool>> request_filter(Session& s, NoCtx&) override {
    if (is_grpc(s.req_header())) co_return false;
    // Not a gRPC call: a plain answer, without bothering an upstream.
    (void)co_await s.respond(415, "gRPC only (content-type: application/grpc)\n");
    co_return true;
  }

  task<Result<HttpPeerPtr>> upstream_peer(Session&, NoCtx&) override {
    co_return peers_[next_.fetch_add(1, std::memory_order_relaxed) % peers_.size()];
  }

  task<FailToProxy> fail_to_proxy(Session& s, const Error& e, NoCtx&) override {
    const std::uint16_t http = detail::default_error_status(e);
    if (http == 0 || s.response_written()) co_return FailToProxy{0, false};
    // Trailers-only: the status travels in the one HEADERS frame that ends the stream.
    ResponseHeader h = ResponseHeader::build(200);
    h.append_header("content-type", "application/grpc");
    h.append_header("grpc-status", std::to_string(grpc_status_for_http(http)));
    h.append_header("grpc-message", "portico: " + std::string(reason_phrase(http)));
    (void)co_await s.write_response_header(std::move(h), true);
    co_return FailToProxy{http, true};
  }

 private:
  std::vector<HttpPeerPtr> peers_;
  std::atomic<std::size_t> next_{0};
};

}  // namespace

int main(int argc, char** argv) {
  Cli cli("grpc_proxy", "A gRPC proxy: HTTP/2 both ways, round robin over --upstream.");
  ServerConfig& cfg = cli.config();
  std::string listen = "127.0.0.1:50051", upstream_sni, cert, key;
  std::vector<std::string> upstreams;
  bool upstream_tls = false;
  std::size_t max_streams = 100;
  cli.add_option("--listen", listen, "ADDR:PORT to listen on (h2c, or h2 over TLS with a cert)")
      .add_option("--upstream", upstreams, "ADDR:PORT of a gRPC upstream (repeatable)")
      .add_option("--tls-cert", cert, "Certificate chain: the listener speaks TLS (ALPN h2)")
      .add_option("--tls-key", key, "Key of --tls-cert")
      .add_flag("--upstream-tls", upstream_tls, "Connect to the upstreams over TLS (ALPN h2)")
      .add_option("--upstream-sni", upstream_sni, "SNI sent to TLS upstreams, and the name verified")
      .add_option("--ca", cfg.ca_file, "CA bundle TLS upstreams are verified against")
      .add_option("--max-streams", max_streams, "Streams per upstream connection", true);
  if (auto outcome = cli.parse(argc, argv); !outcome.run) return outcome.exit_code;
  if (upstreams.empty()) {
    std::fprintf(stderr, "at least one --upstream is required\n");
    return 2;
  }
  std::vector<HttpPeerPtr> peers;
  for (const auto& u : upstreams) {
    auto addr = SocketAddr::parse(u);
    if (!addr) {
      std::fprintf(stderr, "not a literal address: %s\n", u.c_str());
      return 2;
    }
    auto p = std::make_shared<HttpPeer>(*addr, upstream_tls, upstream_sni);
    p->options = default_peer_options(cfg);
    p->options.alpn = Alpn::H2;  // gRPC needs HTTP/2 (trailers) all the way
    p->options.max_h2_streams = static_cast<std::uint32_t>(max_streams);
    // A streaming call may stay quiet for long: the call's deadline bounds it, not the proxy.
    p->options.read_timeout = std::chrono::hours(1);
    peers.push_back(std::move(p));
  }
  ListenerConfig l;
  l.address = listen;
  l.origin = "--listen";
  if (!cert.empty()) {
    l.tls.emplace();
    l.tls->certificates.push_back({cert, key});
  } else {
    l.h2c = true;
  }
  cfg.listeners = {l};

  Server server(cli.server_conf());
  auto svc = http_proxy_service(std::make_shared<GrpcProxy>(std::move(peers)),
                                to_http_server_options(cfg));
  if (auto added = configure_service(*svc, cfg); !added) {
    std::fprintf(stderr, "%s\n", std::string(added.error().context()).c_str());
    return 2;
  }
  server.add_service(svc);
  return server.run_forever([&] {
    for (const auto& ep : svc->local_endpoints())
      std::printf("listening on %s\n", ep.to_string().c_str());
    std::fflush(stdout);
  });
}
