// HttpPeer: where and how to reach an upstream for one request attempt.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <portico/core/socket_addr.hpp>

namespace portico {

using Millis = std::chrono::milliseconds;

/// HTTP version preference toward an upstream.
enum class Alpn : std::uint8_t { H1, H2, H2H1 };

/// PROXY protocol header sent to the upstream right after connecting, carrying the client's
/// address (https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt).
enum class ProxyProtocol : std::uint8_t { None, V1, V2 };

/// How to connect to and talk with a peer. Unlike Pingora, every timeout has a finite default.
struct PeerOptions {
  /// TCP (or Unix) connect; on expiry the attempt fails with ConnectTimedout.
  Millis connection_timeout{5000};
  /// TCP connect plus TLS handshake together; 0 = only `connection_timeout` applies.
  Millis total_connection_timeout{0};
  /// Each read of the upstream response while waiting for bytes; on expiry ReadTimedout (504).
  Millis read_timeout{60000};
  /// Each write to the upstream; on expiry WriteTimedout (504).
  Millis write_timeout{60000};
  /// How long a pooled connection may stay idle; 0 disables pooling for this peer.
  Millis idle_timeout{60000};
  /// Verify the upstream certificate chain and host name (TLS only).
  bool verify_cert = true;
  bool verify_hostname = true;
  /// A CA bundle for this peer; empty = the system store.
  std::string ca_file;
  /// A client certificate chain (PEM) and its key, for upstreams that require mTLS. The key
  /// file may be omitted when the certificate file holds the key too.
  std::string client_cert_file;
  std::string client_key_file;
  Alpn alpn = Alpn::H1;
  /// Streams per upstream HTTP/2 connection.
  std::uint32_t max_h2_streams = 100;
  /// TCP keepalive: idle time before the first probe; 0 = off.
  Millis tcp_keepalive{0};
  /// TCP keepalive: time between probes and probes before the connection is dropped; 0 = the
  /// system default.
  Millis tcp_keepalive_interval{0};
  std::uint32_t tcp_keepalive_count = 0;
  /// Send a PROXY protocol header. Such a connection speaks for one client, so it is reused
  /// only by later requests of the same client connection, never pooled for others.
  ProxyProtocol proxy_protocol = ProxyProtocol::None;
  /// Local address to bind before connecting, if any.
  std::optional<SocketAddr> bind_to;
};

/// An upstream for one attempt. `upstream_peer` returns one per attempt; a hook may hand out the
/// same immutable peer to every request (it is shared, not copied).
class HttpPeer {
 public:
  HttpPeer() = default;
  /// `addr` must be a literal address ("10.0.0.1:80", "[::1]:8443", "unix:/run/app.sock").
  HttpPeer(SocketAddr addr, bool use_tls, std::string server_name = {})
      : address(addr), tls(use_tls), sni(std::move(server_name)) {}

  SocketAddr address;
  bool tls = false;
  /// Server name sent in TLS SNI and checked against the certificate.
  std::string sni;
  /// Isolates connections of otherwise identical peers into separate pool buckets.
  std::uint64_t group_key = 0;
  PeerOptions options;

  /// A hash of exactly the fields that make two connections interchangeable: address, scheme,
  /// SNI, verification flags, CA, ALPN, PROXY protocol and group key. Timeouts are not part
  /// of it.
  std::uint64_t reuse_hash() const noexcept;
  /// "127.0.0.1:8080" or "tls://host@1.2.3.4:443".
  std::string to_string() const;
};

using HttpPeerPtr = std::shared_ptr<const HttpPeer>;

/// A shorthand for the common case: a plain-text peer at `addr`.
HttpPeerPtr make_peer(SocketAddr addr, bool tls = false, std::string sni = {});

}  // namespace portico
