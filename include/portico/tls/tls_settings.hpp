// TLS settings of a listener, certificates, and what a Session knows about a client's TLS.
// OpenSSL stays out of this header.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <portico/core/result.hpp>
#include <portico/core/task.hpp>

namespace portico {

enum class TlsVersion : std::uint8_t { Tls12, Tls13 };

/// Whether a TLS listener asks clients for a certificate.
enum class ClientAuth : std::uint8_t {
  None,      ///< no certificate requested
  Optional,  ///< requested; a client without one is accepted, a bad one is refused
  Required,  ///< the handshake fails without a certificate the CA vouches for
};

/// A certificate chain and its private key, loaded and checked to match. Immutable and shared:
/// a certificate hook may return the same one for many handshakes.
class CertifiedKey {
 public:
  /// PEM files: the leaf first, then intermediates; the key in PKCS#8 or traditional form.
  static Result<std::shared_ptr<const CertifiedKey>> from_files(const std::string& cert_file,
                                                                const std::string& key_file);
  static Result<std::shared_ptr<const CertifiedKey>> from_pem(std::string_view cert_pem,
                                                              std::string_view key_pem);
  ~CertifiedKey();
  CertifiedKey(const CertifiedKey&) = delete;
  CertifiedKey& operator=(const CertifiedKey&) = delete;

  /// DNS names the leaf certificate is valid for (subjectAltName, or the CN without one).
  const std::vector<std::string>& names() const noexcept { return names_; }

  struct Impl;
  const Impl& impl() const noexcept { return *impl_; }

 private:
  explicit CertifiedKey(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::vector<std::string> names_;
};

using CertifiedKeyPtr = std::shared_ptr<const CertifiedKey>;

/// Picks or builds the certificate for one handshake from the SNI name the client sent (empty
/// when it sent none). Runs before the handshake continues, on the connection's worker; may
/// suspend (fetch from a store, issue one). Return null to fall back to the SNI table.
using CertificateHook = std::function<task<CertifiedKeyPtr>(std::string sni)>;

/// TLS of a listening address. The defaults are safe: TLS 1.2 and 1.3 only, forward-secret
/// AEAD ciphers, tickets with rotating keys, no client certificate.
struct TlsSettings {
  /// Certificate chain and key files. The first is the default (no SNI, or an unknown name);
  /// every one serves the DNS names in its certificate, exact names before wildcards.
  struct Files {
    std::string cert_file;
    std::string key_file;
  };
  std::vector<Files> certificates;

  TlsVersion min_version = TlsVersion::Tls12;
  TlsVersion max_version = TlsVersion::Tls13;
  /// TLS 1.2 cipher list (OpenSSL syntax); TLS 1.3 suites (empty = OpenSSL's defaults).
  std::string ciphers =
      "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
      "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
  std::string ciphersuites;
  /// ALPN protocols accepted, in the server's preference order: "h2" (each stream is proxied as
  /// one request) and "http/1.1". A client without ALPN speaks HTTP/1.1; one that offers only
  /// other protocols is refused with the no_application_protocol alert (RFC 7301).
  std::vector<std::string> alpn = {"h2", "http/1.1"};

  /// Stateless resumption with session tickets; the encryption key is replaced every
  /// `ticket_key_rotation`, and tickets made with the previous key are still accepted.
  bool session_tickets = true;
  std::chrono::milliseconds ticket_key_rotation{std::chrono::hours(1)};
  /// Stateful resumption (session IDs): sessions kept by the listener. 0 disables it.
  std::size_t session_cache_size = 20480;
  std::chrono::milliseconds session_lifetime{std::chrono::minutes(5)};

  ClientAuth client_auth = ClientAuth::None;
  /// CA bundle (PEM) client certificates must chain to.
  std::string client_ca_file;

  /// The whole handshake, from the first byte; on expiry the connection is closed.
  std::chrono::milliseconds handshake_timeout{10000};

  /// Optional: choose the certificate per handshake (see CertificateHook).
  CertificateHook certificate_hook;
};

/// What a Session knows about the client's TLS connection.
struct TlsInfo {
  std::string version;  ///< "TLSv1.3"
  std::string cipher;   ///< "TLS_AES_128_GCM_SHA256"
  std::string sni;      ///< the server name the client asked for, or empty
  std::string alpn;     ///< the negotiated protocol, or empty
  bool resumed = false; ///< an abbreviated handshake (ticket or session cache)
  /// A client certificate that verified against client_ca_file: its subject ("CN=alice,O=x")
  /// and its DNS / email names. Empty when the client sent none.
  std::string client_subject;
  std::vector<std::string> client_names;
};

}  // namespace portico
