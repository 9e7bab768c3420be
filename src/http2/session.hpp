// portico::h2::Session: one HTTP/2 connection, server or client side, without I/O: framing,
// stream states, flow control, the protections below, and HPACK (hpack.hpp), all portico's own.
//
// Bytes in (`feed`), bytes out (`pending_output`/`consume_output`), events out (`poll_event`),
// submissions in (`submit_*`, `send_*`). The owner moves bytes between the session and its socket
// and timers; nothing here blocks, reads a clock other than the one given, or throws on the data
// path.
//
// Inside, frames are parsed straight from the bytes fed (only a frame cut by the end of a read
// is gathered) and DATA payloads are copied once, into the stream's receive buffer. Header
// blocks are HPACK-encoded when submitted into a queue of serialised frames; pending_output()
// moves that queue, then DATA frames taken from the streams' send buffers, into the output
// buffer: one copy of each body byte each way. No allocation per frame or per field in steady
// state.
//
// Memory per connection is bounded, whatever the peer does:
//  - received body bytes wait in per-stream buffers until the owner calls `consume()`; the
//    WINDOW_UPDATEs that let the peer send more are sent only then, so the buffers hold at most
//    `Settings::connection_window` bytes in total and `Settings::stream_window` per stream;
//  - body bytes to send wait in per-stream buffers of at most `Settings::send_buffer_bytes`
//    (`send_data` accepts no more), so at most max streams x send_buffer_bytes;
//  - coalesced output frames: `Settings::output_buffer_bytes` plus one frame (<= 16 KiB + 9) or
//    one header block (<= 128 KiB, larger ones are not sent and reset the stream); queued
//    SETTINGS/PING ACKs are capped by `max_outbound_ack`;
//  - header blocks: `Settings::max_header_list_size` per stream and block (bigger blocks are
//    decoded, since HPACK state must stay in sync, but not stored), at most
//    `max_concurrent_streams` streams open, HPACK tables `header_table_size` each way;
//  - events hold header lists until polled: drain them after every `feed`.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <portico/core/result.hpp>
#include <portico/http/header_map.hpp>

#include "core/id_map.hpp"
#include "http2/hpack.hpp"
#include "http2/translate.hpp"

namespace portico::h2 {

/// HTTP/2 error codes (RFC 9113 §7).
enum class ErrorCode : std::uint32_t {
  NoError = 0x0,
  ProtocolError = 0x1,
  InternalError = 0x2,
  FlowControlError = 0x3,
  SettingsTimeout = 0x4,
  StreamClosed = 0x5,
  FrameSizeError = 0x6,
  RefusedStream = 0x7,
  Cancel = 0x8,
  CompressionError = 0x9,
  ConnectError = 0xa,
  EnhanceYourCalm = 0xb,
  InadequateSecurity = 0xc,
  Http11Required = 0xd,
};

/// The RFC 9113 name of an error code in lowercase ("enhance_your_calm"), "unknown" past 0xd.
std::string_view error_code_name(std::uint32_t code) noexcept;

/// Limits and windows of one session. Every field has a production default.
struct Settings {
  using ms = std::chrono::milliseconds;

  // --- advertised in our SETTINGS ---
  /// Streams the peer may have open at once (server side: client requests). Past it a new stream
  /// is refused (REFUSED_STREAM before our SETTINGS are acknowledged; after that the peer knows
  /// the limit, and crossing it is a connection error, PROTOCOL_ERROR).
  std::uint32_t max_concurrent_streams = 128;
  /// Largest header list (RFC 7541 §4.1 size: names + values + 32 per field) the peer may send.
  /// Past it, a server answers 431 and resets the stream; a client resets the stream (CANCEL) and
  /// reports `EventKind::Rejected` with 502.
  std::uint32_t max_header_list_size = 64 * 1024;
  /// Initial flow-control window of each stream we receive on: the most body bytes one stream
  /// buffers before the owner consumes them.
  std::uint32_t stream_window = 256 * 1024;
  /// Flow-control window of the whole connection: the most body bytes all streams buffer.
  std::uint32_t connection_window = 1024 * 1024;
  /// Largest frame payload the peer may send (16 KiB .. 16 MiB - 1).
  std::uint32_t max_frame_size = 16 * 1024;
  /// HPACK dynamic table size for headers we receive.
  std::uint32_t header_table_size = 4096;

  // --- streams we open (client side) ---
  /// Upper bound on streams this endpoint opens at once; the peer's SETTINGS may lower it.
  std::uint32_t max_outbound_streams = 100;

  // --- sending ---
  /// Body bytes buffered per stream for sending; `send_data` accepts no more.
  std::size_t send_buffer_bytes = 64 * 1024;
  /// Output bytes `pending_output` coalesces before it returns.
  std::size_t output_buffer_bytes = 64 * 1024;

  // --- protections; crossing one sends GOAWAY ENHANCE_YOUR_CALM ---
  /// The window the per-window counts below are taken over.
  ms flood_window{10000};
  /// Streams the peer resets (RST_STREAM) or makes us reset (a malformed request) before they
  /// completed, per window, server side only: the rapid reset attack (CVE-2023-44487).
  std::uint32_t max_resets_per_window = 400;
  /// Non-ACK SETTINGS frames per window.
  std::uint32_t max_settings_per_window = 100;
  /// Non-ACK PING frames per window.
  std::uint32_t max_pings_per_window = 100;
  /// PRIORITY frames per window.
  std::uint32_t max_priority_per_window = 1000;
  /// Consecutive DATA frames with no payload and no END_STREAM.
  std::uint32_t max_empty_frames = 32;
  /// CONTINUATION frames after one HEADERS frame (CVE-2024-27316 and friends).
  std::uint32_t max_continuations = 8;
  /// SETTINGS and PING ACKs queued because the peer does not read; past it the session fails.
  std::size_t max_outbound_ack = 1000;
  /// Entries accepted in one SETTINGS frame.
  std::size_t max_settings_entries = 32;
};

enum class Mode : std::uint8_t { Server, Client };

/// What a session reports. `stream_id` is 0 for connection-level events.
enum class EventKind : std::uint8_t {
  /// A request head (server) or final response head (client) arrived: `fields`, `end_stream`.
  /// On the server this is the first event of a stream.
  Head,
  /// A 1xx response head (client side): `fields`. The final head follows.
  Informational,
  /// `bytes` more body bytes are buffered: read them with `received()`, then `consume()`.
  Data,
  /// The trailer section: `fields`. EndStream follows.
  Trailers,
  /// The peer finished its side of the stream; every body byte was reported before.
  EndStream,
  /// The peer sent RST_STREAM with `code`. Closed follows.
  Reset,
  /// The stream is closed with `code` (NoError after a clean end). `retry_safe`: the peer did not
  /// process it (REFUSED_STREAM, or above the last stream id of its GOAWAY), so a request may be
  /// sent again elsewhere. No event about the stream follows; call `discard()` if body bytes stay.
  Closed,
  /// The peer sent GOAWAY: `last_stream_id`, `code`. Streams above it get Closed + retry_safe.
  Goaway,
  /// We sent GOAWAY: `last_stream_id`, `code` (a protection or a protocol error fired, or the
  /// owner asked for it).
  GoawaySent,
  /// The peer's SETTINGS arrived: `available_streams()` may have changed.
  Settings,
  /// The ACK of a `ping()` arrived.
  PingAck,
  /// The stream's send buffer has room again after `send_data` accepted less than it was given.
  Writable,
  /// The session refused a header block larger than `max_header_list_size`. Server, request
  /// head: `code` 431, already answered, the stream was never reported and nothing follows (log
  /// it). Otherwise the session reset the stream with CANCEL: `code` is 431 (server, trailers) or
  /// 502 (client: answer the downstream with it); Closed follows.
  Rejected,
  /// Server: a request head broke the rules of RFC 9113 §8 (h2::request_problem): `why` says
  /// which. The session reset the stream with PROTOCOL_ERROR (it counts toward the rapid reset
  /// window); the stream was never reported and nothing follows (log it).
  /// Client: a response head, trailer section or DATA frame broke them (h2::response_problem,
  /// trailers_problem, DATA before the head): the session reset the stream with PROTOCOL_ERROR,
  /// nothing more of the response is reported, and Closed follows.
  Malformed,
};

struct Event {
  explicit Event(EventKind k, std::int32_t stream = 0) noexcept : kind(k), stream_id(stream) {}

  EventKind kind;
  std::int32_t stream_id = 0;
  /// Reset, Closed, Goaway, GoawaySent: an ErrorCode value; Rejected: an HTTP status.
  std::uint32_t code = 0;
  /// Goaway, GoawaySent.
  std::int32_t last_stream_id = 0;
  /// Data.
  std::size_t bytes = 0;
  /// Head: END_STREAM came with the head (no body).
  bool end_stream = false;
  /// Closed.
  bool retry_safe = false;
  /// Malformed: the reason, a string with static storage.
  const char* why = nullptr;
  /// Head, Informational, Trailers: the field list, pseudo-header fields first.
  HeaderMap fields;
};

/// How the first bytes of a cleartext connection compare with the HTTP/2 client preface
/// (RFC 9113 §3.4). A listener serving HTTP/1.1 and h2c prior knowledge on one port peeks until
/// the answer is not Partial; "PRI * HTTP/2.0" is not a valid HTTP/1.1 request, so No is safe.
enum class PrefaceMatch : std::uint8_t { No, Partial, Yes };
PrefaceMatch match_client_preface(std::string_view first_bytes) noexcept;

/// The events of a session in order: blocks of eight, linked, whose events never move (an owner
/// handles one in place while handling it queues more) and whose blocks are reused (one in use
/// and two spares at most; none once release() ran on an empty queue).
class EventQueue {
 public:
  EventQueue() = default;
  EventQueue(const EventQueue&) = delete;
  EventQueue& operator=(const EventQueue&) = delete;
  ~EventQueue() {
    while (!empty()) pop();
    release();  // frees the (now empty) block in use too
  }

  bool empty() const noexcept { return !head_ || head_->begin == head_->end; }
  Event& front() noexcept { return head_->at(head_->begin); }
  Event& back() noexcept { return tail_->at(tail_->end - 1); }
  void push(Event&& e) {
    if (!tail_ || tail_->end == kBlock) {
      Block* b = spare_;
      if (b) {
        spare_ = b->next;
        --spares_;
      } else {
        b = new Block;
      }
      b->next = nullptr;
      b->begin = b->end = 0;
      if (tail_)
        tail_->next = b;
      else
        head_ = b;
      tail_ = b;
    }
    new (tail_->slot(tail_->end)) Event(std::move(e));
    ++tail_->end;
  }
  void pop() noexcept {
    head_->at(head_->begin).~Event();
    if (++head_->begin < head_->end) return;
    if (head_ == tail_) {  // empty: the block stays, from its start
      head_->begin = head_->end = 0;
      return;
    }
    Block* b = head_;
    head_ = b->next;
    if (spares_ < 2) {
      b->next = spare_;
      spare_ = b;
      ++spares_;
    } else {
      delete b;
    }
  }
  /// Frees the spare blocks, and the block in use when empty.
  void release() noexcept {
    while (spare_) {
      Block* b = spare_;
      spare_ = b->next;
      delete b;
    }
    spares_ = 0;
    if (head_ && empty()) {
      delete head_;
      head_ = tail_ = nullptr;
    }
  }

 private:
  static constexpr std::uint32_t kBlock = 8;
  struct Block {
    Block* next = nullptr;
    std::uint32_t begin = 0, end = 0;
    alignas(Event) unsigned char storage[kBlock][sizeof(Event)];
    void* slot(std::uint32_t i) noexcept { return storage[i]; }
    Event& at(std::uint32_t i) noexcept {
      return *std::launder(reinterpret_cast<Event*>(storage[i]));
    }
  };
  Block* head_ = nullptr;
  Block* tail_ = nullptr;
  Block* spare_ = nullptr;
  std::uint32_t spares_ = 0;
};

/// One HTTP/2 connection endpoint. Not thread-safe; one owner drives it.
class Session {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  /// A server session expects the client preface first; both sides queue their SETTINGS at once.
  /// `clock` (steady_clock::now by default) times the flood windows.
  Session(Mode mode, const Settings& settings = {}, Clock clock = {});
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  Mode mode() const noexcept { return mode_; }
  const Settings& settings() const noexcept { return settings_; }

  // ---- input ----
  /// Processes received bytes; all of them are consumed unless an error is returned. Events are
  /// queued. An error means the connection is over: a GOAWAY with the matching code (PROTOCOL_ERROR
  /// for a bad preface, ENHANCE_YOUR_CALM for a flood) is queued; write the pending output, then
  /// close. Every connection error (frames on idle streams, bad SETTINGS, a broken
  /// HPACK block, ...) also reports GoawaySent, with last_error() saying why.
  Result<std::size_t> feed(std::string_view bytes);

  /// The next event, or nothing.
  std::optional<Event> poll_event();
  bool has_events() const noexcept { return !events_.empty(); }
  /// The next event left in place (null when none), for an owner that handles it before
  /// pop_event() drops it: no copy of the event. Events queued meanwhile do not move it.
  Event* next_event() noexcept { return has_events() ? &events_.front() : nullptr; }
  void pop_event() noexcept { events_.pop(); }
  /// Gives back a field list the owner is done with (an event's `fields`, emptied here): the
  /// next header blocks are received into its memory instead of a new allocation. As many are
  /// kept as streams were open at once (at least 16), and only those that held at most 2 KiB of
  /// names and values.
  void recycle(HeaderMap&& fields) noexcept;
  /// The largest field list (names and values) recycle() keeps; a larger one is freed.
  static constexpr std::size_t kSpareHeadBytes = 2048;
  /// The capacity of a stream's send or receive buffer kept when the stream ends, for the next
  /// stream its object serves (at most this much each, per direction: every spare stream object
  /// of a client session, whose streams an origin connection shares among many requests at
  /// once, the first kSpare of a server session; an idle connection's trim() frees them).
  static constexpr std::size_t kKeptBuffer = 4096;
  /// For a connection gone idle: frees what the session keeps for the next streams (recycled
  /// stream objects and field lists), empty buffers and the spare room of the HPACK tables.
  /// The session goes on as before (its HPACK tables, settings and windows are untouched).
  void trim() noexcept;

  // ---- output ----
  /// Bytes to write: frames serialised since the last `consume_output`, up to about
  /// `output_buffer_bytes`. The view stays valid until the next `pending_output`; feeding,
  /// submitting and `consume_output` leave it in place, so a writer may hold it across an
  /// asynchronous write while the reader keeps feeding.
  std::string_view pending_output();
  /// The first `n` bytes of `pending_output()` were written.
  void consume_output(std::size_t n) noexcept;

  /// The session still expects frames from the peer / has frames to send. Both false: close.
  bool want_read() const noexcept;
  bool want_write() const noexcept;
  /// The connection is done: nothing to read or write, and no output left.
  bool finished() const noexcept { return !want_read() && !want_write(); }

  // ---- body flow control ----
  /// The received body bytes of `stream_id` not consumed yet, in one or more pieces; the view
  /// of the first piece stays valid until it is consumed (later feeds do not move it).
  std::string_view received(std::int32_t stream_id) const noexcept;
  /// Bytes buffered for `stream_id`, or for all streams.
  std::size_t buffered(std::int32_t stream_id) const noexcept;
  std::size_t buffered() const noexcept { return inbound_buffered_; }
  /// The owner forwarded the first `n` received bytes of the stream: they are freed, and the
  /// stream and connection windows reopen (WINDOW_UPDATE once half a window is consumed).
  void consume(std::int32_t stream_id, std::size_t n);
  /// Consumes everything left on the stream (after Reset/Closed, or to abandon a body).
  void discard(std::int32_t stream_id);

  // ---- submitting ----
  /// Client: opens a stream with the request `fields` (pseudo-header fields first, lowercase).
  /// Without `end_stream`, the body follows with `send_data`/`send_trailers`. Fails when
  /// `!can_open_stream()`.
  Result<std::int32_t> submit_request(const HeaderMap& fields, bool end_stream);
  /// Client: opens a stream with the request `r`, its fields translated as h2::from_request
  /// does (":scheme" is `scheme`), without building an intermediate field list. The size limit
  /// counts the fields of `r` and the pseudo-header fields (not the crumbs of a split cookie
  /// apart).
  Result<std::int32_t> submit_request(const RequestHeader& r, std::string_view scheme,
                                      bool split_cookies, bool end_stream);
  /// Server: sends an interim (1xx) head.
  Result<void> submit_informational(std::int32_t stream_id, const HeaderMap& fields);
  /// Server: sends the response head. Without `end_stream`, the body follows.
  Result<void> submit_response(std::int32_t stream_id, const HeaderMap& fields, bool end_stream);
  /// Server: sends the final head of `r` (a status of 200-999 but 101), its fields translated
  /// as h2::from_response does, without building an intermediate field list.
  /// `field_bytes`, when given, receives the bytes of the names and values sent (uncompressed).
  Result<void> submit_response(std::int32_t stream_id, const ResponseHeader& r, bool end_stream,
                               std::size_t* field_bytes = nullptr);
  /// Queues body bytes; returns how many were accepted (at most `send_capacity`). `end` takes
  /// effect only when every byte was accepted. Fails on a closed stream, after the end, or when
  /// the body would not match the Content-Length of the head (RFC 9113 §8.1.1).
  Result<std::size_t> send_data(std::int32_t stream_id, std::string_view bytes, bool end);
  /// Ends the stream with a trailer section after the queued body.
  Result<void> send_trailers(std::int32_t stream_id, const HeaderMap& fields);
  /// Room left in the stream's send buffer.
  std::size_t send_capacity(std::int32_t stream_id) const noexcept;
  /// Resets the stream with `code` (nothing when it is closed or unknown).
  void reset(std::int32_t stream_id, ErrorCode code);
  /// Sends PING; the ACK is reported as PingAck.
  void ping();

  /// Graceful shutdown (RFC 9113 §6.8). Server: a GOAWAY with 2^31-1 and a PING now, then the
  /// final GOAWAY with the last stream id processed once the PING is acknowledged, so requests in
  /// flight are not lost. Client: GOAWAY(NO_ERROR) and no new stream. Existing streams complete.
  void shutdown();
  /// Immediate GOAWAY with `code`; the connection closes once it is written.
  void terminate(ErrorCode code);

  // ---- state ----
  /// Client: streams that may still be opened now, from min(max_outbound_streams, the peer's
  /// SETTINGS_MAX_CONCURRENT_STREAMS), streams open, GOAWAY and stream id exhaustion.
  std::uint32_t available_streams() const noexcept;
  bool can_open_stream() const noexcept { return available_streams() > 0; }
  /// Streams open (both directions counted once).
  std::size_t open_streams() const noexcept { return open_streams_; }
  bool goaway_received() const noexcept { return goaway_received_; }
  /// The reason of the last connection error, for logs.
  std::string_view last_error() const noexcept { return last_error_; }

  struct Stats {
    std::uint64_t streams_opened = 0;
    std::uint64_t peer_resets = 0;       ///< streams reset by, or because of, the peer early
    std::uint64_t headers_rejected = 0;  ///< heads over max_header_list_size
    std::size_t peak_buffered = 0;       ///< the most received body bytes held at once
  };
  const Stats& stats() const noexcept { return stats_; }

  struct Stream;

 private:
  struct RateWindow {
    std::chrono::steady_clock::time_point start{};
    std::uint32_t count = 0;
  };
  enum class PeerStream : std::uint8_t { Open, ClosedByUs, Closed, Unknown, Forgotten };
  struct PeerRecord {
    std::int32_t id;
    PeerStream state;
  };
  /// Why frame processing stopped: a connection error was raised (GOAWAY queued).
  struct Fatal {};

  // ---- streams ----
  Stream* find(std::int32_t id) const noexcept;
  Stream& open(std::int32_t id);
  /// A stream id no frame may name yet (RFC 9113 §5.1): one the peer has not opened (server),
  /// one we have not opened (client), or an even one (push is off both ways).
  bool idle(std::int32_t id) const noexcept;
  void maybe_erase(std::int32_t id);
  /// Erases (or recycles) the streams closed since the last sweep: done where no caller holds
  /// a Stream reference any more (the end of feed, pending_output, a submission).
  void sweep();
  /// The stream is over (both ends done, or reset): Closed is reported, buffers freed.
  void close(Stream& st, std::uint32_t code);
  /// Queues RST_STREAM and closes the stream (when open).
  void rst(Stream& st, ErrorCode code);
  /// RST_STREAM for a stream without an object (idle or forgotten).
  void rst_id(std::int32_t id, ErrorCode code);
  HeaderMap take_head() noexcept;
  PeerStream peer_stream(std::int32_t id) const noexcept;
  void set_peer_stream(std::int32_t id, PeerStream st) noexcept;

  // ---- input ----
  /// Processes one whole frame (payload complete), except DATA payloads (on_data_bytes).
  bool on_frame(std::uint8_t type, std::uint8_t flags, std::int32_t id, const std::uint8_t* p,
                std::size_t len);
  /// The header of a frame arrived (before its payload): checks that do not need the payload.
  bool on_frame_header(std::uint8_t type, std::uint8_t flags, std::int32_t id, std::size_t len);
  bool on_headers(std::uint8_t flags, std::int32_t id, const std::uint8_t* p, std::size_t len);
  bool on_continuation(std::uint8_t flags, std::int32_t id, const std::uint8_t* p, std::size_t len);
  bool end_header_block();
  bool on_settings(std::uint8_t flags, const std::uint8_t* p, std::size_t len);
  bool on_window_update(std::int32_t id, const std::uint8_t* p, std::size_t len);
  bool on_rst_stream(std::int32_t id, const std::uint8_t* p, std::size_t len);
  bool on_goaway(const std::uint8_t* p, std::size_t len);
  bool on_ping(std::uint8_t flags, const std::uint8_t* p, std::size_t len);
  /// DATA payload bytes (padding excluded) of the frame being received.
  void on_data_bytes(const std::uint8_t* p, std::size_t n);
  /// The DATA frame ended (all its payload arrived).
  bool on_data_end();
  /// The head of `st` is complete (decoded into st.head).
  void on_head(Stream& st, bool end);
  void reject_head(Stream& st, bool end);
  void malformed_response(Stream& st, const char* why);
  void end_stream(Stream& st);
  void remote_closed(Stream& st);
  /// A connection error: GOAWAY with `code`, nothing more is read. Returns false.
  bool fail(ErrorCode code, std::string_view reason);
  bool over_rate(RateWindow& w, std::uint32_t limit);
  /// Counts a stream the peer made us drop early toward the rapid reset window.
  bool count_reset();
  /// Gives the connection's receive window back for `n` bytes read or dropped.
  void consume_connection(std::size_t n);
  /// WINDOW_UPDATE for the stream once half its window was consumed.
  void credit_stream(Stream& s);

  // ---- output ----
  /// Appends a frame header to `to`.
  static void frame_header(std::string& to, std::size_t len, std::uint8_t type, std::uint8_t flags,
                           std::int32_t id);
  void queue_frame(std::uint8_t type, std::uint8_t flags, std::int32_t id,
                   std::string_view payload);
  void queue_settings();
  void queue_window_update(std::int32_t id, std::uint32_t n);
  void queue_goaway(std::int32_t last, ErrorCode code, bool final);
  /// Encodes `block_` (already HPACK bytes) as HEADERS + CONTINUATION frames into `to`.
  void frame_block(std::string& to, std::int32_t id, bool end_stream);
  /// What both submit_request forms check before encoding anything: a client session with room
  /// for a stream, and the request's Content-Length (`fields`: the request's regular fields, or
  /// all of them), which a request without a body must satisfy.
  Result<ContentLength> check_request(const HeaderMap& fields, bool end_stream) const;
  /// The rest of submit_request once block_ holds the encoded head: the stream and its HEADERS.
  Result<std::int32_t> open_request(const ContentLength& len, bool head, bool end_stream);
  /// Encodes the fields of `h` (names lowercased) into block_.
  void encode_fields(const HeaderMap& h);
  void encode_field(std::string_view name, std::string_view value, bool sensitive);
  Result<Stream*> head_stream(std::int32_t stream_id);
  Result<void> submit_final(Stream& s, std::uint16_t status, const HeaderMap& fields,
                            bool end_stream);
  /// Serialises DATA (and trailers) of the streams with bytes to send into out_.
  void write_data();
  /// A stream has bytes (or its end) to send: it joins the send queue.
  void schedule(Stream& st);
  /// send_data's shortcut: `bytes` (all a send_data call gave, none waiting before them)
  /// framed at once as DATA, END_STREAM with `last`; false when it must wait its turn.
  bool frame_now(Stream& s, std::string_view bytes, bool last);
  /// Our END_STREAM for `st` was serialised.
  void local_end(Stream& st);
  Error error(std::string_view why) const;
  void push(Event e) { events_.push(std::move(e)); }
  /// How many spare stream objects and field lists are kept: as many as streams were ever open
  /// at once beyond those open now, at least kSpare.
  std::size_t spare_limit() const noexcept { return std::max(kSpare, peak_open_ - open_streams_); }

  Mode mode_;
  Settings settings_;
  Clock clock_;
  hpack::Decoder decoder_;
  hpack::Encoder encoder_;

  detail::IdMap<std::unique_ptr<Stream>> streams_;
  mutable std::int32_t found_id_ = 0;
  mutable Stream* found_ = nullptr;
  static constexpr std::size_t kSpare = 16;
  std::vector<std::unique_ptr<Stream>> spare_streams_;
  std::vector<std::int32_t> closing_;  // closed, not yet swept
  std::vector<HeaderMap> spare_heads_;
  EventQueue events_;

  // Input state.
  std::size_t preface_left_ = 0;  // server: client preface bytes still expected
  bool settings_seen_ = false;    // the peer's first frame (SETTINGS) arrived
  std::uint8_t hdr_[9] = {};      // a frame header being gathered
  std::size_t hdr_have_ = 0;
  bool in_frame_ = false;  // hdr_ is complete; the payload is being received
  std::uint8_t type_ = 0, flags_ = 0;
  std::int32_t fid_ = 0;
  std::size_t left_ = 0;  // payload bytes of the current frame still to come
  std::size_t flen_ = 0;  // payload length of the current frame
  std::string frame_;     // a non-DATA payload cut by the end of a read
  // DATA being received: padding, the stream it goes to (0: dropped), its bytes so far.
  std::size_t data_pad_ = 0;
  bool data_pad_read_ = false;
  std::int32_t data_sid_ = 0;
  std::size_t data_len_ = 0;
  // A header block spread over HEADERS + CONTINUATION frames.
  std::string block_in_;
  std::int32_t block_sid_ = 0;
  std::uint8_t block_flags_ = 0;
  bool in_block_ = false;
  std::string_view block_view_;  // the complete block being decoded

  // Output state.
  std::string out_;  // serialised bytes, from out_off_
  std::size_t out_off_ = 0;
  std::string queued_;  // frames submitted since the last pending_output
  std::size_t queued_acks_ = 0;
  std::string block_;                     // a header block being encoded
  std::vector<std::int32_t> send_queue_;  // streams with DATA or an end to send, in turn
  std::size_t sq_head_ = 0;               // the next one in send_queue_

  // Windows. Ours: what the peer may still send. Theirs: what we may still send.
  std::int64_t conn_recv_window_ = 65535;
  std::size_t conn_unacked_ = 0;  // bytes consumed, not yet returned by WINDOW_UPDATE
  std::int64_t conn_send_window_ = 65535;
  std::uint32_t local_initial_window_ = 65535;  // the stream window the peer has acknowledged
  std::uint32_t peer_initial_window_ = 65535;
  std::uint32_t peer_max_frame_ = 16384;
  std::uint32_t peer_max_streams_ = 0xffffffffu;
  bool settings_acked_ = false;
  std::uint32_t pending_settings_ = 0;  // our SETTINGS frames not yet acknowledged

  std::size_t inbound_buffered_ = 0;
  std::size_t open_streams_ = 0;
  std::size_t peak_open_ = 0;  // the most streams open at once (since the last trim)
  std::size_t client_streams_ = 0;
  std::int64_t next_stream_id_ = 1;  // client: the next stream we open (past 2^31-1: none)
  std::int32_t max_peer_stream_ = 0;
  std::int32_t last_proc_stream_ = 0;         // the highest stream id of a peer's HEADERS processed
  bool dead_ = false;                         // a connection error: nothing more read
  bool goaway_received_ = false;
  bool goaway_sent_ = false;  // a GOAWAY (other than the shutdown notice) is queued
  bool term_ = false;         // close once the queued output is written
  bool shutting_down_ = false;
  bool final_goaway_sent_ = false;
  std::uint64_t ping_seq_ = 0;
  std::uint64_t shutdown_ping_ = 0;
  std::uint32_t continuations_ = 0;
  std::uint32_t empty_frames_ = 0;
  RateWindow resets_, settings_frames_, pings_, priorities_;
  std::vector<PeerRecord> peer_history_;
  bool peer_forgot_ = false;
  static constexpr std::size_t kPeerHistory = 1024;
  static constexpr std::size_t kPeerForget = kPeerHistory / 4;
  std::string last_error_;
  Stats stats_;
};

}  // namespace portico::h2
