// TLS for tests: a throwaway certificate authority that issues certificates at test time (no
// key is ever committed), and a blocking TLS client that reports what the handshake did.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <portico/testing/client.hpp>

namespace portico::testing {

/// A CA with its key, and certificates it signs, as PEM files in a fresh temporary directory
/// that is removed with the object.
class TestPki {
 public:
  TestPki();
  ~TestPki();
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  struct Issued {
    std::string cert_file;  ///< the leaf, then the CA certificate
    std::string key_file;
    std::string common_name;
  };
  /// A certificate for `names` (DNS names, or IP literals, as subjectAltName; the first is the
  /// CN), valid from an hour ago for `days` days (negative: expired), signed by this CA.
  /// `client`: for client authentication instead of server.
  Issued issue(const std::vector<std::string>& names, int days = 30, bool client = false);
  /// The same, but self-signed: no CA vouches for it.
  Issued self_signed(const std::vector<std::string>& names);
  /// Writes `issued`'s certificate and key over the files of `target` (for reload tests).
  static void replace(const Issued& target, const Issued& with);

  const std::string& ca_file() const noexcept;
  const std::string& dir() const noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

/// A resumable TLS session a TlsClient handed out.
struct TlsSessionHandle;

struct TlsClientOptions {
  std::string sni;       ///< server name to send; empty: none
  std::string ca_file;   ///< trust anchors; empty with verify: the handshake fails unless verify=false
  bool verify = true;    ///< verify the server certificate (and `sni` as its name, if set)
  std::vector<std::string> alpn = {"http/1.1"};
  std::string cert_file;  ///< client certificate and key, for mTLS
  std::string key_file;
  std::shared_ptr<TlsSessionHandle> resume;  ///< offer this session
  std::chrono::milliseconds timeout{10000};
};

/// A blocking TLS client on 127.0.0.1:`port`. The constructor connects and handshakes.
class TlsClient {
 public:
  TlsClient(std::uint16_t port, TlsClientOptions o = {});
  ~TlsClient();
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  bool connected() const noexcept;
  /// Why the handshake failed, if it did.
  const std::string& error() const noexcept;
  bool resumed() const noexcept;
  std::string alpn() const;
  std::string version() const;
  /// CN of the certificate the server presented.
  std::string peer_common_name() const;
  /// The session to resume later. With TLS 1.3 it arrives after the handshake: take it after a
  /// response was read.
  std::shared_ptr<TlsSessionHandle> session() const;

  bool send(std::string_view raw);
  /// Reads one response (Content-Length or chunked body); nullopt on close, error or timeout.
  std::optional<ClientResponse> read_response();
  std::optional<ClientResponse> get(std::string_view target, std::string_view host = "h");

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace portico::testing
