// Server-side TLS: certificates, SNI selection, ALPN, session tickets and cache, client
// certificates, reload.
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "core/log.hpp"
#include "tls/tls.hpp"

namespace portico {

namespace {
using detail::ssl_error_text;

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::vector<std::string> dns_names(X509* x) {
  std::vector<std::string> names;
  if (auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr))) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* g = sk_GENERAL_NAME_value(sans, i);
      if (g->type == GEN_DNS) {
        const auto* s = g->d.dNSName;
        names.push_back(lower(std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                               static_cast<std::size_t>(ASN1_STRING_length(s)))));
      }
    }
    GENERAL_NAMES_free(sans);
  }
  if (names.empty()) {
    char cn[256];
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn) > 0)
      names.push_back(lower(cn));
  }
  return names;
}

Error tls_error(std::string what) {
  return Error::internal(ErrorType::InvalidCert, std::move(what));
}
}  // namespace

CertifiedKey::Impl::~Impl() {
  X509_free(leaf);
  if (chain) sk_X509_pop_free(chain, X509_free);
  EVP_PKEY_free(key);
}

CertifiedKey::CertifiedKey(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  names_ = dns_names(impl_->leaf);
}
CertifiedKey::~CertifiedKey() = default;

Result<CertifiedKeyPtr> CertifiedKey::from_pem(std::string_view cert_pem, std::string_view key_pem) {
  auto impl = std::make_unique<Impl>();
  BIO* cb = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
  impl->leaf = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
  if (impl->leaf) {
    impl->chain = sk_X509_new_null();
    while (X509* extra = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr)) sk_X509_push(impl->chain, extra);
    ERR_clear_error();  // the loop ends on "no start line"
  }
  BIO_free(cb);
  if (!impl->leaf) return tls_error("no PEM certificate: " + ssl_error_text());
  BIO* kb = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  impl->key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
  BIO_free(kb);
  if (!impl->key) return tls_error("no PEM private key: " + ssl_error_text());
  if (X509_check_private_key(impl->leaf, impl->key) != 1)
    return tls_error("the private key does not match the certificate");
  return CertifiedKeyPtr(new CertifiedKey(std::move(impl)));
}

Result<CertifiedKeyPtr> CertifiedKey::from_files(const std::string& cert_file, const std::string& key_file) {
  auto slurp = [](const std::string& path, std::string& out) {
    BIO* b = BIO_new_file(path.c_str(), "r");
    if (!b) return false;
    char buf[4096];
    int n;
    while ((n = BIO_read(b, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
    BIO_free(b);
    return true;
  };
  std::string cert, key;
  if (!slurp(cert_file, cert)) return tls_error("cannot read certificate file " + cert_file);
  if (!slurp(key_file, key)) return tls_error("cannot read key file " + key_file);
  auto r = from_pem(cert, key);
  if (!r) return tls_error(cert_file + ": " + r.error().to_string());
  return r;
}

}  // namespace portico

namespace portico::detail {

std::string ssl_error_text() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

// ---- ticket keys ----------------------------------------------------------------------------

void TicketKeys::rotate_locked() {
  if (have_) {
    prev_ = cur_;
    have_prev_ = true;
  }
  RAND_bytes(cur_.name, sizeof cur_.name);
  RAND_bytes(cur_.aes, sizeof cur_.aes);
  RAND_bytes(cur_.hmac, sizeof cur_.hmac);
  cur_.made = std::chrono::steady_clock::now();
  have_ = true;
}

TicketKeys::Key TicketKeys::current() {
  std::lock_guard lk(mu_);
  if (!have_ || std::chrono::steady_clock::now() - cur_.made >= rotation_) rotate_locked();
  return cur_;
}

bool TicketKeys::find(const unsigned char name[16], Key& out, bool& current) {
  std::lock_guard lk(mu_);
  current = false;
  if (have_ && std::memcmp(name, cur_.name, 16) == 0) {
    out = cur_;
    // Due for rotation: treat it as the previous key already, so the client gets a new ticket.
    current = std::chrono::steady_clock::now() - cur_.made < rotation_;
    return true;
  }
  // The previous key is good for one more rotation period after it was replaced.
  if (have_prev_ && std::memcmp(name, prev_.name, 16) == 0 &&
      std::chrono::steady_clock::now() - cur_.made < rotation_) {
    out = prev_;
    return true;
  }
  return false;
}

// ---- callbacks --------------------------------------------------------------------------------

namespace {
int set_index() {
  static const int idx = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}
}  // namespace

struct ServerCallbacks {
  static const ServerCtxSet* set_of(SSL_CTX* ctx) {
    return static_cast<const ServerCtxSet*>(SSL_CTX_get_ex_data(ctx, set_index()));
  }

  static int servername(SSL* ssl, int*, void*) {
    const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name) return SSL_TLSEXT_ERR_OK;
    const ServerCtxSet* set = set_of(SSL_get_SSL_CTX(ssl));
    if (!set) return SSL_TLSEXT_ERR_OK;
    // A certificate chosen by the hook before the handshake is kept.
    if (SSL_get_SSL_CTX(ssl) != set->default_ctx()) return SSL_TLSEXT_ERR_OK;
    if (SSL_CTX* ctx = set->lookup(lower(name)); ctx && ctx != SSL_get_SSL_CTX(ssl))
      SSL_set_SSL_CTX(ssl, ctx);
    return SSL_TLSEXT_ERR_OK;
  }

  static int alpn(SSL* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                  unsigned int inlen, void*) {
    const ServerCtxSet* set = set_of(SSL_get_SSL_CTX(ssl));
    if (!set || set->alpn_wire_.empty()) return SSL_TLSEXT_ERR_NOACK;
    unsigned char* selected = nullptr;
    if (SSL_select_next_proto(&selected, outlen,
                              reinterpret_cast<const unsigned char*>(set->alpn_wire_.data()),
                              static_cast<unsigned int>(set->alpn_wire_.size()), in,
                              inlen) != OPENSSL_NPN_NEGOTIATED)
      return SSL_TLSEXT_ERR_ALERT_FATAL;  // RFC 7301: no_application_protocol
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }

  static int ticket(SSL* ssl, unsigned char key_name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx,
                    EVP_MAC_CTX* hctx, int enc) {
    const ServerCtxSet* set = set_of(SSL_get_SSL_CTX(ssl));
    if (!set || !set->keys_) return -1;
    TicketKeys::Key k;
    bool current = true;
    if (enc) {
      k = set->keys_->current();
      std::memcpy(key_name, k.name, 16);
      if (RAND_bytes(iv, 16) != 1) return -1;
    } else if (!set->keys_->find(key_name, k, current)) {
      return 0;  // unknown key: full handshake
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof k.hmac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
        OSSL_PARAM_construct_end()};
    if (EVP_MAC_CTX_set_params(hctx, params) != 1) return -1;
    const int ok = enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k.aes, iv)
                       : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k.aes, iv);
    if (ok != 1) return -1;
    // Decrypting, 1: valid; 2: valid, and issue a fresh ticket. TLS 1.3 clients use a ticket
    // once, so a resumed TLS 1.3 connection always hands out the next one (OpenSSL sends none
    // after a resumption unless asked). A TLS 1.2 client keeps reusing its ticket, so there
    // only one sealed with the previous key is replaced: nginx's choice, sparing a ticket
    // encryption and a record on every resumption.
    if (enc) return 1;
    return current && SSL_version(ssl) < TLS1_3_VERSION ? 1 : 2;
  }
};

// ---- ServerCtxSet -----------------------------------------------------------------------------

ServerCtxSet::~ServerCtxSet() {
  for (SSL_CTX* c : ctxs_) SSL_CTX_free(c);
  for (auto& [k, v] : hook_ctxs_) SSL_CTX_free(v.second);
}

SSL_CTX* ServerCtxSet::lookup(std::string_view name) const {
  if (auto it = exact_.find(std::string(name)); it != exact_.end()) return it->second;
  if (auto dot = name.find('.'); dot != std::string_view::npos) {
    if (auto it = wildcard_.find(std::string(name.substr(dot + 1))); it != wildcard_.end())
      return it->second;
  }
  return nullptr;
}

Result<SSL_CTX*> ServerCtxSet::make_ctx(const CertifiedKey& ck) const {
  const TlsSettings& s = settings_;
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return tls_error("SSL_CTX_new: " + ssl_error_text());
  auto fail = [&](std::string why) -> Result<SSL_CTX*> {
    SSL_CTX_free(ctx);
    return tls_error(std::move(why) + ": " + ssl_error_text());
  };
  auto version = [](TlsVersion v) { return v == TlsVersion::Tls12 ? TLS1_2_VERSION : TLS1_3_VERSION; };
  SSL_CTX_set_min_proto_version(ctx, version(s.min_version));
  SSL_CTX_set_max_proto_version(ctx, version(s.max_version));
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE |
                               (s.session_tickets ? 0 : SSL_OP_NO_TICKET));
  if (!s.ciphers.empty() && SSL_CTX_set_cipher_list(ctx, s.ciphers.c_str()) != 1)
    return fail("cipher list \"" + s.ciphers + "\"");
  if (!s.ciphersuites.empty() && SSL_CTX_set_ciphersuites(ctx, s.ciphersuites.c_str()) != 1)
    return fail("TLS 1.3 cipher suites \"" + s.ciphersuites + "\"");
  const auto& ki = ck.impl();
  if (SSL_CTX_use_certificate(ctx, ki.leaf) != 1) return fail("certificate");
  if (SSL_CTX_use_PrivateKey(ctx, ki.key) != 1) return fail("private key");
  if (ki.chain && SSL_CTX_set1_chain(ctx, ki.chain) != 1) return fail("certificate chain");
  static const unsigned char kSid[] = "portico";
  SSL_CTX_set_session_id_context(ctx, kSid, sizeof kSid - 1);
  if (s.session_cache_size > 0) {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, static_cast<long>(s.session_cache_size));
  } else {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  }
  SSL_CTX_set_timeout(ctx, static_cast<long>(std::max<std::int64_t>(1, s.session_lifetime.count() / 1000)));
  if (s.session_tickets) SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, &ServerCallbacks::ticket);
  if (s.client_auth != ClientAuth::None) {
    if (s.client_ca_file.empty()) return fail("client_auth needs client_ca_file");
    if (SSL_CTX_load_verify_locations(ctx, s.client_ca_file.c_str(), nullptr) != 1)
      return fail("client CA file " + s.client_ca_file);
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(s.client_ca_file.c_str()))
      SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx,
                       SSL_VERIFY_PEER | (s.client_auth == ClientAuth::Required
                                              ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                              : 0),
                       nullptr);
  }
  SSL_CTX_set_tlsext_servername_callback(ctx, &ServerCallbacks::servername);
  SSL_CTX_set_alpn_select_cb(ctx, &ServerCallbacks::alpn, nullptr);
  SSL_CTX_set_ex_data(ctx, set_index(), const_cast<ServerCtxSet*>(this));
  return ctx;
}

Result<std::shared_ptr<const ServerCtxSet>> ServerCtxSet::build(const TlsSettings& s,
                                                                std::shared_ptr<TicketKeys> keys) {
  if (s.certificates.empty() && !s.certificate_hook)
    return tls_error("a TLS listener needs at least one certificate");
  if (s.min_version > s.max_version) return tls_error("min_version is above max_version");
  std::shared_ptr<ServerCtxSet> set(new ServerCtxSet());
  set->settings_ = s;
  set->keys_ = std::move(keys);
  for (const auto& p : s.alpn) {
    if (p.empty() || p.size() > 255) return tls_error("invalid ALPN protocol name");
    set->alpn_wire_.push_back(static_cast<char>(p.size()));
    set->alpn_wire_ += p;
  }
  for (const auto& f : s.certificates) {
    auto ck = CertifiedKey::from_files(f.cert_file, f.key_file);
    if (!ck) return ck.error();
    auto ctx = set->make_ctx(**ck);
    if (!ctx) return ctx.error();
    set->ctxs_.push_back(*ctx);
    set->certs_.push_back(*ck);
    for (const auto& n : (*ck)->names()) {
      if (n.rfind("*.", 0) == 0)
        set->wildcard_.emplace(n.substr(2), *ctx);  // the first certificate naming it wins
      else
        set->exact_.emplace(n, *ctx);
    }
  }
  if (set->ctxs_.empty()) {
    // Hook-only listener: a throwaway self-check context is not possible without a
    // certificate, so the default context has none and a handshake the hook does not serve
    // fails cleanly.
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return tls_error("SSL_CTX_new: " + ssl_error_text());
    SSL_CTX_set_ex_data(ctx, set_index(), set.get());
    SSL_CTX_set_alpn_select_cb(ctx, &ServerCallbacks::alpn, nullptr);
    set->ctxs_.push_back(ctx);
  }
  return std::shared_ptr<const ServerCtxSet>(std::move(set));
}

SSL_CTX* ServerCtxSet::ctx_for(const CertifiedKeyPtr& ck) const {
  std::lock_guard lk(hook_mu_);
  if (auto it = hook_ctxs_.find(ck.get()); it != hook_ctxs_.end()) return it->second.second;
  auto ctx = make_ctx(*ck);
  if (!ctx) {
    log::error_log().warn("TLS: the certificate hook's certificate cannot be used: {}",
                          ctx.error().to_string());
    return nullptr;
  }
  // Bounded: a hook that builds a new certificate per handshake must not grow this forever.
  if (hook_ctxs_.size() >= 1024) {
    for (auto& [k, v] : hook_ctxs_) SSL_CTX_free(v.second);
    hook_ctxs_.clear();
  }
  hook_ctxs_.emplace(ck.get(), std::make_pair(ck, *ctx));
  return *ctx;
}

// ---- ServerTls --------------------------------------------------------------------------------

ServerTls::ServerTls(TlsSettings s)
    : settings_(std::move(s)), keys_(std::make_shared<TicketKeys>(settings_.ticket_key_rotation)) {}

Result<std::shared_ptr<ServerTls>> ServerTls::create(TlsSettings s) {
  std::shared_ptr<ServerTls> t(new ServerTls(std::move(s)));
  auto set = ServerCtxSet::build(t->settings_, t->keys_);
  if (!set) return set.error();
  t->set_ = *set;
  return t;
}

std::shared_ptr<const ServerCtxSet> ServerTls::current() const {
  std::lock_guard lk(mu_);
  return set_;
}

Result<void> ServerTls::reload() {
  auto set = ServerCtxSet::build(settings_, keys_);
  if (!set) return set.error();
  std::lock_guard lk(mu_);
  set_ = *set;
  return ok();
}

// ---- after the handshake ----------------------------------------------------------------------

void describe(SSL* ssl, TlsInfo& info) {
  info.version = SSL_get_version(ssl);
  if (const SSL_CIPHER* c = SSL_get_current_cipher(ssl)) info.cipher = SSL_CIPHER_get_name(c);
  if (const char* n = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) info.sni = n;
  const unsigned char* alpn = nullptr;
  unsigned int alpn_len = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
  info.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_len);
  info.resumed = SSL_session_reused(ssl) == 1;
  info.client_subject.clear();
  info.client_names.clear();
  if (X509* peer = SSL_get0_peer_certificate(ssl); peer && SSL_get_verify_result(ssl) == X509_V_OK) {
    BIO* b = BIO_new(BIO_s_mem());
    X509_NAME_print_ex(b, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253);
    char* data = nullptr;
    long n = BIO_get_mem_data(b, &data);
    info.client_subject.assign(data, static_cast<std::size_t>(n));
    BIO_free(b);
    info.client_names = dns_names(peer);
  }
}

// ---- ClientHello SNI --------------------------------------------------------------------------

std::optional<std::string> client_hello_sni(const unsigned char* d, std::size_t len, std::size_t& need) {
  need = 0;
  if (len >= 1 && d[0] != 22) return std::nullopt;  // not a handshake record
  if (len < 5) {
    need = 5;
    return std::nullopt;
  }
  const std::size_t rec = (std::size_t(d[3]) << 8) | d[4];
  if (len < 5 + rec) {
    need = 5 + rec;
    return std::nullopt;
  }
  // Walk the ClientHello inside the first record; anything odd means "no name".
  std::size_t p = 5;
  const std::size_t end = 5 + rec;
  auto have = [&](std::size_t n) { return p + n <= end; };
  if (!have(4) || d[p] != 1) return std::string();
  p += 4;                     // type, 24-bit length
  if (!have(34)) return std::string();
  p += 34;                    // version, random
  if (!have(1)) return std::string();
  p += 1 + d[p];              // session id
  if (!have(2)) return std::string();
  p += 2 + ((std::size_t(d[p]) << 8) | d[p + 1]);  // cipher suites
  if (!have(1)) return std::string();
  p += 1 + d[p];              // compression methods
  if (!have(2)) return std::string();
  const std::size_t ext_end = std::min(end, p + 2 + ((std::size_t(d[p]) << 8) | d[p + 1]));
  p += 2;
  while (p + 4 <= ext_end) {
    const unsigned type = (unsigned(d[p]) << 8) | d[p + 1];
    const std::size_t elen = (std::size_t(d[p + 2]) << 8) | d[p + 3];
    p += 4;
    if (p + elen > ext_end) break;
    if (type == 0 && elen >= 5) {  // server_name: list length, type 0, name length, name
      const std::size_t nlen = (std::size_t(d[p + 3]) << 8) | d[p + 4];
      if (d[p + 2] == 0 && 5 + nlen <= elen)
        return lower(std::string_view(reinterpret_cast<const char*>(d + p + 5), nlen));
    }
    p += elen;
  }
  return std::string();
}

}  // namespace portico::detail
