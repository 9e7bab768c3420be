// Session: one downstream request as the hooks see it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <portico/core/result.hpp>
#include <portico/core/socket_addr.hpp>
#include <portico/core/task.hpp>
#include <portico/http/message.hpp>
#include <portico/proxy/peer.hpp>
#include <portico/tls/tls_settings.hpp>

namespace portico {

namespace detail {
struct SessionAccess;
}

/// What the engine knows about the upstream connection of the current attempt.
struct ConnectionInfo {
  /// True when the connection came from the pool rather than a fresh connect.
  bool reused = false;
  SocketAddr peer_addr;
  SocketAddr local_addr;
  /// The socket's file descriptor, for socket options or accounting. Do not close it.
  int fd = -1;
};

/// The downstream request being proxied, plus the means to answer it directly.
///
/// The engine owns the session; hooks receive it by reference for the duration of one request.
/// `write_response_header` / `write_response_body` / `respond*` let `request_filter` (or any header-phase
/// hook) answer without going upstream. They fail with a Downstream WriteError when the client is
/// gone; after a final response header was written the proxy will not send another.
class Session {
 public:
  using clock = std::chrono::steady_clock;

  Session() = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  virtual ~Session();

  /// The downstream request header. Hooks may change it; changes before `upstream_peer` are seen
  /// by every later phase and every retry.
  RequestHeader& req_header() noexcept { return req_; }
  const RequestHeader& req_header() const noexcept { return req_; }
  const SocketAddr& client_addr() const noexcept { return client_addr_; }
  const SocketAddr& server_addr() const noexcept { return server_addr_; }
  /// The protocol of the downstream connection.
  Version downstream_version() const noexcept { return req_.version(); }
  /// Index of this request on its downstream connection: 0 for the first, 1 for the next...
  std::uint32_t requests_on_connection() const noexcept { return conn_requests_; }

  /// Attempts that failed and were retried so far (0 during the first attempt).
  std::uint32_t retries() const noexcept { return retries_; }
  /// The peers of the attempts that failed, oldest first; `upstream_peer` uses them to fail over.
  const std::vector<HttpPeerPtr>& failed_peers() const noexcept { return failed_peers_; }
  /// The peer of the current (or last) attempt, or null before `upstream_peer`.
  const HttpPeerPtr& peer() const noexcept { return peer_; }
  /// Whether the current attempt's upstream connection came from the pool.
  bool upstream_reused() const noexcept { return upstream_reused_; }
  /// The client's TLS connection (version, cipher, SNI, ALPN, resumption, verified client
  /// certificate), or null on a plain-text listener.
  const TlsInfo* tls() const noexcept { return tls_info_.get(); }

  /// The status of the response header sent downstream, 0 when none was sent yet.
  std::uint16_t response_status() const noexcept { return resp_status_; }
  /// True once a final response (or a 101 switching protocols) went to the client.
  bool response_written() const noexcept { return resp_status_ >= 200 || resp_status_ == 101; }
  /// Body bytes sent to the client and received from it (after filters), for logging.
  std::uint64_t body_bytes_sent() const noexcept { return body_sent_; }
  std::uint64_t body_bytes_received() const noexcept { return body_received_; }
  /// Of body_bytes_sent(), those moved from the upstream socket to the client socket without a
  /// copy (splice; see HttpServerOptions::splice_min_body_bytes).
  std::uint64_t body_bytes_spliced() const noexcept { return body_spliced_; }
  clock::time_point start_time() const noexcept { return start_; }
  /// Response header bytes sent to the client (status line and fields); with body_bytes_sent(),
  /// nginx's $bytes_sent.
  std::uint64_t header_bytes_sent() const noexcept { return head_sent_; }

  /// Per-phase times of the request, for logs and metrics; a default (zero) time_point when the
  /// phase did not happen. The current (or last) upstream attempt began (upstream_peer returned)...
  clock::time_point upstream_attempt_time() const noexcept { return attempt_at_; }
  /// ...its connection was ready (taken from the pool or connected, TLS included)...
  clock::time_point upstream_connected_time() const noexcept { return connected_at_; }
  /// ...and the final response header was ready to go to the client (for a proxied response:
  /// the upstream's header, after the response filters).
  clock::time_point response_header_time() const noexcept { return resp_head_at_; }

  /// Asks the engine to close the downstream connection after this request.
  void set_keepalive(bool keep) noexcept { keepalive_ = keep && keepalive_; }
  bool keepalive() const noexcept { return keepalive_; }

  /// Writes a response header downstream. `end_of_stream` means no body follows.
  virtual task<Result<void>> write_response_header(ResponseHeader resp, bool end_of_stream) = 0;
  /// Writes body bytes after `write_response_header`; `end_of_stream` ends the response.
  virtual task<Result<void>> write_response_body(std::string_view data, bool end_of_stream) = 0;

  /// Sends a complete response with `body` (and Content-Type when not empty).
  task<Result<void>> respond(std::uint16_t status, std::string_view body,
                             std::string_view content_type = "text/plain");
  /// Sends the proxy's error page for `status`: a short text body, `Connection: close`.
  task<Result<void>> respond_error(std::uint16_t status);

  /// "GET /path, Host: example.com", for log lines.
  std::string request_summary() const;

 protected:
  RequestHeader req_;
  SocketAddr client_addr_;
  SocketAddr server_addr_;
  std::uint32_t conn_requests_ = 0;
  std::uint32_t retries_ = 0;
  std::vector<HttpPeerPtr> failed_peers_;
  HttpPeerPtr peer_;
  bool upstream_reused_ = false;
  std::unique_ptr<TlsInfo> tls_info_;
  bool keepalive_ = true;
  std::uint16_t resp_status_ = 0;
  std::uint64_t body_sent_ = 0;
  std::uint64_t body_received_ = 0;
  std::uint64_t body_spliced_ = 0;
  clock::time_point start_{};
  clock::time_point attempt_at_{};
  clock::time_point connected_at_{};
  clock::time_point resp_head_at_{};
  std::uint64_t head_sent_ = 0;

  friend struct detail::SessionAccess;
};

}  // namespace portico
