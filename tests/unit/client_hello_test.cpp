// The SNI reader that runs on raw, hostile bytes before OpenSSL sees them.
#include <openssl/ssl.h>

#include <random>

#include <gtest/gtest.h>

#include "tls/tls.hpp"

namespace {

using portico::detail::client_hello_sni;

/// A real ClientHello from OpenSSL, with `sni` (none when empty).
std::string client_hello(const std::string& sni) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, rbio, wbio);
  if (!sni.empty()) SSL_set_tlsext_host_name(ssl, sni.c_str());
  SSL_connect(ssl);  // writes the hello, then wants to read
  char* data = nullptr;
  long n = BIO_get_mem_data(wbio, &data);
  std::string out(data, static_cast<std::size_t>(n));
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return out;
}

std::optional<std::string> sni_of(const std::string& b, std::size_t& need) {
  return client_hello_sni(reinterpret_cast<const unsigned char*>(b.data()), b.size(), need);
}

TEST(ClientHello, ReadsTheServerNameInLowerCase) {
  std::size_t need = 0;
  EXPECT_EQ(sni_of(client_hello("Api.Example.COM"), need), "api.example.com");
  EXPECT_EQ(sni_of(client_hello(""), need), "");
}

TEST(ClientHello, EveryTruncationAsksForMoreOrGivesUp) {
  const std::string hello = client_hello("a.test");
  for (std::size_t len = 0; len < hello.size(); ++len) {
    std::size_t need = 0;
    auto r = sni_of(hello.substr(0, len), need);
    EXPECT_FALSE(r.has_value()) << len;
    EXPECT_GT(need, len) << len;
    EXPECT_LE(need, hello.size()) << len;
  }
}

TEST(ClientHello, NotAHandshakeRecord) {
  std::size_t need = 7;
  EXPECT_FALSE(sni_of("GET / HTTP/1.1\r\n\r\n", need).has_value());
  EXPECT_EQ(need, 0u);
}

TEST(ClientHello, CorruptedHellosNeverReadOutOfBounds) {
  // Under ASan this is the check that matters: random corruption of lengths and types.
  const std::string hello = client_hello("fuzz.test");
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::string b = hello;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) b[rng() % b.size()] = static_cast<char>(rng());
    b.resize(rng() % (b.size() + 1));
    std::size_t need = 0;
    auto r = sni_of(b, need);
    if (r) EXPECT_LE(r->size(), b.size());
  }
}

}  // namespace
