// Client-side TLS toward upstreams: verification, SNI, ALPN, client certificates, resumption.
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cstdint>
#include <functional>

#include "tls/tls.hpp"

namespace portico::detail {

namespace {
int key_index() {
  static const int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}
int owner_index() {
  static const int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}

std::uint64_t config_hash(const PeerOptions& o) {
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::uint64_t v) { h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2); };
  mix(o.verify_cert);
  mix(std::hash<std::string>{}(o.ca_file));
  mix(std::hash<std::string>{}(o.client_cert_file));
  mix(std::hash<std::string>{}(o.client_key_file));
  return h;
}

bool is_ip_literal(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}
}  // namespace

ClientTls::ClientTls() = default;

ClientTls::~ClientTls() {
  for (auto& [k, ctx] : ctxs_) SSL_CTX_free(ctx);
  for (auto& [k, s] : sessions_) SSL_SESSION_free(s);
}

Result<SSL_CTX*> ClientTls::ctx_for(const PeerOptions& o) {
  const std::uint64_t h = config_hash(o);
  if (auto it = ctxs_.find(h); it != ctxs_.end()) return it->second;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return Error::internal(ErrorType::TLSHandshakeFailure, "SSL_CTX_new: " + ssl_error_text());
  auto fail = [&](std::string why) -> Result<SSL_CTX*> {
    SSL_CTX_free(ctx);
    return Error::internal(ErrorType::InvalidCert, std::move(why) + ": " + ssl_error_text());
  };
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  if (o.verify_cert) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    const int loaded = o.ca_file.empty()
                           ? SSL_CTX_set_default_verify_paths(ctx)
                           : SSL_CTX_load_verify_locations(ctx, o.ca_file.c_str(), nullptr);
    if (loaded != 1) return fail(o.ca_file.empty() ? "the system CA store" : "CA file " + o.ca_file);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (!o.client_cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, o.client_cert_file.c_str()) != 1)
      return fail("client certificate " + o.client_cert_file);
    const std::string& key = o.client_key_file.empty() ? o.client_cert_file : o.client_key_file;
    if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1)
      return fail("client key " + key);
    if (SSL_CTX_check_private_key(ctx) != 1) return fail("client key does not match its certificate");
  }
  // Sessions are kept here per pool key, not in OpenSSL's internal cache.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, &ClientTls::on_new_session);
  ctxs_.emplace(h, ctx);
  return ctx;
}

Result<SSL*> ClientTls::new_ssl(const HttpPeer& peer, std::uint64_t key) {
  std::lock_guard lk(mu_);
  auto ctx = ctx_for(peer.options);
  if (!ctx) return ctx.error();
  SSL* ssl = SSL_new(*ctx);
  if (!ssl) return Error::internal(ErrorType::TLSHandshakeFailure, "SSL_new: " + ssl_error_text());
  const std::string host = peer.sni.empty() ? peer.address.host() : peer.sni;
  if (!peer.sni.empty() && !is_ip_literal(peer.sni)) SSL_set_tlsext_host_name(ssl, peer.sni.c_str());
  if (peer.options.verify_cert && peer.options.verify_hostname) {
    X509_VERIFY_PARAM* vp = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const int set = is_ip_literal(host) ? X509_VERIFY_PARAM_set1_ip_asc(vp, host.c_str())
                                        : X509_VERIFY_PARAM_set1_host(vp, host.c_str(), host.size());
    if (set != 1) {
      SSL_free(ssl);
      return Error::internal(ErrorType::InvalidCert, "cannot verify against host name " + host);
    }
  }
  // ALPN: what the peer is asked to speak (PeerOptions::alpn).
  static const unsigned char kH1[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  static const unsigned char kH2[] = {2, 'h', '2'};
  static const unsigned char kH2H1[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  switch (peer.options.alpn) {
    case Alpn::H1:
      SSL_set_alpn_protos(ssl, kH1, sizeof kH1);
      break;
    case Alpn::H2:
      SSL_set_alpn_protos(ssl, kH2, sizeof kH2);
      break;
    case Alpn::H2H1:
      SSL_set_alpn_protos(ssl, kH2H1, sizeof kH2H1);
      break;
  }
  SSL_set_ex_data(ssl, key_index(), reinterpret_cast<void*>(static_cast<std::uintptr_t>(key)));
  SSL_set_ex_data(ssl, owner_index(), this);
  if (auto it = sessions_.find(key); it != sessions_.end()) {
    // A TLS 1.3 session is good for one resumption; the resumed connection brings the next.
    if (SSL_SESSION_is_resumable(it->second) == 1) {
      SSL_set_session(ssl, it->second);
    } else {
      SSL_SESSION_free(it->second);
      sessions_.erase(it);
    }
  }
  return ssl;
}

int ClientTls::on_new_session(SSL* ssl, SSL_SESSION* sess) {
  auto* self = static_cast<ClientTls*>(SSL_get_ex_data(ssl, owner_index()));
  if (!self) return 0;
  const auto key = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(SSL_get_ex_data(ssl, key_index())));
  self->remember(key, sess);
  return 1;  // we keep the reference
}

void ClientTls::remember(std::uint64_t key, SSL_SESSION* sess) {
  std::lock_guard lk(mu_);
  SSL_SESSION*& slot = sessions_[key];
  if (slot == sess) {
    SSL_SESSION_free(sess);  // already held; drop the reference the callback gave us
    return;
  }
  if (slot) SSL_SESSION_free(slot);
  slot = sess;
}

void ClientTls::count_handshake(SSL* ssl) noexcept {
  (SSL_session_reused(ssl) == 1 ? resumed_ : full_).fetch_add(1, std::memory_order_relaxed);
}

}  // namespace portico::detail
