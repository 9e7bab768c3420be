// h2::Session: HTTP/2 framing, stream states, flow control, the protections, and the events the
// owner sees. HPACK is in hpack.cpp.
#include "http2/session.hpp"

#include "http2/frame.hpp"

#include <algorithm>
#include <cstring>
#include <deque>
#include <new>

namespace portico::h2 {

namespace {

using namespace frame;

constexpr std::int32_t kMaxStreamId = 0x7fffffff;
// Header blocks we send: a larger one is refused before it is encoded (HPACK state must never
// hold a block that does not leave).
constexpr std::size_t kMaxSendBlock = 128 * 1024;

std::uint32_t be32(const std::uint8_t* p) noexcept {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         p[3];
}
void put32(std::string& to, std::uint32_t v) {
  const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
  to.append(b, 4);
}

// Long names lowercased for the encoder; one per thread, a session is driven by one thread at a
// time.
thread_local std::string lower_name;

}  // namespace

std::string_view error_code_name(std::uint32_t code) noexcept {
  static constexpr std::string_view kNames[] = {"no_error",
                                                "protocol_error",
                                                "internal_error",
                                                "flow_control_error",
                                                "settings_timeout",
                                                "stream_closed",
                                                "frame_size_error",
                                                "refused_stream",
                                                "cancel",
                                                "compression_error",
                                                "connect_error",
                                                "enhance_your_calm",
                                                "inadequate_security",
                                                "http_1_1_required"};
  return code < std::size(kNames) ? kNames[code] : std::string_view("unknown");
}

PrefaceMatch match_client_preface(std::string_view first_bytes) noexcept {
  auto n = std::min(first_bytes.size(), kClientPreface.size());
  if (first_bytes.substr(0, n) != kClientPreface.substr(0, n)) return PrefaceMatch::No;
  return n == kClientPreface.size() ? PrefaceMatch::Yes : PrefaceMatch::Partial;
}

namespace {
/// The value of a `:status` field when it is three digits.
std::optional<std::uint16_t> status_of(const HeaderMap& h) {
  auto v = h.get(":status");
  if (!v || v->size() != 3) return std::nullopt;
  std::uint16_t s = 0;
  for (char c : *v) {
    if (c < '0' || c > '9') return std::nullopt;
    s = static_cast<std::uint16_t>(s * 10 + (c - '0'));
  }
  return s;
}
}  // namespace

struct Session::Stream {
  std::int32_t id = 0;
  bool client = false;  // opened by this endpoint

  // ---- receiving ----
  HeaderMap head;
  std::size_t head_bytes = 0;
  bool head_too_large = false;
  bool head_seen = false;
  bool head_reported = false;
  bool request_is_head = false;
  bool rejected = false;
  bool peer_rst = false;
  bool remote_done = false;  // the peer's END_STREAM arrived
  ContentLength in_len;
  std::deque<std::string> chunks;
  std::size_t front_off = 0;
  std::size_t buffered = 0;
  std::int64_t recv_window = 0;  // what the peer may still send
  std::size_t recv_unacked = 0;  // consumed, not yet given back with WINDOW_UPDATE

  // ---- sending ----
  std::string out;
  std::size_t out_off = 0;
  ContentLength out_len;
  std::optional<HeaderMap> trailers;
  bool head_submitted = false;
  bool has_body = false;  // a body follows the head
  bool out_end = false;   // the owner gave the last byte (or trailers)
  bool want_writable = false;
  bool local_done = false;  // our END_STREAM is queued
  bool app_reset = false;
  bool queued = false;  // in the send queue
  std::int64_t send_window = 0;

  bool closed = false;

  std::size_t out_size() const noexcept { return out.size() - out_off; }
  /// The stream sent its last byte: the send buffer is emptied, its memory kept for the next
  /// stream this object serves when small (a spare stream holds at most kKeptBuffer per buffer).
  void release_out() noexcept {
    if (out.capacity() > kKeptBuffer)
      std::string().swap(out);
    else
      out.clear();
    out_off = 0;
  }
  /// Empties the receive buffers; one small one is kept, emptied, for the DATA to come.
  void drop_chunks() noexcept {
    if (chunks.size() == 1 && chunks.front().capacity() <= kKeptBuffer)
      chunks.front().clear();
    else
      chunks.clear();
  }
  void reset() noexcept {
    id = 0;
    client = false;
    head.clear();
    head_bytes = 0;
    head_too_large = head_seen = head_reported = request_is_head = rejected = peer_rst = false;
    remote_done = false;
    in_len = ContentLength();
    drop_chunks();
    front_off = buffered = 0;
    recv_window = 0;
    recv_unacked = 0;
    out.clear();
    out_off = 0;
    out_len = ContentLength();
    trailers.reset();
    head_submitted = has_body = out_end = want_writable = local_done = app_reset = queued = false;
    send_window = 0;
    closed = false;
  }
};

// ---------------------------------------------------------------------------------------------
// construction

Session::Session(Mode mode, const Settings& settings, Clock clock)
    : mode_(mode),
      settings_(settings),
      clock_(std::move(clock)),
      // The peer's encoder starts from the default table size; ours applies once it
      // acknowledged our SETTINGS.
      decoder_(hpack::default_table_size),
      encoder_(hpack::default_table_size) {
  if (!clock_) clock_ = [] { return std::chrono::steady_clock::now(); };
  settings_.max_frame_size = std::clamp<std::uint32_t>(settings_.max_frame_size, 16384, 16777215);
  settings_.stream_window = std::min<std::uint32_t>(settings_.stream_window, kMaxStreamId);
  settings_.connection_window =
      std::clamp<std::uint32_t>(settings_.connection_window, 65535, kMaxStreamId);
  // An origin's responses repeat their literals (see Decoder::remember_literals).
  if (mode_ == Mode::Client) decoder_.remember_literals(true);
  if (mode_ == Mode::Server)
    preface_left_ = kClientPreface.size();
  else
    queued_.assign(kClientPreface);
  queue_settings();
  if (settings_.connection_window != 65535) {
    queue_window_update(0, settings_.connection_window - 65535);
    conn_recv_window_ = settings_.connection_window;
  }
}

Session::~Session() = default;

void Session::queue_settings() {
  std::string p;
  auto entry = [&](std::uint16_t id, std::uint32_t v) {
    p.push_back(static_cast<char>(id >> 8));
    p.push_back(static_cast<char>(id));
    put32(p, v);
  };
  entry(0x5, settings_.max_frame_size);
  entry(0x4, settings_.stream_window);
  entry(0x6, settings_.max_header_list_size);
  if (settings_.header_table_size != 4096) entry(0x1, settings_.header_table_size);
  // RFC 7540 priorities cost CPU per PRIORITY frame and buy a proxy nothing (RFC 9113 §5.3.2).
  entry(0x9, 1);
  if (mode_ == Mode::Server)
    entry(0x3, settings_.max_concurrent_streams);
  else
    entry(0x2, 0);
  queue_frame(kSettings, 0, 0, p);
  ++pending_settings_;
}

Error Session::error(std::string_view why) const {
  return mode_ == Mode::Server ? Error::downstream(ErrorType::H2Error, why)
                               : Error::upstream(ErrorType::H2Error, why);
}

// ---------------------------------------------------------------------------------------------
// streams

Session::Stream* Session::find(std::int32_t id) const noexcept {
  if (id == found_id_ && found_) return found_;
  auto it = streams_.find(id);
  if (it == streams_.end()) return nullptr;
  found_id_ = id;
  found_ = it->second.get();
  return found_;
}

bool Session::idle(std::int32_t id) const noexcept {
  // Only odd streams are the client's, and no PUSH_PROMISE opens an even one.
  if (!(id & 1)) return true;
  return mode_ == Mode::Server ? id > max_peer_stream_ : id >= next_stream_id_;
}

Session::Stream& Session::open(std::int32_t id) {
  if (auto it = streams_.find(id); it != streams_.end()) return *it->second;
  std::unique_ptr<Stream> p;
  if (!spare_streams_.empty()) {
    p = std::move(spare_streams_.back());
    spare_streams_.pop_back();
  } else {
    p = std::make_unique<Stream>();
  }
  Stream& s = *p;
  s.id = id;
  s.recv_window = local_initial_window_;
  s.send_window = peer_initial_window_;
  peak_open_ = std::max(peak_open_, ++open_streams_);
  ++stats_.streams_opened;
  streams_.insert(id, std::move(p));
  return s;
}

void Session::maybe_erase(std::int32_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end() || !it->second->closed || it->second->buffered != 0) return;
  if (found_ == it->second.get()) found_ = nullptr;
  // As many objects as streams were ever open at once (a connection that runs 100 streams at
  // once opens and closes them in bursts), at least kSpare spares. Their small buffers are kept
  // by all of a client's (an origin connection: few of them, each carrying many clients'
  // requests) and the first kSpare of a server's (one client's connection among many).
  if (spare_streams_.size() < spare_limit()) {
    if (spare_streams_.capacity() < kSpare) spare_streams_.reserve(kSpare);
    Stream& st = *it->second;
    st.reset();
    if (mode_ == Mode::Server && spare_streams_.size() >= kSpare) {
      std::string().swap(st.out);
      st.chunks.clear();
    }
    spare_streams_.push_back(std::move(it->second));
  }
  streams_.erase(it);
}

void Session::close(Stream& st, std::uint32_t code) {
  if (st.closed) return;
  st.closed = true;
  if (!st.client) {
    const bool ours = st.app_reset || st.rejected || (code != 0 && !st.peer_rst);
    set_peer_stream(st.id, ours ? PeerStream::ClosedByUs : PeerStream::Closed);
  }
  --open_streams_;
  if (st.client) --client_streams_;
  st.release_out();
  st.trailers.reset();
  if (st.client || st.head_reported) {
    Event e{EventKind::Closed, st.id};
    e.code = code;
    e.retry_safe =
        st.client && !st.head_seen && code == static_cast<std::uint32_t>(ErrorCode::RefusedStream);
    push(std::move(e));
  }
  // Erased later (sweep): the callers may still look at `st`.
  closing_.push_back(st.id);
}

void Session::sweep() {
  for (std::int32_t id : closing_) maybe_erase(id);
  closing_.clear();
}

void Session::rst(Stream& st, ErrorCode code) {
  if (st.closed) return;
  std::string p;
  put32(p, static_cast<std::uint32_t>(code));
  queue_frame(kRstStream, 0, st.id, p);
  close(st, static_cast<std::uint32_t>(code));
}

void Session::rst_id(std::int32_t id, ErrorCode code) {
  std::string p;
  put32(p, static_cast<std::uint32_t>(code));
  queue_frame(kRstStream, 0, id, p);
}

HeaderMap Session::take_head() noexcept {
  if (spare_heads_.empty()) return HeaderMap();
  HeaderMap h = std::move(spare_heads_.back());
  spare_heads_.pop_back();
  return h;
}

void Session::recycle(HeaderMap&& fields) noexcept {
  if (spare_heads_.size() >= spare_limit() || fields.byte_size() > kSpareHeadBytes ||
      !fields.has_capacity())
    return;
  if (spare_heads_.size() == spare_heads_.capacity()) {
    try {
      spare_heads_.reserve(std::max(kSpare, spare_heads_.size() * 2));
    } catch (const std::bad_alloc&) {
      return;
    }
  }
  fields.clear();
  spare_heads_.push_back(std::move(fields));
}

void Session::trim() noexcept {
  spare_streams_.clear();
  peak_open_ = open_streams_;
  spare_streams_.shrink_to_fit();
  spare_heads_.clear();
  spare_heads_.shrink_to_fit();
  if (out_off_ == out_.size()) {
    std::string().swap(out_);
    out_off_ = 0;
  }
  if (queued_.empty()) std::string().swap(queued_);
  std::string().swap(block_);
  if (block_in_.empty()) std::string().swap(block_in_);
  if (frame_.empty()) std::string().swap(frame_);
  if (streams_.empty()) streams_.release();
  if (send_queue_.empty()) decltype(send_queue_)().swap(send_queue_);
  events_.release();
  peer_history_.shrink_to_fit();
  decoder_.trim();
  encoder_.trim();
}

Session::PeerStream Session::peer_stream(std::int32_t id) const noexcept {
  auto it = std::lower_bound(peer_history_.begin(), peer_history_.end(), id,
                             [](const PeerRecord& r, std::int32_t v) { return r.id < v; });
  if (it != peer_history_.end() && it->id == id) return it->state;
  if (peer_forgot_ && !peer_history_.empty() && id < peer_history_.front().id)
    return PeerStream::Forgotten;
  return PeerStream::Unknown;
}

void Session::set_peer_stream(std::int32_t id, PeerStream st) noexcept {
  if (st == PeerStream::Open) {
    if (peer_history_.size() == kPeerHistory + kPeerForget) {
      peer_history_.erase(peer_history_.begin(), peer_history_.begin() + kPeerForget);
      peer_forgot_ = true;
    }
    if (peer_history_.size() == peer_history_.capacity())
      peer_history_.reserve(
          std::min(std::max<std::size_t>(8, peer_history_.size() * 2), kPeerHistory + kPeerForget));
    peer_history_.push_back({id, st});
    return;
  }
  std::size_t looked = 0;
  for (auto r = peer_history_.rbegin(); r != peer_history_.rend() && looked < 16; ++r, ++looked) {
    if (r->id == id) {
      r->state = st;
      return;
    }
    if (r->id < id) return;
  }
  auto it = std::lower_bound(peer_history_.begin(), peer_history_.end(), id,
                             [](const PeerRecord& r, std::int32_t v) { return r.id < v; });
  if (it != peer_history_.end() && it->id == id) it->state = st;
}

// ---------------------------------------------------------------------------------------------
// protections

bool Session::over_rate(RateWindow& w, std::uint32_t limit) {
  auto now = clock_();
  if (w.count == 0 || now - w.start >= settings_.flood_window) {
    w.start = now;
    w.count = 0;
  }
  return ++w.count > limit;
}

bool Session::count_reset() {
  ++stats_.peer_resets;
  if (over_rate(resets_, settings_.max_resets_per_window))
    return fail(ErrorCode::EnhanceYourCalm, "rapid reset");
  return true;
}

bool Session::fail(ErrorCode code, std::string_view reason) {
  if (!dead_) {
    last_error_.assign(reason);
    queue_goaway(last_proc_stream_, code, true);
    dead_ = true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// input

Result<std::size_t> Session::feed(std::string_view bytes) {
  if (dead_) return error(last_error_.empty() ? "HTTP/2 session closed" : last_error_);
  const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
  const auto* end = p + bytes.size();
  while (p < end) {
    if (preface_left_ > 0) {
      const std::size_t at = kClientPreface.size() - preface_left_;
      const std::size_t n = std::min<std::size_t>(preface_left_, end - p);
      if (std::memcmp(p, kClientPreface.data() + at, n) != 0) {
        fail(ErrorCode::ProtocolError, "invalid client preface");
        return error(last_error_);
      }
      preface_left_ -= n;
      p += n;
      continue;
    }
    if (!in_frame_) {
      const std::uint8_t* h;
      if (hdr_have_ == 0 && end - p >= 9) {
        h = p;
        p += 9;
      } else {
        const std::size_t n = std::min<std::size_t>(9 - hdr_have_, end - p);
        std::memcpy(hdr_ + hdr_have_, p, n);
        hdr_have_ += n;
        p += n;
        if (hdr_have_ < 9) break;
        hdr_have_ = 0;
        h = hdr_;
      }
      const std::size_t len = (std::size_t{h[0]} << 16) | (std::size_t{h[1]} << 8) | h[2];
      type_ = h[3];
      flags_ = h[4];
      fid_ = static_cast<std::int32_t>(be32(h + 5) & 0x7fffffffu);
      left_ = len;
      flen_ = len;
      if (!on_frame_header(type_, flags_, fid_, len)) return error(last_error_);
      in_frame_ = true;
      if (len == 0) {
        in_frame_ = false;
        const bool ok = type_ == kData ? on_data_end() : on_frame(type_, flags_, fid_, p, 0);
        if (!ok || dead_) return error(last_error_);
      }
      continue;
    }
    if (type_ == kData) {
      std::size_t n = std::min<std::size_t>(left_, end - p);
      const std::uint8_t* q = p;
      std::size_t m = n;
      p += n;
      left_ -= n;
      if ((flags_ & kPadded) && !data_pad_read_) {
        data_pad_ = *q;
        data_pad_read_ = true;
        ++q;
        --m;
        if (data_pad_ > flen_ - 1) {
          fail(ErrorCode::ProtocolError, "DATA padding longer than the frame");
          return error(last_error_);
        }
        consume_connection(1);  // the pad length byte
      }
      // Bytes of this piece that are data rather than padding.
      const std::size_t data_end = flen_ - data_pad_;  // offset where the padding starts
      const std::size_t at = flen_ - left_ - m;        // offset of q in the payload
      const std::size_t d = at >= data_end ? 0 : std::min(m, data_end - at);
      if (d > 0) on_data_bytes(q, d);
      if (m > d) consume_connection(m - d);
      if (dead_) return error(last_error_);
      if (left_ == 0) {
        in_frame_ = false;
        if (!on_data_end() || dead_) return error(last_error_);
      }
      continue;
    }
    if (frame_.empty() && static_cast<std::size_t>(end - p) >= left_) {
      const std::uint8_t* payload = p;
      p += left_;
      left_ = 0;
      in_frame_ = false;
      if (!on_frame(type_, flags_, fid_, payload, flen_) || dead_) return error(last_error_);
      continue;
    }
    const std::size_t n = std::min<std::size_t>(left_, end - p);
    frame_.append(reinterpret_cast<const char*>(p), n);
    p += n;
    left_ -= n;
    if (left_ == 0) {
      in_frame_ = false;
      const bool ok = on_frame(type_, flags_, fid_,
                               reinterpret_cast<const std::uint8_t*>(frame_.data()), frame_.size());
      frame_.clear();
      if (!ok || dead_) return error(last_error_);
    }
  }
  sweep();
  return bytes.size();
}

bool Session::on_frame_header(std::uint8_t type, std::uint8_t flags, std::int32_t id,
                              std::size_t len) {
  const Settings& cfg = settings_;
  if (!settings_seen_) {
    if (type != kSettings || (flags & kAck))
      return fail(ErrorCode::ProtocolError, "the first frame is not SETTINGS");
    settings_seen_ = true;
  }
  if (len > cfg.max_frame_size) return fail(ErrorCode::FrameSizeError, "frame too large");
  if (in_block_ && type != kContinuation)
    return fail(ErrorCode::ProtocolError, "a header block interrupted by another frame");
  switch (type) {
    case kData: {
      if (id == 0) return fail(ErrorCode::ProtocolError, "DATA on stream 0");
      if (len == 0 && !(flags & kEndStream)) {
        if (++empty_frames_ > cfg.max_empty_frames)
          return fail(ErrorCode::EnhanceYourCalm, "flood of empty DATA frames");
      } else if (len > 0) {
        empty_frames_ = 0;
      }
      data_pad_ = 0;
      data_pad_read_ = false;
      data_sid_ = 0;
      data_len_ = 0;
      if ((flags & kPadded) && len == 0)
        return fail(ErrorCode::FrameSizeError, "padded DATA without a pad length");
      // The whole payload counts against the windows, padding included.
      if (static_cast<std::int64_t>(len) > conn_recv_window_)
        return fail(ErrorCode::FlowControlError, "DATA beyond the connection window");
      conn_recv_window_ -= static_cast<std::int64_t>(len);
      Stream* st = find(id);
      if (st && !st->closed) {
        if (st->remote_done) return fail(ErrorCode::StreamClosed, "DATA after END_STREAM");
        if (static_cast<std::int64_t>(len) > st->recv_window) {
          // A stream error; the bytes are dropped (and their window given back) as they come.
          if (mode_ == Mode::Server && !count_reset()) return false;
          rst(*st, ErrorCode::FlowControlError);
          return true;
        }
        st->recv_window -= static_cast<std::int64_t>(len);
        if (mode_ == Mode::Server && !st->head_seen && !st->rejected)
          return fail(ErrorCode::ProtocolError, "DATA before HEADERS");
        data_sid_ = id;
        return true;
      }
      // No live stream: the bytes are dropped, their window given back as they come.
      if (idle(id)) return fail(ErrorCode::ProtocolError, "DATA on an idle stream");
      if (mode_ == Mode::Server) {
        switch (peer_stream(id)) {
          case PeerStream::Closed:
            return fail(ErrorCode::StreamClosed, "DATA on a closed stream");
          case PeerStream::Unknown:
            return fail(ErrorCode::StreamClosed, "DATA on a stream that never opened");
          default:
            break;
        }
      }
      return true;
    }
    case kHeaders:
      continuations_ = 0;
      if (id == 0) return fail(ErrorCode::ProtocolError, "HEADERS on stream 0");
      return true;
    case kContinuation:
      if (!in_block_ || id != block_sid_)
        return fail(ErrorCode::ProtocolError, "CONTINUATION without a header block");
      if (++continuations_ > cfg.max_continuations)
        return fail(ErrorCode::EnhanceYourCalm, "flood of CONTINUATION frames");
      return true;
    case kSettings:
      if (id != 0) return fail(ErrorCode::ProtocolError, "SETTINGS on a stream");
      if (flags & kAck) {
        if (len != 0) return fail(ErrorCode::FrameSizeError, "SETTINGS ACK with a payload");
      } else {
        if (len % 6 != 0) return fail(ErrorCode::FrameSizeError, "SETTINGS length");
        if (len / 6 > cfg.max_settings_entries)
          return fail(ErrorCode::EnhanceYourCalm, "too many SETTINGS entries");
        if (over_rate(settings_frames_, cfg.max_settings_per_window))
          return fail(ErrorCode::EnhanceYourCalm, "flood of SETTINGS frames");
      }
      return true;
    case kPing:
      if (id != 0) return fail(ErrorCode::ProtocolError, "PING on a stream");
      if (len != 8) return fail(ErrorCode::FrameSizeError, "PING length");
      if (!(flags & kAck) && over_rate(pings_, cfg.max_pings_per_window))
        return fail(ErrorCode::EnhanceYourCalm, "flood of PING frames");
      return true;
    case kPriority:
      if (id == 0) return fail(ErrorCode::ProtocolError, "PRIORITY on stream 0");
      if (len != 5) return fail(ErrorCode::FrameSizeError, "PRIORITY length");
      if (over_rate(priorities_, cfg.max_priority_per_window))
        return fail(ErrorCode::EnhanceYourCalm, "flood of PRIORITY frames");
      return true;
    case kRstStream:
      if (id == 0) return fail(ErrorCode::ProtocolError, "RST_STREAM on stream 0");
      if (len != 4) return fail(ErrorCode::FrameSizeError, "RST_STREAM length");
      return true;
    case kGoaway:
      if (id != 0) return fail(ErrorCode::ProtocolError, "GOAWAY on a stream");
      if (len < 8) return fail(ErrorCode::FrameSizeError, "GOAWAY length");
      return true;
    case kWindowUpdate:
      if (len != 4) return fail(ErrorCode::FrameSizeError, "WINDOW_UPDATE length");
      return true;
    case kPushPromise:
      return fail(ErrorCode::ProtocolError, "PUSH_PROMISE (push is disabled)");
    default:
      return true;  // unknown frame types are ignored (RFC 9113 §4.1)
  }
}

void Session::consume_connection(std::size_t n) {
  if (n == 0) return;
  conn_unacked_ += n;
  if (conn_unacked_ >= std::max<std::size_t>(1, settings_.connection_window / 2)) {
    queue_window_update(0, static_cast<std::uint32_t>(conn_unacked_));
    conn_recv_window_ += static_cast<std::int64_t>(conn_unacked_);
    conn_unacked_ = 0;
  }
}

void Session::on_data_bytes(const std::uint8_t* data, std::size_t len) {
  data_len_ += len;
  Stream* st = data_sid_ ? find(data_sid_) : nullptr;
  if (!st || st->closed || st->rejected) {
    data_sid_ = 0;
    consume_connection(len);
    return;
  }
  if (st->client && !st->head_seen) {
    consume_connection(len);
    data_sid_ = 0;
    malformed_response(*st, "DATA before the response head");
    return;
  }
  if (!st->in_len.add(len)) {
    consume_connection(len);
    data_sid_ = 0;
    if (mode_ == Mode::Server && !count_reset()) return;
    rst(*st, ErrorCode::ProtocolError);
    return;
  }
  // Into the last buffer when it has room; an empty one (new, or kept from an earlier stream)
  // grows to fit.
  if (st->chunks.empty() ||
      (!st->chunks.back().empty() && st->chunks.back().capacity() - st->chunks.back().size() < len))
    st->chunks.emplace_back();
  std::string& back = st->chunks.back();
  if (back.capacity() - back.size() < len) back.reserve(std::max<std::size_t>(len, kKeptBuffer));
  back.append(reinterpret_cast<const char*>(data), len);
  st->buffered += len;
  inbound_buffered_ += len;
  stats_.peak_buffered = std::max(stats_.peak_buffered, inbound_buffered_);
  if (has_events() && events_.back().kind == EventKind::Data &&
      events_.back().stream_id == st->id) {
    events_.back().bytes += len;
  } else {
    Event e{EventKind::Data, st->id};
    e.bytes = len;
    push(std::move(e));
  }
}

bool Session::on_data_end() {
  // Padding came back to the connection as it arrived; to the stream too, which is still open.
  Stream* st = data_sid_ ? find(data_sid_) : nullptr;
  if (st && !st->closed) {
    if (const std::size_t pad = flen_ - data_len_; pad > 0 && !st->remote_done) {
      st->recv_unacked += pad;
      credit_stream(*st);
    }
    if (flags_ & kEndStream) {
      if (st->client && !st->head_seen && !st->rejected) {
        // An empty DATA frame ending a response that never had a head (RFC 9113 §8.1).
        malformed_response(*st, "DATA before the response head");
      } else {
        if (!st->rejected && st->head_seen) end_stream(*st);
        if (!st->closed) remote_closed(*st);
      }
    }
  }
  data_sid_ = 0;
  return !dead_;
}

bool Session::on_frame(std::uint8_t type, std::uint8_t flags, std::int32_t id,
                       const std::uint8_t* p, std::size_t len) {
  switch (type) {
    case kHeaders:
      return on_headers(flags, id, p, len);
    case kContinuation:
      return on_continuation(flags, id, p, len);
    case kSettings:
      return on_settings(flags, p, len);
    case kWindowUpdate:
      return on_window_update(id, p, len);
    case kRstStream:
      return on_rst_stream(id, p, len);
    case kGoaway:
      return on_goaway(p, len);
    case kPing:
      return on_ping(flags, p, len);
    case kPriority: {
      // Ignored (SETTINGS_NO_RFC7540_PRIORITIES), but a stream cannot depend on itself.
      const auto dep = static_cast<std::int32_t>(be32(p) & 0x7fffffffu);
      if (dep == id) return fail(ErrorCode::ProtocolError, "PRIORITY: a stream depends on itself");
      return true;
    }
    default:
      return true;
  }
}

bool Session::on_headers(std::uint8_t flags, std::int32_t id, const std::uint8_t* p,
                         std::size_t len) {
  std::size_t pad = 0;
  if (flags & kPadded) {
    if (len < 1) return fail(ErrorCode::FrameSizeError, "HEADERS padding");
    pad = *p;
    ++p;
    --len;
  }
  if (flags & kPriorityFlag) {
    if (len < 5) return fail(ErrorCode::FrameSizeError, "HEADERS priority");
    const auto dep = static_cast<std::int32_t>(be32(p) & 0x7fffffffu);
    if (dep == id) return fail(ErrorCode::ProtocolError, "HEADERS: a stream depends on itself");
    p += 5;
    len -= 5;
  }
  if (pad > len) return fail(ErrorCode::ProtocolError, "HEADERS padding longer than the frame");
  len -= pad;
  block_sid_ = id;
  block_flags_ = flags;
  if (flags & kEndHeaders) {
    block_in_.clear();
    in_block_ = false;
    // The fragment is the whole block: decoded where it lies.
    block_view_ = std::string_view(reinterpret_cast<const char*>(p), len);
    return end_header_block();
  }
  block_in_.assign(reinterpret_cast<const char*>(p), len);
  in_block_ = true;
  return true;
}

bool Session::on_continuation(std::uint8_t flags, std::int32_t, const std::uint8_t* p,
                              std::size_t len) {
  block_in_.append(reinterpret_cast<const char*>(p), len);
  if (!(flags & kEndHeaders)) return true;
  in_block_ = false;
  block_view_ = block_in_;
  const bool ok = end_header_block();
  block_in_.clear();
  return ok;
}

namespace {
struct HeadSink {
  Session::Stream* st;
  std::size_t limit;              // max_header_list_size
  const hpack::Decoder* decoder;  // tells a never-indexed field (kept as Field::sensitive)
};
void head_sink(void* ctx, std::string_view name, std::string_view value) {
  auto& s = *static_cast<HeadSink*>(ctx);
  Session::Stream& st = *s.st;
  if (st.head_too_large) return;
  st.head_bytes += name.size() + value.size() + 32;
  if (st.head_bytes > s.limit) {
    st.head_too_large = true;
    st.head.clear();
    return;
  }
  st.head.append(name, value, s.decoder->never_indexed());
}
void drop_sink(void*, std::string_view, std::string_view) {}
}  // namespace

bool Session::end_header_block() {
  const std::int32_t id = block_sid_;
  const bool end = block_flags_ & kEndStream;
  Stream* st = nullptr;
  if (mode_ == Mode::Server) {
    if (!(id & 1)) return fail(ErrorCode::ProtocolError, "HEADERS on an even stream id");
    if (id > max_peer_stream_) {
      if (open_streams_ >= settings_.max_concurrent_streams && settings_acked_) {
        return fail(ErrorCode::ProtocolError, "streams over SETTINGS_MAX_CONCURRENT_STREAMS");
      }
      max_peer_stream_ = id;
      set_peer_stream(id, PeerStream::Open);
      if (final_goaway_sent_ || goaway_sent_) {
        // Past our final GOAWAY: not processed.
        set_peer_stream(id, PeerStream::ClosedByUs);
      } else if (open_streams_ >= settings_.max_concurrent_streams) {
        set_peer_stream(id, PeerStream::ClosedByUs);
        rst_id(id, ErrorCode::RefusedStream);
      } else {
        last_proc_stream_ = id;
        st = &open(id);
      }
    } else {
      st = find(id);
      if (st && st->closed) st = nullptr;
      if (st && st->remote_done) return fail(ErrorCode::StreamClosed, "HEADERS after END_STREAM");
      if (!st) {
        switch (peer_stream(id)) {
          case PeerStream::Closed:
            return fail(ErrorCode::StreamClosed, "HEADERS on a closed stream");
          case PeerStream::Unknown:
            return fail(ErrorCode::ProtocolError, "HEADERS on a stream id below one in use");
          default:
            break;
        }
      }
    }
  } else {
    if (idle(id)) return fail(ErrorCode::ProtocolError, "HEADERS on a stream we did not open");
    st = find(id);
    if (st && st->closed) st = nullptr;
    if (st && st->remote_done) return fail(ErrorCode::StreamClosed, "HEADERS after END_STREAM");
  }
  // Decoded in any case: the HPACK state depends on every block.
  hpack::DecodeError de;
  const std::size_t max_string = std::max<std::size_t>(64 * 1024, settings_.max_header_list_size);
  if (st && !st->rejected) {
    st->head.clear();
    st->head_bytes = 0;
    st->head_too_large = false;
    HeadSink sink{st, settings_.max_header_list_size, &decoder_};
    de = decoder_.decode(block_view_, &head_sink, &sink, max_string);
  } else {
    de = decoder_.decode(block_view_, &drop_sink, nullptr, max_string);
  }
  if (de != hpack::DecodeError::None)
    return fail(ErrorCode::CompressionError, hpack::to_string(de));
  if (!st || st->rejected) return true;
  on_head(*st, end);
  return !dead_;
}

void Session::reject_head(Stream& st, bool end) {
  ++stats_.headers_rejected;
  Event e{EventKind::Rejected};
  e.stream_id = st.id;
  if (mode_ == Mode::Server && !st.head_seen) {
    // Answer 431 (RFC 6585 §5) and tell the client to stop sending (RFC 9113 §8.1).
    st.rejected = true;
    st.head_seen = true;
    block_.clear();
    encoder_.begin(block_);
    encoder_.add(block_, ":status", "431");
    encoder_.add(block_, "content-length", "0");
    frame_block(queued_, st.id, true);
    st.head_submitted = true;
    e.code = 431;
    push(std::move(e));
    if (end) {
      st.remote_done = true;
      local_end(st);
    } else {
      st.local_done = true;
      rst(st, ErrorCode::NoError);
    }
    count_reset();
    return;
  }
  st.rejected = true;
  e.code = mode_ == Mode::Server ? 431 : 502;
  push(std::move(e));
  rst(st, ErrorCode::Cancel);
}

void Session::malformed_response(Stream& st, const char* why) {
  st.rejected = true;
  st.head.clear();
  Event m{EventKind::Malformed, st.id};
  m.why = why;
  push(std::move(m));
  rst(st, ErrorCode::ProtocolError);
}

void Session::end_stream(Stream& st) {
  if (!st.in_len.complete()) {
    if (mode_ == Mode::Server && !count_reset()) return;
    rst(st, ErrorCode::ProtocolError);
    return;
  }
  push(Event{EventKind::EndStream, st.id});
}

void Session::remote_closed(Stream& st) {
  st.remote_done = true;
  if (st.local_done) close(st, 0);
}

void Session::local_end(Stream& st) {
  st.local_done = true;
  if (st.remote_done) close(st, 0);
}

void Session::on_head(Stream& st, bool end) {
  if (st.head_too_large) {
    reject_head(st, end);
    return;
  }
  Event e{EventKind::Head, st.id};
  e.end_stream = end;
  if (!st.head_seen) {
    bool no_body = false;
    h2::HeadSeen seen;
    if (mode_ == Mode::Server) {
      if (const char* why = request_problem(st.head, &seen)) {
        st.head.clear();
        st.rejected = true;
        Event m{EventKind::Malformed, st.id};
        m.why = why;
        push(std::move(m));
        if (!count_reset()) return;
        rst(st, ErrorCode::ProtocolError);
        return;
      }
      st.request_is_head = seen.head;
    } else {
      std::uint16_t status = 0;
      const char* why = response_problem(st.head, status, &seen);
      if (!why && status < 200 && end) why = "interim response with END_STREAM";
      if (why) {
        malformed_response(st, why);
        return;
      }
      if (status < 200) {
        e.kind = EventKind::Informational;
        e.fields = std::move(st.head);
        st.head = take_head();
        push(std::move(e));
        return;
      }
      no_body = st.request_is_head || status == 204 || status == 304;
    }
    // (A head without the field, the usual request, is not walked again for it.)
    auto len = seen.content_length
                   ? ContentLength::from_fields(st.head, no_body, mode_ == Mode::Client)
                   : Result<ContentLength>(ContentLength::absent(no_body));
    if (!len) {
      st.head.clear();
      if (mode_ == Mode::Server) {
        st.rejected = true;
        if (!count_reset()) return;
      }
      rst(st, ErrorCode::ProtocolError);
      return;
    }
    st.in_len = *len;
    st.head_seen = true;
    st.head_reported = true;
  } else {
    if (!end) {
      st.head.clear();
      if (mode_ == Mode::Server && !count_reset()) return;
      rst(st, ErrorCode::ProtocolError);
      return;
    }
    if (mode_ == Mode::Client) {
      if (const char* why = trailers_problem(st.head)) {
        malformed_response(st, why);
        return;
      }
    }
    e.kind = EventKind::Trailers;
  }
  e.fields = std::move(st.head);
  st.head = take_head();
  push(std::move(e));
  if (end) {
    end_stream(st);
    if (!st.closed) remote_closed(st);
  }
}

bool Session::on_settings(std::uint8_t flags, const std::uint8_t* p, std::size_t len) {
  if (flags & kAck) {
    if (pending_settings_ == 0) return true;
    --pending_settings_;
    settings_acked_ = true;
    // Our values apply from now on.
    const std::int64_t delta =
        static_cast<std::int64_t>(settings_.stream_window) - local_initial_window_;
    local_initial_window_ = settings_.stream_window;
    if (delta != 0)
      for (auto& [sid, s] : streams_)
        if (!s->closed) s->recv_window += delta;
    decoder_.set_max_table_size(settings_.header_table_size);
    return true;
  }
  bool window_grew = false;
  for (std::size_t i = 0; i + 6 <= len; i += 6) {
    const std::uint16_t key = static_cast<std::uint16_t>((p[i] << 8) | p[i + 1]);
    const std::uint32_t v = be32(p + i + 2);
    switch (key) {
      case 0x1:
        encoder_.set_peer_max_table_size(v);
        break;
      case 0x2:
        if (v > 1) return fail(ErrorCode::ProtocolError, "SETTINGS_ENABLE_PUSH above 1");
        if (mode_ == Mode::Client && v != 0)
          return fail(ErrorCode::ProtocolError, "SETTINGS_ENABLE_PUSH from a server");
        break;
      case 0x3:
        peer_max_streams_ = v;
        break;
      case 0x4: {
        if (v > static_cast<std::uint32_t>(kMaxStreamId))
          return fail(ErrorCode::FlowControlError, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1");
        const std::int64_t delta = static_cast<std::int64_t>(v) - peer_initial_window_;
        peer_initial_window_ = v;
        for (auto& [sid, s] : streams_) {
          if (s->closed) continue;
          s->send_window += delta;
          if (s->send_window > kMaxStreamId)
            return fail(ErrorCode::FlowControlError, "stream window above 2^31-1");
        }
        if (delta > 0) window_grew = true;
        break;
      }
      case 0x5:
        if (v < 16384 || v > 16777215)
          return fail(ErrorCode::ProtocolError, "SETTINGS_MAX_FRAME_SIZE out of range");
        peer_max_frame_ = v;
        break;
      case 0x9:
        if (v > 1) return fail(ErrorCode::ProtocolError, "SETTINGS_NO_RFC7540_PRIORITIES above 1");
        break;
      default:
        break;  // MAX_HEADER_LIST_SIZE (advisory), ENABLE_CONNECT_PROTOCOL, unknown ones
    }
  }
  queue_frame(kSettings, kAck, 0, {});
  if (++queued_acks_ > settings_.max_outbound_ack)
    return fail(ErrorCode::EnhanceYourCalm, "the peer does not read its SETTINGS and PING ACKs");
  if (window_grew)
    for (auto& [sid, s] : streams_)
      if (!s->closed && (s->out_size() > 0 || s->out_end)) schedule(*s);
  push(Event{EventKind::Settings});
  return true;
}

bool Session::on_window_update(std::int32_t id, const std::uint8_t* p, std::size_t) {
  const std::uint32_t inc = be32(p) & 0x7fffffffu;
  if (id == 0) {
    if (inc == 0) return fail(ErrorCode::ProtocolError, "WINDOW_UPDATE of 0");
    if (conn_send_window_ + inc > kMaxStreamId)
      return fail(ErrorCode::FlowControlError, "connection window above 2^31-1");
    const bool was_blocked = conn_send_window_ <= 0;
    conn_send_window_ += inc;
    if (was_blocked)
      for (auto& [sid, s] : streams_)
        if (!s->closed && s->out_size() > 0) schedule(*s);
    return true;
  }
  Stream* st = find(id);
  if (!st || st->closed) {
    if (idle(id)) return fail(ErrorCode::ProtocolError, "WINDOW_UPDATE on an idle stream");
    return true;
  }
  if (inc == 0) {
    if (mode_ == Mode::Server && !count_reset()) return false;
    rst(*st, ErrorCode::ProtocolError);
    return true;
  }
  if (st->send_window + inc > kMaxStreamId) {
    if (mode_ == Mode::Server && !count_reset()) return false;
    rst(*st, ErrorCode::FlowControlError);
    return true;
  }
  const bool was_blocked = st->send_window <= 0;
  st->send_window += inc;
  if (was_blocked && st->out_size() > 0) schedule(*st);
  return true;
}

bool Session::on_rst_stream(std::int32_t id, const std::uint8_t* p, std::size_t) {
  Stream* st = find(id);
  if (st && st->closed) st = nullptr;
  if (!st && idle(id)) return fail(ErrorCode::ProtocolError, "RST_STREAM on an idle stream");
  // A reset of a stream we had not finished answering (or of one we do not know) is the cheap
  // half of the rapid reset attack: count it against the window.
  if (mode_ == Mode::Server && (!st || !st->local_done))
    if (!count_reset()) return false;
  if (!st) return true;
  const std::uint32_t code = be32(p);
  st->peer_rst = true;
  if (st->client || st->head_reported) {
    Event e{EventKind::Reset, st->id};
    e.code = code;
    push(std::move(e));
  }
  close(*st, code);
  return true;
}

bool Session::on_goaway(const std::uint8_t* p, std::size_t) {
  const auto last = static_cast<std::int32_t>(be32(p) & 0x7fffffffu);
  const std::uint32_t code = be32(p + 4);
  goaway_received_ = true;
  Event e{EventKind::Goaway};
  e.code = code;
  e.last_stream_id = last;
  push(std::move(e));
  if (mode_ == Mode::Client) {
    // Streams above `last` were not processed: closed, safe to send again elsewhere.
    std::vector<std::int32_t> ids;
    for (auto& [sid, s] : streams_)
      if (s->client && !s->closed && sid > last) ids.push_back(sid);
    std::sort(ids.begin(), ids.end());
    for (std::int32_t sid : ids)
      if (Stream* s = find(sid)) close(*s, static_cast<std::uint32_t>(ErrorCode::RefusedStream));
  }
  return true;
}

bool Session::on_ping(std::uint8_t flags, const std::uint8_t* p, std::size_t) {
  if (flags & kAck) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    if (shutting_down_ && !final_goaway_sent_ && v == shutdown_ping_) {
      // Every stream the client opened before it saw the notice has arrived by now.
      final_goaway_sent_ = true;
      queue_goaway(last_proc_stream_, ErrorCode::NoError, false);
    }
    push(Event{EventKind::PingAck});
    return true;
  }
  queue_frame(kPing, kAck, 0, std::string_view(reinterpret_cast<const char*>(p), 8));
  if (++queued_acks_ > settings_.max_outbound_ack)
    return fail(ErrorCode::EnhanceYourCalm, "the peer does not read its SETTINGS and PING ACKs");
  return true;
}

std::optional<Event> Session::poll_event() {
  if (!has_events()) return std::nullopt;
  Event e = std::move(events_.front());
  events_.pop();
  return e;
}

// ---------------------------------------------------------------------------------------------
// output

void Session::frame_header(std::string& to, std::size_t len, std::uint8_t type, std::uint8_t flags,
                           std::int32_t id) {
  const char h[9] = {static_cast<char>(len >> 16), static_cast<char>(len >> 8),
                     static_cast<char>(len),       static_cast<char>(type),
                     static_cast<char>(flags),     static_cast<char>((id >> 24) & 0x7f),
                     static_cast<char>(id >> 16),  static_cast<char>(id >> 8),
                     static_cast<char>(id)};
  to.append(h, 9);
}

void Session::queue_frame(std::uint8_t type, std::uint8_t flags, std::int32_t id,
                          std::string_view payload) {
  frame_header(queued_, payload.size(), type, flags, id);
  queued_.append(payload);
}

void Session::queue_window_update(std::int32_t id, std::uint32_t n) {
  std::string p;
  put32(p, n & 0x7fffffffu);
  queue_frame(kWindowUpdate, 0, id, p);
}

void Session::queue_goaway(std::int32_t last, ErrorCode code, bool final) {
  std::string p;
  put32(p, static_cast<std::uint32_t>(last));
  put32(p, static_cast<std::uint32_t>(code));
  queue_frame(kGoaway, 0, 0, p);
  goaway_sent_ = true;
  if (final) term_ = true;
  Event e{EventKind::GoawaySent};
  e.code = static_cast<std::uint32_t>(code);
  e.last_stream_id = last;
  push(std::move(e));
}

void Session::frame_block(std::string& to, std::int32_t id, bool end_stream) {
  const std::size_t max = peer_max_frame_;
  std::string_view b = block_;
  std::size_t n = std::min(max, b.size());
  std::uint8_t flags = end_stream ? kEndStream : 0;
  if (n == b.size()) flags |= kEndHeaders;
  frame_header(to, n, kHeaders, flags, id);
  to.append(b.substr(0, n));
  b.remove_prefix(n);
  while (!b.empty()) {
    n = std::min(max, b.size());
    frame_header(to, n, kContinuation, n == b.size() ? kEndHeaders : 0, id);
    to.append(b.substr(0, n));
    b.remove_prefix(n);
  }
}

void Session::encode_field(std::string_view name, std::string_view value, bool sensitive) {
  // Lowercased in passing (a word at a time): cheaper than looking for an uppercase letter.
  char small[128];
  if (name.size() <= sizeof small) {
    to_lower_ascii(name, small);
    name = std::string_view(small, name.size());
  } else {
    lower_name.assign(name);
    to_lower_ascii(name, lower_name.data());
    name = lower_name;
  }
  encoder_.add(block_, name, value, sensitive);
}

void Session::encode_fields(const HeaderMap& h) {
  block_.clear();
  encoder_.begin(block_);
  for (auto f : h) encode_field(f.name, f.value, f.sensitive);
}

std::string_view Session::pending_output() {
  if (out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
  } else if (out_off_ > 0 && out_off_ >= out_.size() / 2) {
    out_.erase(0, out_off_);
    out_off_ = 0;
  }
  if (out_.size() - out_off_ < settings_.output_buffer_bytes && !queued_.empty()) {
    if (out_.empty())
      out_.swap(queued_);
    else
      out_.append(queued_);
    queued_.clear();
    queued_acks_ = 0;
  }
  if (!term_) write_data();
  sweep();
  return std::string_view(out_).substr(out_off_);
}

void Session::consume_output(std::size_t n) noexcept {
  out_off_ = std::min(out_.size(), out_off_ + n);
}

bool Session::want_read() const noexcept {
  if (dead_ || term_) return false;
  if (open_streams_ > 0) return true;
  return !(goaway_sent_ || goaway_received_);
}

bool Session::want_write() const noexcept {
  if (out_off_ < out_.size() || !queued_.empty()) return true;
  if (term_) return false;
  return sq_head_ < send_queue_.size() && conn_send_window_ > 0;
}

void Session::schedule(Stream& st) {
  if (st.queued || st.closed) return;
  st.queued = true;
  send_queue_.push_back(st.id);
}

void Session::write_data() {
  while (sq_head_ < send_queue_.size() && out_.size() - out_off_ < settings_.output_buffer_bytes) {
    const std::int32_t id = send_queue_[sq_head_++];
    Stream* st = find(id);
    if (!st || st->closed) continue;
    st->queued = false;
    if (st->local_done) continue;
    std::size_t avail = st->out_size();
    if (avail > 0) {
      const std::int64_t window = std::min(conn_send_window_, st->send_window);
      if (window <= 0) continue;  // a WINDOW_UPDATE schedules it again
      const std::size_t n = std::min<std::size_t>(
          {avail, static_cast<std::size_t>(window), static_cast<std::size_t>(peer_max_frame_)});
      const bool last = n == avail && st->out_end && !st->trailers;
      frame_header(out_, n, kData, last ? kEndStream : 0, id);
      out_.append(st->out, st->out_off, n);
      st->out_off += n;
      conn_send_window_ -= static_cast<std::int64_t>(n);
      st->send_window -= static_cast<std::int64_t>(n);
      if (st->out_off == st->out.size()) {
        st->out.clear();
        st->out_off = 0;
      } else if (st->out_off >= st->out.size() / 2) {
        st->out.erase(0, st->out_off);
        st->out_off = 0;
      }
      avail -= n;
      if (st->want_writable && !st->out_end && st->out_size() <= settings_.send_buffer_bytes / 2) {
        st->want_writable = false;
        push(Event{EventKind::Writable, id});
      }
      if (last) {
        st->release_out();
        local_end(*st);
        continue;
      }
      if (avail > 0) {
        schedule(*st);  // its turn again after the others
        continue;
      }
    }
    if (avail == 0 && st->out_end && !st->local_done) {
      if (st->trailers) {
        encode_fields(*st->trailers);
        st->trailers.reset();
        frame_block(out_, id, true);
      } else {
        frame_header(out_, 0, kData, kEndStream, id);
      }
      st->release_out();
      local_end(*st);
    }
  }
  if (sq_head_ == send_queue_.size()) {
    send_queue_.clear();
    sq_head_ = 0;
  } else if (sq_head_ > 64 && sq_head_ >= send_queue_.size() / 2) {
    send_queue_.erase(send_queue_.begin(),
                      send_queue_.begin() + static_cast<std::ptrdiff_t>(sq_head_));
    sq_head_ = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// flow control

std::string_view Session::received(std::int32_t stream_id) const noexcept {
  const Stream* s = find(stream_id);
  if (!s || s->chunks.empty()) return {};
  return std::string_view(s->chunks.front()).substr(s->front_off);
}

std::size_t Session::buffered(std::int32_t stream_id) const noexcept {
  const Stream* s = find(stream_id);
  return s ? s->buffered : 0;
}

void Session::consume(std::int32_t stream_id, std::size_t n) {
  Stream* s = find(stream_id);
  if (!s) return;
  n = std::min(n, s->buffered);
  if (n == 0) return;
  std::size_t left = n;
  while (left > 0) {
    auto& front = s->chunks.front();
    auto take = std::min(left, front.size() - s->front_off);
    s->front_off += take;
    left -= take;
    if (s->front_off == front.size()) {
      if (s->chunks.size() == 1)
        s->drop_chunks();
      else
        s->chunks.pop_front();
      s->front_off = 0;
    }
  }
  s->buffered -= n;
  inbound_buffered_ -= n;
  consume_connection(n);
  // A closed stream has no window left to reopen, nor one the peer may still use.
  if (!s->closed && !s->remote_done) {
    s->recv_unacked += n;
    credit_stream(*s);
  }
  maybe_erase(stream_id);
}

void Session::credit_stream(Stream& s) {
  if (s.recv_unacked < std::max<std::size_t>(1, settings_.stream_window / 2)) return;
  queue_window_update(s.id, static_cast<std::uint32_t>(s.recv_unacked));
  s.recv_window += static_cast<std::int64_t>(s.recv_unacked);
  s.recv_unacked = 0;
}

void Session::discard(std::int32_t stream_id) {
  if (Stream* s = find(stream_id)) consume(stream_id, s->buffered);
}

// ---------------------------------------------------------------------------------------------
// submitting

namespace {
std::size_t raw_size(const HeaderMap& h) noexcept { return h.byte_size() + 32 * h.size(); }
}  // namespace

Result<ContentLength> Session::check_request(const HeaderMap& fields, bool end_stream) const {
  if (mode_ != Mode::Client) return error("submit_request on a server session");
  if (!can_open_stream()) return error("no HTTP/2 stream available on this connection");
  auto len = ContentLength::from_fields(fields, false, false);
  if (!len) return len.error();
  if (end_stream && !len->complete()) return error("request content-length without a body");
  return len;
}

Result<std::int32_t> Session::submit_request(const HeaderMap& fields, bool end_stream) {
  auto len = check_request(fields, end_stream);
  if (!len) return len.error();
  if (raw_size(fields) > kMaxSendBlock) return error("request header list too large");
  encode_fields(fields);
  auto method = fields.get(":method");
  return open_request(*len, method && *method == "HEAD", end_stream);
}

Result<std::int32_t> Session::submit_request(const RequestHeader& r, std::string_view scheme,
                                             bool split_cookies, bool end_stream) {
  const HeaderMap& h = r.headers();
  auto len = check_request(h, end_stream);
  if (!len) return len.error();
  const std::size_t pseudo = r.method().size() + scheme.size() + r.host().size() + r.uri().size() +
                             4 * 32;  // as raw_size counts
  if (raw_size(h) + pseudo > kMaxSendBlock) return error("request header list too large");
  block_.clear();
  encoder_.begin(block_);
  for_each_request_field(
      r, scheme, split_cookies,
      [](void* self, std::string_view name, std::string_view value, bool sensitive) {
        static_cast<Session*>(self)->encode_field(name, value, sensitive);
      },
      this);
  return open_request(*len, r.method() == "HEAD", end_stream);
}

Result<std::int32_t> Session::open_request(const ContentLength& len, bool head, bool end_stream) {
  const auto id = static_cast<std::int32_t>(next_stream_id_);
  next_stream_id_ += 2;
  frame_block(queued_, id, end_stream);
  Stream& s = open(id);
  s.client = true;
  s.head_submitted = true;
  s.has_body = !end_stream;
  s.out_end = end_stream;
  s.request_is_head = head;
  s.out_len = len;
  ++client_streams_;
  if (end_stream) local_end(s);
  return id;
}

Result<Session::Stream*> Session::head_stream(std::int32_t stream_id) {
  if (mode_ != Mode::Server) return error("response on a client session");
  Stream* s = find(stream_id);
  if (!s || s->closed || s->client) return error("response on a closed stream");
  if (s->head_submitted) return error("response head already sent");
  return s;
}

Result<void> Session::submit_informational(std::int32_t stream_id, const HeaderMap& fields) {
  auto s = head_stream(stream_id);
  if (!s) return s.error();
  auto status = status_of(fields);
  if (!status) return error("response without a valid :status");
  if (*status >= 200) return error("informational status mismatch");
  if (raw_size(fields) > kMaxSendBlock) return error("response header list too large");
  encode_fields(fields);
  frame_block(queued_, stream_id, false);
  return {};
}

Result<void> Session::submit_final(Stream& s, std::uint16_t status, const HeaderMap& fields,
                                   bool end_stream) {
  // Checked before anything is encoded.
  const bool no_body = s.request_is_head || status == 204 || status == 304;
  auto len = ContentLength::from_fields(fields, no_body, false);
  if (!len) return error("invalid content-length in the response");
  if (end_stream && !len->complete()) return error("response content-length without a body");
  if (raw_size(fields) > kMaxSendBlock) return error("response header list too large");
  s.head_submitted = true;
  s.has_body = !end_stream;
  s.out_end = end_stream;
  s.out_len = *len;
  return {};
}

Result<void> Session::submit_response(std::int32_t stream_id, const HeaderMap& fields,
                                      bool end_stream) {
  auto s = head_stream(stream_id);
  if (!s) return s.error();
  auto status = status_of(fields);
  if (!status) return error("response without a valid :status");
  if (*status < 200) return error("informational status mismatch");
  if (auto r = submit_final(**s, *status, fields, end_stream); !r) return r;
  encode_fields(fields);
  frame_block(queued_, stream_id, end_stream);
  if (end_stream) local_end(**s);
  return {};
}

Result<void> Session::submit_response(std::int32_t stream_id, const ResponseHeader& r,
                                      bool end_stream, std::size_t* field_bytes) {
  auto s = head_stream(stream_id);
  if (!s) return s.error();
  if (!status_expressible(r.status()) || r.status() < 200)
    return error("not a final HTTP/2 status");
  Stream& st = **s;
  if (auto c = submit_final(st, r.status(), r.headers(), end_stream); !c) return c;
  block_.clear();
  encoder_.begin(block_);
  char code[3];
  {
    const unsigned v = r.status();
    code[0] = static_cast<char>('0' + v / 100 % 10);
    code[1] = static_cast<char>('0' + v / 10 % 10);
    code[2] = static_cast<char>('0' + v % 10);
  }
  encoder_.add(block_, ":status", std::string_view(code, 3));
  struct Ctx {
    Session* self;
    std::size_t bytes;
  } ctx{this, 10};
  for_each_h2_field(
      r.headers(), false, false,
      [](void* c, std::string_view name, std::string_view value, bool sensitive) {
        auto& x = *static_cast<Ctx*>(c);
        x.bytes += name.size() + value.size();
        x.self->encode_field(name, value, sensitive);
      },
      &ctx);
  if (field_bytes) *field_bytes = ctx.bytes;
  frame_block(queued_, stream_id, end_stream);
  if (end_stream) local_end(st);
  return {};
}

Result<std::size_t> Session::send_data(std::int32_t stream_id, std::string_view bytes, bool end) {
  Stream* s = find(stream_id);
  if (!s || s->closed) return error("stream closed");
  if (!s->has_body || s->out_end) return error("stream already ended");
  std::size_t n = std::min(bytes.size(), send_capacity(stream_id));
  bool finish = end && n == bytes.size();
  if (!s->out_len.fits(n)) return error("body longer than its content-length");
  if (finish) {
    ContentLength after = s->out_len;
    after.add(n);
    if (!after.complete()) return error("body shorter than its content-length");
  }
  s->out_len.add(n);
  if (n < bytes.size()) s->want_writable = true;
  if (finish) s->out_end = true;
  if (n == bytes.size() && frame_now(*s, bytes, finish)) return n;
  s->out.append(bytes.data(), n);
  if (n > 0 || finish) schedule(*s);
  return n;
}

bool Session::frame_now(Stream& s, std::string_view bytes, bool last) {
  // Straight into the frames queued for output, without the copy into the stream's buffer and
  // the turn in the send queue, when nothing would come before it there: no byte of the stream
  // waits, no other stream waits for its turn (what it gets of the windows stays the same), the
  // windows and the frame size take it whole, and the output stays within its bound.
  if (term_ || s.queued || s.out_size() != 0 || sq_head_ != send_queue_.size() ||
      (bytes.empty() && !last))
    return false;
  const auto n = static_cast<std::int64_t>(bytes.size());
  if (n > conn_send_window_ || n > s.send_window || bytes.size() > peer_max_frame_ ||
      queued_.size() + (out_.size() - out_off_) + bytes.size() > settings_.output_buffer_bytes)
    return false;
  frame_header(queued_, bytes.size(), kData, last ? kEndStream : 0, s.id);
  queued_.append(bytes);
  conn_send_window_ -= n;
  s.send_window -= n;
  if (last) {
    s.release_out();
    local_end(s);
  }
  return true;
}

Result<void> Session::send_trailers(std::int32_t stream_id, const HeaderMap& fields) {
  Stream* s = find(stream_id);
  if (!s || s->closed) return error("stream closed");
  if (!s->has_body || s->out_end) return error("stream already ended");
  if (!s->out_len.complete()) return error("body shorter than its content-length");
  if (raw_size(fields) > kMaxSendBlock) return error("trailer section too large");
  s->trailers = fields;
  s->out_end = true;
  schedule(*s);
  return {};
}

std::size_t Session::send_capacity(std::int32_t stream_id) const noexcept {
  const Stream* s = find(stream_id);
  if (!s || s->closed || s->out_end || !s->has_body) return 0;
  return settings_.send_buffer_bytes - std::min(settings_.send_buffer_bytes, s->out_size());
}

void Session::reset(std::int32_t stream_id, ErrorCode code) {
  Stream* s = find(stream_id);
  if (!s || s->closed) return;
  s->app_reset = true;
  rst(*s, code);
  sweep();
}

void Session::ping() {
  std::uint64_t v = ++ping_seq_;
  queue_frame(kPing, 0, 0, std::string_view(reinterpret_cast<const char*>(&v), 8));
}

void Session::shutdown() {
  if (shutting_down_ || dead_) return;
  shutting_down_ = true;
  if (mode_ == Mode::Server) {
    // The notice: GOAWAY with the largest id, then a PING; the final GOAWAY follows its ACK.
    std::string p;
    put32(p, static_cast<std::uint32_t>(kMaxStreamId));
    put32(p, 0);
    queue_frame(kGoaway, 0, 0, p);
    Event e{EventKind::GoawaySent};
    e.last_stream_id = kMaxStreamId;
    push(std::move(e));
    shutdown_ping_ = ++ping_seq_;
    queue_frame(kPing, 0, 0, std::string_view(reinterpret_cast<const char*>(&shutdown_ping_), 8));
  } else {
    queue_goaway(0, ErrorCode::NoError, false);
  }
}

void Session::terminate(ErrorCode code) {
  if (dead_) return;
  dead_ = true;
  last_error_ = "terminated";
  queue_goaway(last_proc_stream_, code, true);
}

std::uint32_t Session::available_streams() const noexcept {
  if (mode_ != Mode::Client || dead_ || goaway_received_ || shutting_down_) return 0;
  const std::uint32_t limit = std::min(settings_.max_outbound_streams, peer_max_streams_);
  if (client_streams_ >= limit) return 0;
  if (next_stream_id_ > kMaxStreamId) return 0;
  const std::uint32_t ids = static_cast<std::uint32_t>(kMaxStreamId - next_stream_id_) / 2 + 1;
  return std::min(limit - static_cast<std::uint32_t>(client_streams_), ids);
}

}  // namespace portico::h2
