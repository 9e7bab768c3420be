// OpenSSL plumbing behind TlsSettings (server side) and PeerOptions (client side).
#pragma once

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <portico/core/result.hpp>
#include <portico/proxy/peer.hpp>
#include <portico/tls/tls_settings.hpp>

namespace portico {

struct CertifiedKey::Impl {
  X509* leaf = nullptr;
  STACK_OF(X509)* chain = nullptr;  // intermediates, may be null
  EVP_PKEY* key = nullptr;
  ~Impl();
};

}  // namespace portico

namespace portico::detail {

/// Session-ticket keys of one listener: the current one encrypts, the previous one still
/// decrypts (and asks for a fresh ticket), so a rotation never forces full handshakes.
class TicketKeys {
 public:
  explicit TicketKeys(std::chrono::milliseconds rotation) : rotation_(rotation) {}
  struct Key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    std::chrono::steady_clock::time_point made;
  };
  /// The key to encrypt with, rotated when due.
  Key current();
  /// The key named `name` (current or previous); false when unknown or expired. `current`:
  /// whether it is the key new tickets are sealed with (and not due for rotation).
  bool find(const unsigned char name[16], Key& out, bool& current);

 private:
  std::mutex mu_;
  std::chrono::milliseconds rotation_;
  bool have_ = false;
  bool have_prev_ = false;
  Key cur_{};
  Key prev_{};
  void rotate_locked();
};

/// The SSL_CTXs of one generation of a listener's certificates: one per certificate, the first
/// the default, with the SNI table that maps names to them. Replaced whole on reload.
class ServerCtxSet {
 public:
  static Result<std::shared_ptr<const ServerCtxSet>> build(const TlsSettings& s,
                                                           std::shared_ptr<TicketKeys> keys);
  ~ServerCtxSet();
  ServerCtxSet(const ServerCtxSet&) = delete;
  ServerCtxSet& operator=(const ServerCtxSet&) = delete;

  SSL_CTX* default_ctx() const noexcept { return ctxs_.front(); }
  /// The context serving `name` (lower case), or null for the default.
  SSL_CTX* lookup(std::string_view name) const;
  const TlsSettings& settings() const noexcept { return settings_; }
  /// Makes a context from a hook's certificate with this set's settings (cached per key).
  SSL_CTX* ctx_for(const CertifiedKeyPtr& ck) const;

 private:
  ServerCtxSet() = default;
  Result<SSL_CTX*> make_ctx(const CertifiedKey& ck) const;
  TlsSettings settings_;
  std::shared_ptr<TicketKeys> keys_;
  std::vector<SSL_CTX*> ctxs_;
  std::vector<CertifiedKeyPtr> certs_;
  std::unordered_map<std::string, SSL_CTX*> exact_;
  std::unordered_map<std::string, SSL_CTX*> wildcard_;  // "example.com" for "*.example.com"
  std::string alpn_wire_;
  mutable std::mutex hook_mu_;
  mutable std::unordered_map<const CertifiedKey*, std::pair<CertifiedKeyPtr, SSL_CTX*>> hook_ctxs_;
  friend struct ServerCallbacks;
};

/// A TLS listener: its settings, its current ServerCtxSet, and reload.
class ServerTls {
 public:
  static Result<std::shared_ptr<ServerTls>> create(TlsSettings s);
  /// The current generation; a handshake keeps the one it started with.
  std::shared_ptr<const ServerCtxSet> current() const;
  /// Re-reads the certificate files. On failure the current set stays and the error says why.
  Result<void> reload();

 private:
  explicit ServerTls(TlsSettings s);
  TlsSettings settings_;
  std::shared_ptr<TicketKeys> keys_;
  mutable std::mutex mu_;
  std::shared_ptr<const ServerCtxSet> set_;
};

/// Fills `info` from an established server-side SSL.
void describe(SSL* ssl, TlsInfo& info);

/// The SNI name in a TLS ClientHello at the start of `data`: the name, "" when the hello has
/// none, or nullopt when more bytes are needed (`need` says up to how many in total) or the
/// bytes are not a ClientHello (`need` = 0).
std::optional<std::string> client_hello_sni(const unsigned char* data, std::size_t len,
                                            std::size_t& need);

/// Client-side contexts for upstream TLS, shared by a service's workers: one SSL_CTX per
/// distinct verification / client-certificate configuration, and the last session of every
/// pool key so that new connections resume.
class ClientTls {
 public:
  ClientTls();
  ~ClientTls();
  ClientTls(const ClientTls&) = delete;
  ClientTls& operator=(const ClientTls&) = delete;

  /// A new SSL for a connection to `peer`, set up for SNI, host verification, ALPN and
  /// resumption (the session remembered for `key`). Errors: a CA or client certificate file
  /// that does not load.
  Result<SSL*> new_ssl(const HttpPeer& peer, std::uint64_t key);
  /// Sessions resumed / full handshakes so far (tests, metrics).
  std::uint64_t resumed() const noexcept { return resumed_.load(std::memory_order_relaxed); }
  std::uint64_t full() const noexcept { return full_.load(std::memory_order_relaxed); }
  void count_handshake(SSL* ssl) noexcept;

 private:
  Result<SSL_CTX*> ctx_for(const PeerOptions& o);
  static int on_new_session(SSL* ssl, SSL_SESSION* sess);
  void remember(std::uint64_t key, SSL_SESSION* sess);

  std::mutex mu_;
  std::unordered_map<std::uint64_t, SSL_CTX*> ctxs_;
  std::unordered_map<std::uint64_t, SSL_SESSION*> sessions_;
  std::atomic<std::uint64_t> resumed_{0};
  std::atomic<std::uint64_t> full_{0};
};

/// The most recent OpenSSL error as text, clearing the queue.
std::string ssl_error_text();

}  // namespace portico::detail
