// A blocking HTTP/1.1 test client (Beast) with a read timeout, so a test can never hang.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <portico/testing/origin.hpp>

namespace portico::testing {

struct ClientResponse {
  unsigned status = 0;
  std::string reason;
  Fields headers;
  std::string body;
  bool keep_alive = false;
  std::string header(std::string_view name) const;
  bool has_header(std::string_view name) const;
};

class Client {
 public:
  /// Connects to 127.0.0.1:`port`. Every read gives up after `timeout`.
  explicit Client(std::uint16_t port, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const noexcept;
  int fd() const noexcept;
  /// Sends raw bytes.
  bool send(std::string_view raw);
  /// Reads one response; nullopt when the connection closed or the read timed out.
  /// `head` tells the parser the request was HEAD.
  std::optional<ClientResponse> read_response(bool head = false);
  /// Sends a request (Host and Content-Length are added) and reads the response.
  std::optional<ClientResponse> request(std::string_view method, std::string_view target,
                                        const Fields& headers = {}, std::string_view body = {});
  std::optional<ClientResponse> get(std::string_view target) { return request("GET", target); }
  /// True when the server closed the connection (EOF or reset) within the timeout.
  bool closed_by_peer();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace portico::testing
