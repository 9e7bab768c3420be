// HttpServerOptions: limits and timeouts of an HTTP proxy service, all with defaults.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace portico {

/// Per-service limits, timeouts and retry policy. Every field has a production default.
struct HttpServerOptions {
  using ms = std::chrono::milliseconds;

  /// Largest request header section (request line + fields); past it the client gets 431.
  std::size_t max_header_bytes = 64 * 1024;
  /// Most fields in a request header section; past it the client gets 431.
  std::size_t max_header_count = 128;
  /// Longest request-target (path and query); past it the client gets 414.
  std::size_t max_request_target_bytes = 8 * 1024;
  /// Largest upstream response header section; past it the client gets 502.
  std::size_t max_response_header_bytes = 64 * 1024;
  std::size_t max_response_header_count = 128;
  /// Bytes read or written in one step of a streamed body, per direction. Together with the
  /// socket buffers this bounds the memory one request can hold.
  std::size_t body_buffer_bytes = 64 * 1024;

  /// Waiting for the rest of a request header once its first byte arrived.
  ms header_read_timeout{60000};
  /// An idle keep-alive client connection is closed after this (Pingora keeps it forever).
  ms keepalive_timeout{60000};
  /// Waiting for the next piece of a request body.
  ms body_read_timeout{60000};
  /// Writing to the client.
  ms write_timeout{60000};
  /// Whole-request deadline, from the complete request head to the end of the response; 0 = none.
  /// Upstream waits cut by it answer 504.
  ms request_timeout{0};
  /// A tunnel (after a 101, or an accepted CONNECT) closes after this long without a byte in a
  /// direction that is being read.
  ms tunnel_idle_timeout{300000};

  /// Retries after the first attempt. Connect failures, and failures on a reused upstream
  /// connection before any response byte, are retried; nothing else is by default.
  std::uint32_t max_retries = 3;
  /// Request body bytes kept so that a retried attempt can send them again. A request whose
  /// body outgrew it is not retried once its body started flowing.
  std::size_t retry_buffer_bytes = 64 * 1024;
  /// Let CONNECT requests through the hooks: `upstream_peer` picks the target, the client gets
  /// "200 Connection Established" and bytes are tunnelled. Off: CONNECT is answered 405.
  bool allow_connect_method = false;
  /// Requests served on one client connection before it is closed; 0 = unlimited.
  std::uint32_t keepalive_request_limit = 0;

  /// Idle upstream connections kept per peer key and in total, per worker.
  std::size_t pool_max_idle_per_key = 128;
  std::size_t pool_max_idle_total = 4096;
  /// When a worker has no idle connection for a peer, take one another worker holds before
  /// opening a new one (Server only; serve() runs one worker).
  bool pool_cross_worker = true;
  /// How long a worker waits for another to hand over an idle connection before it connects.
  ms pool_steal_timeout{10};
  /// Requests served on one upstream connection before it is retired; 0 = unlimited.
  std::uint32_t upstream_request_limit = 0;
};

}  // namespace portico
