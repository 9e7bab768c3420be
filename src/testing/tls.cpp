#include <portico/testing/tls.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace portico::testing {

namespace {

std::string errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char b[256];
    ERR_error_string_n(e, b, sizeof b);
    if (!out.empty()) out += "; ";
    out += b;
  }
  return out;
}

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error("TestPki: " + what + ": " + errors()); }

EVP_PKEY* new_key() {
  EVP_PKEY* k = EVP_EC_gen("P-256");
  if (!k) fail("EVP_EC_gen");
  return k;
}

void add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) fail("extension " + value);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

bool is_ip(const std::string& s) {
  unsigned char b[16];
  return inet_pton(AF_INET, s.c_str(), b) == 1 || inet_pton(AF_INET6, s.c_str(), b) == 1;
}

/// An unsigned certificate for `key`, CN `cn`, issued by `ca` (by itself when ca is null).
X509* make_cert(EVP_PKEY* key, const std::string& cn, X509* ca, int days) {
  X509* x = X509_new();
  X509_set_version(x, 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(x), days < 0 ? -86400L * (1 - days) : -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400L * days);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : name);
  return x;
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
  if (!f) throw std::runtime_error("TestPki: cannot write " + path);
}

std::string pem_cert(X509* x) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, x);
  char* d = nullptr;
  long n = BIO_get_mem_data(b, &d);
  std::string s(d, static_cast<std::size_t>(n));
  BIO_free(b);
  return s;
}

std::string pem_key(EVP_PKEY* k) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr);
  char* d = nullptr;
  long n = BIO_get_mem_data(b, &d);
  std::string s(d, static_cast<std::size_t>(n));
  BIO_free(b);
  return s;
}

}  // namespace

struct TestPki::Impl {
  std::string dir;
  std::string ca_file;
  EVP_PKEY* ca_key = nullptr;
  X509* ca = nullptr;
  int counter = 0;
  ~Impl() {
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }
};

TestPki::TestPki() : impl_(std::make_unique<Impl>()) {
  char tmpl[] = "/tmp/portico-pki-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error("TestPki: mkdtemp failed");
  impl_->dir = tmpl;
  impl_->ca_key = new_key();
  impl_->ca = make_cert(impl_->ca_key, "portico test CA", nullptr, 365);
  add_ext(impl_->ca, impl_->ca, NID_basic_constraints, "critical,CA:TRUE");
  add_ext(impl_->ca, impl_->ca, NID_key_usage, "critical,keyCertSign,cRLSign");
  add_ext(impl_->ca, impl_->ca, NID_subject_key_identifier, "hash");
  if (X509_sign(impl_->ca, impl_->ca_key, EVP_sha256()) == 0) fail("signing the CA");
  impl_->ca_file = impl_->dir + "/ca.pem";
  write_file(impl_->ca_file, pem_cert(impl_->ca));
}

TestPki::~TestPki() = default;

const std::string& TestPki::ca_file() const noexcept { return impl_->ca_file; }
const std::string& TestPki::dir() const noexcept { return impl_->dir; }

namespace {
TestPki::Issued issue_impl(TestPki::Impl& I, const std::vector<std::string>& names, int days, bool client,
                           bool self_signed) {
  if (names.empty()) throw std::runtime_error("TestPki: a certificate needs a name");
  EVP_PKEY* key = new_key();
  X509* x = make_cert(key, names[0], self_signed ? nullptr : I.ca, days);
  X509* issuer = self_signed ? x : I.ca;
  std::string san;
  for (const auto& n : names) san += (san.empty() ? "" : ",") + std::string(is_ip(n) ? "IP:" : "DNS:") + n;
  add_ext(x, issuer, NID_subject_alt_name, san);
  add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE");
  add_ext(x, issuer, NID_ext_key_usage, client ? "clientAuth" : "serverAuth");
  if (!self_signed) add_ext(x, issuer, NID_authority_key_identifier, "keyid:always");
  if (X509_sign(x, self_signed ? key : I.ca_key, EVP_sha256()) == 0) fail("signing " + names[0]);
  const std::string base = I.dir + "/" + std::to_string(++I.counter) + "-" + names[0];
  TestPki::Issued out{base + ".crt", base + ".key", names[0]};
  write_file(out.cert_file, pem_cert(x) + (self_signed ? "" : pem_cert(I.ca)));
  write_file(out.key_file, pem_key(key));
  X509_free(x);
  EVP_PKEY_free(key);
  return out;
}
}  // namespace

TestPki::Issued TestPki::issue(const std::vector<std::string>& names, int days, bool client) {
  return issue_impl(*impl_, names, days, client, false);
}

TestPki::Issued TestPki::self_signed(const std::vector<std::string>& names) {
  return issue_impl(*impl_, names, 30, false, true);
}

void TestPki::replace(const Issued& target, const Issued& with) {
  std::filesystem::copy_file(with.cert_file, target.cert_file, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(with.key_file, target.key_file, std::filesystem::copy_options::overwrite_existing);
}

// ---- TlsClient ------------------------------------------------------------------------------

struct TlsSessionHandle {
  SSL_SESSION* s = nullptr;
  ~TlsSessionHandle() { SSL_SESSION_free(s); }
};

struct TlsClient::Impl {
  int fd = -1;
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  bool ok = false;
  std::string error;
  std::string buf;
  ~Impl() {
    if (ssl && ok) SSL_shutdown(ssl);  // close_notify; keeps the session resumable
    if (ssl) SSL_free(ssl);
    if (ctx) SSL_CTX_free(ctx);
    if (fd >= 0) ::close(fd);
  }
};

TlsClient::TlsClient(std::uint16_t port, TlsClientOptions o) : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  I.fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{static_cast<time_t>(o.timeout.count() / 1000), static_cast<suseconds_t>((o.timeout.count() % 1000) * 1000)};
  ::setsockopt(I.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(I.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(I.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    I.error = "connect failed";
    return;
  }
  I.ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_session_cache_mode(I.ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  if (o.verify) {
    SSL_CTX_set_verify(I.ctx, SSL_VERIFY_PEER, nullptr);
    if (!o.ca_file.empty()) SSL_CTX_load_verify_locations(I.ctx, o.ca_file.c_str(), nullptr);
  }
  if (!o.cert_file.empty()) {
    SSL_CTX_use_certificate_chain_file(I.ctx, o.cert_file.c_str());
    SSL_CTX_use_PrivateKey_file(I.ctx, o.key_file.c_str(), SSL_FILETYPE_PEM);
  }
  std::string wire;
  for (const auto& p : o.alpn) {
    wire.push_back(static_cast<char>(p.size()));
    wire += p;
  }
  if (!wire.empty()) SSL_CTX_set_alpn_protos(I.ctx, reinterpret_cast<const unsigned char*>(wire.data()),
                                             static_cast<unsigned>(wire.size()));
  I.ssl = SSL_new(I.ctx);
  SSL_set_fd(I.ssl, I.fd);
  if (!o.sni.empty()) {
    SSL_set_tlsext_host_name(I.ssl, o.sni.c_str());
    if (o.verify) SSL_set1_host(I.ssl, o.sni.c_str());
  }
  if (o.resume && o.resume->s) SSL_set_session(I.ssl, o.resume->s);
  if (SSL_connect(I.ssl) != 1) {
    const long v = SSL_get_verify_result(I.ssl);
    I.error = v != X509_V_OK ? std::string("certificate: ") + X509_verify_cert_error_string(v) : errors();
    if (I.error.empty()) I.error = "handshake failed";
    return;
  }
  I.ok = true;
}

TlsClient::~TlsClient() = default;

bool TlsClient::connected() const noexcept { return impl_->ok; }
const std::string& TlsClient::error() const noexcept { return impl_->error; }
bool TlsClient::resumed() const noexcept { return impl_->ok && SSL_session_reused(impl_->ssl) == 1; }

std::string TlsClient::alpn() const {
  const unsigned char* p = nullptr;
  unsigned n = 0;
  if (impl_->ok) SSL_get0_alpn_selected(impl_->ssl, &p, &n);
  return std::string(reinterpret_cast<const char*>(p), n);
}

std::string TlsClient::version() const { return impl_->ok ? SSL_get_version(impl_->ssl) : ""; }

std::string TlsClient::peer_common_name() const {
  if (!impl_->ok) return {};
  X509* x = SSL_get0_peer_certificate(impl_->ssl);
  if (!x) return {};
  char cn[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
  return cn;
}

std::shared_ptr<TlsSessionHandle> TlsClient::session() const {
  auto h = std::make_shared<TlsSessionHandle>();
  if (impl_->ok) h->s = SSL_get1_session(impl_->ssl);
  return h;
}

bool TlsClient::send(std::string_view raw) {
  if (!impl_->ok) return false;
  while (!raw.empty()) {
    int n = SSL_write(impl_->ssl, raw.data(), static_cast<int>(raw.size()));
    if (n <= 0) return false;
    raw.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::optional<ClientResponse> TlsClient::read_response() {
  Impl& I = *impl_;
  if (!I.ok) return std::nullopt;
  auto fill = [&]() {
    char b[16384];
    int n = SSL_read(I.ssl, b, sizeof b);
    if (n <= 0) return false;
    I.buf.append(b, static_cast<std::size_t>(n));
    return true;
  };
  std::size_t end;
  while ((end = I.buf.find("\r\n\r\n")) == std::string::npos)
    if (!fill()) return std::nullopt;
  ClientResponse r;
  std::string head = I.buf.substr(0, end + 2);
  I.buf.erase(0, end + 4);
  std::size_t eol = head.find("\r\n");
  std::string status = head.substr(0, eol);
  if (status.size() < 12) return std::nullopt;
  r.status = static_cast<unsigned>(std::atoi(status.c_str() + 9));
  r.reason = status.size() > 13 ? status.substr(13) : "";
  for (std::size_t p = eol + 2; p < head.size();) {
    std::size_t e = head.find("\r\n", p);
    std::string line = head.substr(p, e - p);
    p = e + 2;
    auto c = line.find(':');
    if (c == std::string::npos) continue;
    std::string v = line.substr(c + 1);
    while (!v.empty() && v.front() == ' ') v.erase(0, 1);
    r.headers.emplace_back(line.substr(0, c), v);
  }
  r.keep_alive = r.header("connection") != "close";
  if (r.header("transfer-encoding") == "chunked") {
    for (;;) {
      std::size_t le;
      while ((le = I.buf.find("\r\n")) == std::string::npos)
        if (!fill()) return std::nullopt;
      const std::size_t size = std::strtoul(I.buf.c_str(), nullptr, 16);
      I.buf.erase(0, le + 2);
      while (I.buf.size() < size + 2)
        if (!fill()) return std::nullopt;
      r.body += I.buf.substr(0, size);
      I.buf.erase(0, size + 2);
      if (size == 0) break;
    }
  } else if (r.status >= 200 && r.status != 204 && r.status != 304) {
    const std::size_t len = std::strtoul(r.header("content-length").c_str(), nullptr, 10);
    while (I.buf.size() < len)
      if (!fill()) return std::nullopt;
    r.body = I.buf.substr(0, len);
    I.buf.erase(0, len);
  }
  return r;
}

std::optional<ClientResponse> TlsClient::get(std::string_view target, std::string_view host) {
  std::string req = "GET " + std::string(target) + " HTTP/1.1\r\nHost: " + std::string(host) + "\r\n\r\n";
  if (!send(req)) return std::nullopt;
  return read_response();
}

}  // namespace portico::testing
