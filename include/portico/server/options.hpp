// HttpServerOptions: limits and timeouts of an HTTP proxy service, all with defaults.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace portico {

/// Limits of HTTP/2 connections, toward clients (HttpServerOptions::h2) and upstreams. Every
/// crossing of a flood limit ends the connection with GOAWAY ENHANCE_YOUR_CALM.
struct Http2Options {
  using ms = std::chrono::milliseconds;

  /// Streams the peer may have open at once; past it a new stream is refused.
  std::uint32_t max_concurrent_streams = 128;
  /// Largest header list (names + values + 32 per field) accepted; past it a request is answered
  /// 431 (and a response becomes a 502).
  std::uint32_t max_header_list_size = 64 * 1024;
  /// Flow-control window of each stream: the most body bytes one stream buffers before they are
  /// forwarded. With `connection_window` it bounds the body bytes one connection holds.
  std::uint32_t stream_window = 256 * 1024;
  std::uint32_t connection_window = 1024 * 1024;
  /// Largest frame payload the peer may send (16 KiB .. 16 MiB - 1).
  std::uint32_t max_frame_size = 16 * 1024;
  /// HPACK dynamic table size for the header blocks received.
  std::uint32_t header_table_size = 4096;
  /// Body bytes queued per stream for sending.
  std::size_t send_buffer_bytes = 64 * 1024;

  /// Flood protections, counted over `flood_window`: streams reset early (rapid reset,
  /// CVE-2023-44487), SETTINGS, PING and PRIORITY frames; and in a row: empty DATA frames, and
  /// CONTINUATION frames after one HEADERS.
  ms flood_window{10000};
  std::uint32_t max_resets_per_window = 400;
  std::uint32_t max_settings_per_window = 100;
  std::uint32_t max_pings_per_window = 1000;
  std::uint32_t max_priority_per_window = 1000;
  std::uint32_t max_empty_frames = 32;
  std::uint32_t max_continuations = 8;
};

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
  /// Zero-copy bodies: a response body of known length (Content-Length) with at least this many
  /// bytes still to come once the proxy's read buffer is forwarded goes from the upstream socket
  /// to the client socket with splice(2), through a pipe, without passing through user space.
  /// Only when nothing needs to see the bytes: plain-text (or Unix socket) HTTP/1 upstream,
  /// plain-text HTTP/1 client, and a proxy that does not override response_body_filter. 0 turns
  /// it off. Counted by portico_downstream_spliced_body_bytes_total.
  std::size_t splice_min_body_bytes = 64 * 1024;

  /// Waiting for the rest of a request header once its first byte arrived.
  ms header_read_timeout{60000};
  /// An idle keep-alive client connection is closed after this (Pingora keeps it forever).
  ms keepalive_timeout{60000};
  /// A keep-alive connection idle this long (HTTP/2: without streams) gives back all but its
  /// socket's descriptor (buffers, request state, frames, the reactor's state for it: ~0.4 KiB
  /// of ~12 KiB stays resident for HTTP/1.1) and, over TLS, its SSL object, over HTTP/2 its
  /// protocol state (HPACK tables, settings, windows), until the client sends again. One that
  /// cannot be parked (PROXY protocol listeners, TLS with bytes buffered) frees its read and TLS
  /// buffers instead, and an HTTP/2 one its spare streams and the HTTP/2 codec's frame buffer.
  /// 0 = never. Busy ones never pay for it.
  ms keepalive_park_after{1000};
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
  /// The HTTP/1 request heads a worker sends to plain-text upstreams during one round of its
  /// event loop go to the kernel together, in one io_uring system call, instead of one send
  /// each: an upstream that shares the proxy's CPU is then woken once per round rather than
  /// once per request (-25 % CPU per request on the keep-alive benchmark, docs/performance.md).
  /// Needs liburing at build time and a kernel that allows io_uring; else heads are sent one by
  /// one, as with false.
  bool batch_upstream_sends = true;
  /// The last send of each HTTP/1 keep-alive response (over TLS: its records) goes to the
  /// kernel with the round's other sends, in the same io_uring system call as the upstream
  /// heads, instead of at once: responses leave back to back, so a client (or load generator)
  /// on another CPU is woken once per round rather than once per response (docs/performance.md,
  /// session 19). Same requirements as batch_upstream_sends; false sends each at once.
  bool batch_response_sends = true;
  /// How long a worker waits for another to hand over an idle connection before it connects.
  ms pool_steal_timeout{10};
  /// Requests served on one upstream connection before it is retired; 0 = unlimited.
  std::uint32_t upstream_request_limit = 0;

  /// Accept HTTP/2 with prior knowledge (h2c) on plain-text listeners, next to HTTP/1.1: the
  /// first bytes of a connection tell them apart. TLS listeners offer h2 through ALPN
  /// (TlsSettings::alpn) whatever this says.
  bool h2c = false;
  /// Limits of HTTP/2 client connections. Each stream is one request through the same hooks as
  /// an HTTP/1 request; `keepalive_timeout` closes a connection without open streams.
  Http2Options h2;
};

}  // namespace portico
