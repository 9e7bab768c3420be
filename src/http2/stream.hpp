// The per-stream state of an h2::Session (internal to src/http2/).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include <nghttp2/nghttp2.h>

#include <portico/http/header_map.hpp>

#include "http2/session.hpp"
#include "http2/translate.hpp"

namespace portico::h2 {

/// The value of a `:status` field when it is three digits.
std::optional<std::uint16_t> status_of(const HeaderMap& h);

struct Session::Stream {
  std::int32_t id = 0;
  bool client = false;  // opened by this endpoint

  // ---- receiving ----
  HeaderMap head;                // the header block being received
  std::size_t head_bytes = 0;    // its RFC 7541 size so far
  bool head_too_large = false;   // over max_header_list_size: not stored
  bool head_seen = false;        // the request / final response head arrived
  bool head_reported = false;    // a Head event was queued (server: the owner knows the stream)
  bool request_is_head = false;  // the request method is HEAD: the response has no content
  bool rejected = false;         // the session answered or reset it because of its head size
  bool peer_rst = false;         // the peer sent RST_STREAM
  ContentLength in_len;
  // Received body bytes. Pieces are never reallocated while they hold unread bytes, so the view
  // `received()` returns survives later feeds.
  std::deque<std::string> chunks;
  std::size_t front_off = 0;
  std::size_t buffered = 0;

  // ---- sending ----
  std::string out;  // body bytes queued, from out_off
  std::size_t out_off = 0;
  ContentLength out_len;
  std::optional<HeaderMap> trailers;
  bool head_submitted = false;
  bool has_provider = false;  // a body follows the head
  bool out_end = false;       // the owner gave the last byte (or trailers)
  bool deferred = false;      // nghttp2 waits for `resume_data`
  bool want_writable = false;
  bool local_done = false;  // our END_STREAM went out
  bool app_reset = false;   // the owner reset it
  // The names and values of the response head submitted last (submit_response), which nghttp2
  // reads without copying until it packs the frame; kept across reuses of this object.
  std::unique_ptr<char[]> head_bytes_out;
  std::size_t head_bytes_cap = 0;

  bool closed = false;

  std::size_t out_size() const noexcept { return out.size() - out_off; }
  /// Back to a new stream's state, keeping the memory of `head`, `chunks`, `out` and
  /// `head_bytes_out` (a session reuses the objects of closed streams). Every other field above
  /// is reset here.
  void reset() noexcept {
    id = 0;
    client = false;
    head.clear();
    head_bytes = 0;
    head_too_large = head_seen = head_reported = request_is_head = rejected = peer_rst = false;
    in_len = ContentLength();
    chunks.clear();
    front_off = 0;
    buffered = 0;
    out.clear();
    out_off = 0;
    out_len = ContentLength();
    trailers.reset();
    head_submitted = has_provider = out_end = deferred = want_writable = local_done = false;
    app_reset = false;
    closed = false;
  }
};

/// The nghttp2 callbacks, static trampolines into the Session (session_callbacks.cpp).
struct Session::Callbacks {
  struct Impl;  // the trampolines; nested, so they reach the Session's private state
  /// A callback table for a session; the caller deletes it once the session copied it.
  static nghttp2_session_callbacks* make();
  /// The data provider of every stream with a body: it reads the stream's send buffer.
  static nghttp2_data_provider provider();
};

}  // namespace portico::h2
