// h2::Session: construction, input/output, flow control and submissions. The nghttp2 callbacks
// and the flood protections are in session_callbacks.cpp.
#include "http2/session.hpp"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <new>

#include <sys/mman.h>

#include "http2/stream.hpp"

namespace portico::h2 {

namespace {

constexpr std::uint32_t kMaxStreamId = 0x7fffffff;

bool has_upper(std::string_view s) noexcept {
  for (char c : s)
    if (c >= 'A' && c <= 'Z') return true;
  return false;
}

// The head being submitted, kept for the next one (nghttp2 copies what it is given): no
// allocation per head. One per thread; a session is driven by one thread at a time.
thread_local std::vector<nghttp2_nv> head_nva;
thread_local std::string head_names;  // names lowercased for head_nva

/// Appends the pair (`name` already lowercase); nghttp2 copies it when the head is submitted,
/// unless `flags` say the bytes stay put (NGHTTP2_NV_FLAG_NO_COPY_*).
void push_nv(std::vector<nghttp2_nv>& nva, std::string_view name, std::string_view value,
             std::uint8_t flags = NGHTTP2_NV_FLAG_NONE) {
  // Credentials never enter the HPACK dynamic table (RFC 7541 §7.1.3).
  if (name == "authorization" || name == "proxy-authorization") flags |= NGHTTP2_NV_FLAG_NO_INDEX;
  nva.push_back(nghttp2_nv{reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
                           reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())),
                           name.size(), value.size(), flags});
}

/// The nghttp2 view of a field list. Names are lowercased into `scratch` when needed (sized up
/// front, so the views stay put).
void make_nva(const HeaderMap& h, std::vector<nghttp2_nv>& nva, std::string& scratch) {
  std::size_t upper = 0;
  for (auto f : h)
    if (has_upper(f.name)) upper += f.name.size();
  if (scratch.size() < upper) scratch.resize(upper);
  char* out = scratch.data();
  nva.clear();
  nva.reserve(h.size());
  for (auto f : h) {
    std::string_view name = f.name;
    if (has_upper(name)) {
      to_lower_ascii(name, out);
      name = std::string_view(out, name.size());
      out += name.size();
    }
    push_nv(nva, name, f.value);
  }
}

}  // namespace

std::string_view error_code_name(std::uint32_t code) noexcept {
  static constexpr std::string_view kNames[] = {
      "no_error",         "protocol_error", "internal_error",    "flow_control_error",
      "settings_timeout", "stream_closed",  "frame_size_error",  "refused_stream",
      "cancel",           "compression_error", "connect_error",  "enhance_your_calm",
      "inadequate_security", "http_1_1_required"};
  return code < std::size(kNames) ? kNames[code] : std::string_view("unknown");
}

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

// nghttp2's allocations, through the C allocator as nghttp2's own defaults do, but for one: the
// chunk of the frame buffer every session allocates when it is made (NGHTTP2_FRAMEBUF_CHUNKLEN
// in nghttp2's sources: a frame header, a pad-length byte, the largest payload), which is
// held for the session's life. It gets whole pages of its own, which trim() gives back to the
// system while the session has nothing to send (nghttp2 then reserializes every frame from the
// start of the buffer). A chunk of another size (another nghttp2) is simply not recognised.
struct NgMem {
  static constexpr std::size_t kChunk = 9 + 1 + 16384;
  static constexpr std::size_t kPage = 4096;
  static constexpr std::size_t kBlock = (kChunk + kPage - 1) / kPage * kPage;

  static void* malloc(std::size_t size, void* ud) {
    auto& s = *static_cast<Session*>(ud);
    if (s.capture_framebuf_ && size == kChunk && !s.framebuf_) {
      s.framebuf_ = std::aligned_alloc(kPage, kBlock);
      return s.framebuf_;
    }
    return std::malloc(size);
  }
  static void free(void* p, void* ud) {
    auto& s = *static_cast<Session*>(ud);
    if (p && p == s.framebuf_) s.framebuf_ = nullptr;
    std::free(p);
  }
  static void* calloc(std::size_t n, std::size_t size, void*) { return std::calloc(n, size); }
  static void* realloc(void* p, std::size_t size, void* ud) {
    auto& s = *static_cast<Session*>(ud);
    if (!p) return malloc(size, ud);
    if (p == s.framebuf_) {  // nghttp2 does not resize its chunks; handled all the same
      void* q = std::malloc(size);
      if (!q) return nullptr;
      std::memcpy(q, p, std::min(size, kChunk));
      free(p, ud);
      return q;
    }
    return std::realloc(p, size);
  }
};

Session::Session(Mode mode, const Settings& settings, Clock clock)
    : mode_(mode), settings_(settings), clock_(std::move(clock)) {
  if (!clock_) clock_ = [] { return std::chrono::steady_clock::now(); };
  settings_.max_frame_size = std::clamp<std::uint32_t>(settings_.max_frame_size, 16384, 16777215);
  settings_.stream_window = std::min<std::uint32_t>(settings_.stream_window, kMaxStreamId);
  settings_.connection_window =
      std::clamp<std::uint32_t>(settings_.connection_window, 65535, kMaxStreamId);

  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  // Window updates follow `consume()`, so a slow consumer holds the peer at the window.
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_no_closed_streams(opt, 1);
  // Requests and responses are checked by portico alone, as RFC 9113 §8 says (the callbacks:
  // h2::request_problem or h2::response_problem on each head, trailers_problem or to_trailers,
  // ContentLength against DATA, END_STREAM on trailers and not on interim responses, no DATA
  // before a response head, HEAD/204/304 bodiless): nghttp2's own pass over the same fields
  // cost 1,600 instructions per h2c request on the server side and 2,400 per response from an
  // HTTP/2 upstream on the client side.
  nghttp2_option_set_no_http_messaging(opt, 1);
  nghttp2_option_set_peer_max_concurrent_streams(opt, settings_.max_outbound_streams);
  nghttp2_option_set_max_outbound_ack(opt, settings_.max_outbound_ack);
  nghttp2_option_set_max_settings(opt, settings_.max_settings_entries);
  // Room for a 64 KiB header section (HttpServerOptions' limit) after HPACK's worst case.
  nghttp2_option_set_max_send_header_block_length(opt, 128 * 1024);
  // nghttp2's own limits sit just past ours, so ours answer first, with ENHANCE_YOUR_CALM; theirs
  // stay as a backstop.
  nghttp2_option_set_max_continuations(opt, settings_.max_continuations + 1);
  {
    auto secs = std::max<std::uint64_t>(
        1, static_cast<std::uint64_t>(
               std::chrono::duration_cast<std::chrono::seconds>(settings_.flood_window).count()));
    std::uint64_t burst = std::max<std::uint64_t>(1000, 2ull * settings_.max_resets_per_window);
    nghttp2_option_set_stream_reset_rate_limit(opt, burst,
                                               std::max<std::uint64_t>(33, burst / secs));
  }
  nghttp2_session_callbacks* cbs = Callbacks::make();
  nghttp2_mem mem{this, &NgMem::malloc, &NgMem::free, &NgMem::calloc, &NgMem::realloc};
  capture_framebuf_ = true;
  if (mode_ == Mode::Server)
    nghttp2_session_server_new3(&s_, cbs, this, opt, &mem);
  else
    nghttp2_session_client_new3(&s_, cbs, this, opt, &mem);
  capture_framebuf_ = false;
  nghttp2_session_callbacks_del(cbs);
  nghttp2_option_del(opt);

  std::vector<nghttp2_settings_entry> iv;
  iv.push_back({NGHTTP2_SETTINGS_MAX_FRAME_SIZE, settings_.max_frame_size});
  iv.push_back({NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, settings_.stream_window});
  iv.push_back({NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, settings_.max_header_list_size});
  if (settings_.header_table_size != 4096)
    iv.push_back({NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, settings_.header_table_size});
  // RFC 7540 priorities cost CPU per PRIORITY frame and buy a proxy nothing (RFC 9113 §5.3.2).
  iv.push_back({NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1});
  if (mode_ == Mode::Server)
    iv.push_back({NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, settings_.max_concurrent_streams});
  else
    iv.push_back({NGHTTP2_SETTINGS_ENABLE_PUSH, 0});
  nghttp2_submit_settings(s_, NGHTTP2_FLAG_NONE, iv.data(), iv.size());
  if (settings_.connection_window != 65535)
    nghttp2_session_set_local_window_size(s_, NGHTTP2_FLAG_NONE, 0,
                                          static_cast<std::int32_t>(settings_.connection_window));
}

Session::~Session() { nghttp2_session_del(s_); }

Error Session::error(std::string_view why) const {
  return mode_ == Mode::Server ? Error::downstream(ErrorType::H2Error, why)
                               : Error::upstream(ErrorType::H2Error, why);
}

Session::Stream* Session::find(std::int32_t id) const noexcept {
  // A frame's callbacks (a HEADERS frame: one per field) ask for the same stream in a row.
  if (id == found_id_ && found_) return found_;
  auto it = streams_.find(id);
  if (it == streams_.end()) return nullptr;
  found_id_ = id;
  found_ = it->second.get();
  return found_;
}

Session::Stream& Session::open(std::int32_t id) {
  auto& p = streams_[id];
  if (!p) {
    if (!spare_streams_.empty()) {
      p = std::move(spare_streams_.back());
      spare_streams_.pop_back();
    } else {
      p = std::make_unique<Stream>();
    }
    p->id = id;
    ++open_streams_;
    ++stats_.streams_opened;
  }
  return *p;
}

void Session::maybe_erase(std::int32_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end() || !it->second->closed || it->second->buffered != 0) return;
  if (found_ == it->second.get()) found_ = nullptr;
  if (spare_streams_.size() < kSpare) {
    if (spare_streams_.capacity() < kSpare) spare_streams_.reserve(kSpare);  // after trim()
    it->second->reset();
    spare_streams_.push_back(std::move(it->second));
  }
  streams_.erase(it);
}

void Session::recycle(HeaderMap&& fields) noexcept {
  // Only the memory of ordinary heads is kept: a large one is freed with `fields`.
  if (spare_heads_.size() >= kSpare || fields.byte_size() > kSpareHeadBytes) return;
  // Room for all at once (none before the first, nor after trim()): never a growth below.
  if (spare_heads_.capacity() < kSpare) {
    try {
      spare_heads_.reserve(kSpare);
    } catch (const std::bad_alloc&) {
      return;
    }
  }
  fields.clear();
  spare_heads_.push_back(std::move(fields));
}

void Session::trim() noexcept {
  spare_streams_.clear();
  spare_streams_.shrink_to_fit();
  spare_heads_.clear();
  spare_heads_.shrink_to_fit();
  if (out_off_ == out_.size()) {
    std::string().swap(out_);
    out_off_ = 0;
  }
  if (streams_.empty()) decltype(streams_)().swap(streams_);
  if (events_ && events_->empty()) events_.reset();
  peer_history_.shrink_to_fit();
  // Nothing queued: nghttp2 holds no frame in its buffer (see NgMem).
  if (framebuf_ && !want_write()) ::madvise(framebuf_, NgMem::kBlock, MADV_DONTNEED);
}

HeaderMap Session::take_head() noexcept {
  if (spare_heads_.empty()) return HeaderMap();
  HeaderMap h = std::move(spare_heads_.back());
  spare_heads_.pop_back();
  return h;
}

bool Session::over_rate(RateWindow& w, std::uint32_t limit) {
  auto now = clock_();
  if (w.count == 0 || now - w.start >= settings_.flood_window) {
    w.start = now;
    w.count = 0;
  }
  return ++w.count > limit;
}

int Session::fail(ErrorCode code, std::string_view reason) {
  if (!dead_) {
    last_error_.assign(reason);
    nghttp2_session_terminate_session(s_, static_cast<std::uint32_t>(code));
    dead_ = true;
  }
  return in_recv_ ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

// ---------------------------------------------------------------------------------------------
// input / output

Result<std::size_t> Session::feed(std::string_view bytes) {
  if (dead_) return error(last_error_.empty() ? "HTTP/2 session closed" : last_error_);
  if (mode_ != Mode::Server) return feed_frames(bytes);
  // nghttp2 drops a DATA frame on a stream it no longer knows before any callback sees it. To
  // answer one the client sends on a stream it closed (RFC 9113 §5.1: STREAM_CLOSED), follow
  // the frame boundaries and check each DATA frame once the frames before it are processed.
  std::size_t pos = 0, fed = 0;
  while (pos < bytes.size()) {
    const std::size_t left = bytes.size() - pos;
    if (scan_.preface > 0) {
      const std::size_t n = std::min(scan_.preface, left);
      scan_.preface -= n;
      pos += n;
      continue;
    }
    if (scan_.payload > 0) {
      const std::size_t n = std::min(scan_.payload, left);
      scan_.payload -= n;
      pos += n;
      continue;
    }
    const std::size_t n = std::min<std::size_t>(9 - scan_.have, left);
    std::memcpy(scan_.hdr + scan_.have, bytes.data() + pos, n);
    scan_.have += n;
    pos += n;
    if (scan_.have < 9) break;
    scan_.have = 0;
    const auto* h = scan_.hdr;
    scan_.payload = (std::size_t{h[0]} << 16) | (std::size_t{h[1]} << 8) | h[2];
    const auto id = static_cast<std::int32_t>(((std::uint32_t{h[5]} & 0x7f) << 24) |
                                              (std::uint32_t{h[6]} << 16) |
                                              (std::uint32_t{h[7]} << 8) | h[8]);
    if (h[3] == NGHTTP2_PRIORITY && scan_.payload == 5 && bytes.size() - pos >= 5 && id != 0) {
      // PRIORITY frames are ignored (SETTINGS_NO_RFC7540_PRIORITIES) and nghttp2 then skips
      // their checks, but a stream still cannot depend on itself (RFC 9113 §5.3.1).
      const auto* d = reinterpret_cast<const std::uint8_t*>(bytes.data() + pos);
      const auto dep = static_cast<std::int32_t>(((std::uint32_t{d[0]} & 0x7f) << 24) |
                                                 (std::uint32_t{d[1]} << 16) |
                                                 (std::uint32_t{d[2]} << 8) | d[3]);
      if (dep == id) {
        // A stream error; RST_STREAM cannot be sent on an idle stream, and §5.4.1 allows a
        // connection error for any stream error: so GOAWAY.
        if (auto r = feed_frames(bytes.substr(fed, pos - fed)); !r) return r;
        fail(ErrorCode::ProtocolError, "PRIORITY: a stream depends on itself");
        return error(last_error_);
      }
      continue;
    }
    // A HEADERS earlier in this buffer may open the stream: nghttp2 has not seen it yet.
    if (h[3] == NGHTTP2_HEADERS && (id & 1) && id > scan_.max_id) scan_.max_id = id;
    if (h[3] != NGHTTP2_DATA || !(id & 1) || id > std::max(max_peer_stream_, scan_.max_id)) continue;
    if (auto r = feed_frames(bytes.substr(fed, pos - fed)); !r) return r;
    fed = pos;
    if (!nghttp2_session_find_stream(s_, id) && peer_stream(id) == PeerStream::Closed) {
      fail(ErrorCode::StreamClosed, "DATA on a closed stream");
      return error(last_error_);
    }
  }
  if (fed < bytes.size())
    if (auto r = feed_frames(bytes.substr(fed)); !r) return r;
  return bytes.size();
}

Result<std::size_t> Session::feed_frames(std::string_view bytes) {
  if (dead_) return error(last_error_.empty() ? "HTTP/2 session closed" : last_error_);
  in_recv_ = true;
  auto rv = nghttp2_session_mem_recv(s_, reinterpret_cast<const std::uint8_t*>(bytes.data()),
                                     bytes.size());
  in_recv_ = false;
  if (rv >= 0) return static_cast<std::size_t>(rv);
  if (!dead_) {
    // nghttp2 stopped without queueing a GOAWAY: queue the one the error calls for.
    ErrorCode code = ErrorCode::InternalError;
    switch (rv) {
      case NGHTTP2_ERR_BAD_CLIENT_MAGIC:
      case NGHTTP2_ERR_SETTINGS_EXPECTED:
      case NGHTTP2_ERR_PROTO:
        code = ErrorCode::ProtocolError;
        break;
      case NGHTTP2_ERR_FLOODED:
      case NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
        code = ErrorCode::EnhanceYourCalm;
        break;
      case NGHTTP2_ERR_HEADER_COMP:
        code = ErrorCode::CompressionError;
        break;
      default:
        break;
    }
    fail(code, nghttp2_strerror(static_cast<int>(rv)));
  }
  return error(last_error_);
}

std::optional<Event> Session::poll_event() {
  if (!has_events()) return std::nullopt;
  Event e = std::move(events_->front());
  events_->pop_front();
  return e;
}

std::string_view Session::pending_output() {
  if (out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
  } else if (out_off_ > 0 && out_off_ >= out_.size() / 2) {
    out_.erase(0, out_off_);
    out_off_ = 0;
  }
  while (out_.size() - out_off_ < settings_.output_buffer_bytes) {
    const std::uint8_t* p = nullptr;
    auto n = nghttp2_session_mem_send(s_, &p);
    if (n < 0) {
      // Only allocation failures and callback failures get here; the connection is unusable.
      last_error_ = nghttp2_strerror(static_cast<int>(n));
      dead_ = true;
      break;
    }
    if (n == 0) break;
    out_.append(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
  }
  return std::string_view(out_).substr(out_off_);
}

void Session::consume_output(std::size_t n) noexcept {
  out_off_ = std::min(out_.size(), out_off_ + n);
}

bool Session::want_read() const noexcept { return nghttp2_session_want_read(s_) != 0; }
bool Session::want_write() const noexcept {
  return out_off_ < out_.size() || nghttp2_session_want_write(s_) != 0;
}
bool Session::finished() const noexcept { return !want_read() && !want_write(); }

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
      s->chunks.pop_front();
      s->front_off = 0;
    }
  }
  s->buffered -= n;
  inbound_buffered_ -= n;
  // A closed stream has no window left to reopen, but the connection does.
  if (s->closed)
    nghttp2_session_consume_connection(s_, n);
  else
    nghttp2_session_consume(s_, stream_id, n);
  maybe_erase(stream_id);
}

void Session::discard(std::int32_t stream_id) {
  if (Stream* s = find(stream_id)) consume(stream_id, s->buffered);
}

// ---------------------------------------------------------------------------------------------
// submitting

Result<std::int32_t> Session::submit_request(const HeaderMap& fields, bool end_stream) {
  if (mode_ != Mode::Client) return error("submit_request on a server session");
  if (!can_open_stream()) return error("no HTTP/2 stream available on this connection");
  auto method = fields.get(":method");
  auto len = ContentLength::from_fields(fields, false, false);
  if (!len) return len.error();
  if (end_stream && !len->complete()) return error("request content-length without a body");
  std::vector<nghttp2_nv>& nva = head_nva;
  make_nva(fields, nva, head_names);
  auto prd = Callbacks::provider();
  std::int32_t id = nghttp2_submit_request(s_, nullptr, nva.data(), nva.size(),
                                           end_stream ? nullptr : &prd, nullptr);
  if (id < 0) return error(nghttp2_strerror(id));
  Stream& s = open(id);
  s.client = true;
  s.head_submitted = true;
  s.has_provider = !end_stream;
  s.out_end = end_stream;
  s.request_is_head = method && *method == "HEAD";
  s.out_len = *len;
  ++client_streams_;
  return id;
}

Result<void> Session::submit_head(std::int32_t stream_id, const HeaderMap& fields, bool end_stream,
                                  bool informational) {
  auto s = head_stream(stream_id);
  if (!s) return s.error();
  auto status = status_of(fields);
  if (!status) return error("response without a valid :status");
  if (informational != (*status < 200)) return error("informational status mismatch");
  make_nva(fields, head_nva, head_names);
  return submit_nva(**s, *status, fields, end_stream, informational);
}

Result<void> Session::submit_response(std::int32_t stream_id, const ResponseHeader& r,
                                      bool end_stream, std::size_t* field_bytes) {
  auto s = head_stream(stream_id);
  if (!s) return s.error();
  if (!status_expressible(r.status()) || r.status() < 200) return error("not a final HTTP/2 status");
  // The list nghttp2 gets, built from `r` at once: ":status", then the fields HTTP/2 may carry,
  // names lowercased. Their bytes go to the stream's head_bytes_out, which stay put until
  // nghttp2 has packed the HEADERS frame (it never packs one for a stream gone before): nghttp2
  // takes them as they are (NO_COPY) instead of copying and lowercasing each name again.
  Stream& st = **s;
  const std::size_t need = r.headers().byte_size() + 3;
  if (st.head_bytes_cap < need) {
    st.head_bytes_out.reset(new char[need]);
    st.head_bytes_cap = need;
  }
  struct Build {
    std::vector<nghttp2_nv>* nva;
    char* at;
  };
  head_nva.clear();
  head_nva.reserve(r.headers().size() + 1);
  Build b{&head_nva, st.head_bytes_out.get()};
  constexpr std::uint8_t kNoCopy = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
  {
    const unsigned code = r.status();
    b.at[0] = static_cast<char>('0' + code / 100 % 10);
    b.at[1] = static_cast<char>('0' + code / 10 % 10);
    b.at[2] = static_cast<char>('0' + code % 10);
    push_nv(head_nva, ":status", std::string_view(b.at, 3), kNoCopy);
    b.at += 3;
  }
  for_each_h2_field(
      r.headers(), false, false,
      [](void* ctx, std::string_view name, std::string_view value) {
        auto& bb = *static_cast<Build*>(ctx);
        char* n = bb.at;
        to_lower_ascii(name, n);
        if (!value.empty()) std::memcpy(n + name.size(), value.data(), value.size());
        bb.at += name.size() + value.size();
        push_nv(*bb.nva, std::string_view(n, name.size()),
                std::string_view(n + name.size(), value.size()), kNoCopy);
      },
      &b);
  if (field_bytes) {
    *field_bytes = 0;
    for (const nghttp2_nv& nv : head_nva) *field_bytes += nv.namelen + nv.valuelen;
  }
  return submit_nva(st, r.status(), r.headers(), end_stream, false);
}

Result<Session::Stream*> Session::head_stream(std::int32_t stream_id) {
  if (mode_ != Mode::Server) return error("response on a client session");
  Stream* s = find(stream_id);
  if (!s || s->closed || s->client) return error("response on a closed stream");
  if (s->head_submitted) return error("response head already sent");
  return s;
}

Result<void> Session::submit_nva(Stream& s, std::uint16_t status, const HeaderMap& fields,
                                 bool end_stream, bool informational) {
  std::vector<nghttp2_nv>& nva = head_nva;
  if (informational) {
    int rv = nghttp2_submit_headers(s_, NGHTTP2_FLAG_NONE, s.id, nullptr, nva.data(), nva.size(),
                                    nullptr);
    if (rv != 0) return error(nghttp2_strerror(rv));
    return {};
  }
  bool no_body = s.request_is_head || status == 204 || status == 304;
  auto len = ContentLength::from_fields(fields, no_body, false);
  if (!len) return error("invalid content-length in the response");
  if (end_stream && !len->complete()) return error("response content-length without a body");
  auto prd = Callbacks::provider();
  int rv = nghttp2_submit_response(s_, s.id, nva.data(), nva.size(), end_stream ? nullptr : &prd);
  if (rv != 0) return error(nghttp2_strerror(rv));
  s.head_submitted = true;
  s.has_provider = !end_stream;
  s.out_end = end_stream;
  s.out_len = *len;
  return {};
}

Result<void> Session::submit_informational(std::int32_t stream_id, const HeaderMap& fields) {
  return submit_head(stream_id, fields, false, true);
}

Result<void> Session::submit_response(std::int32_t stream_id, const HeaderMap& fields,
                                      bool end_stream) {
  return submit_head(stream_id, fields, end_stream, false);
}

Result<std::size_t> Session::send_data(std::int32_t stream_id, std::string_view bytes, bool end) {
  Stream* s = find(stream_id);
  if (!s || s->closed) return error("stream closed");
  if (!s->has_provider || s->out_end) return error("stream already ended");
  std::size_t n = std::min(bytes.size(), send_capacity(stream_id));
  bool finish = end && n == bytes.size();
  if (!s->out_len.fits(n)) return error("body longer than its content-length");
  if (finish) {
    ContentLength after = s->out_len;
    after.add(n);
    if (!after.complete()) return error("body shorter than its content-length");
  }
  s->out_len.add(n);
  s->out.append(bytes.data(), n);
  if (n < bytes.size()) s->want_writable = true;
  if (finish) s->out_end = true;
  if (s->deferred && (n > 0 || finish)) {
    s->deferred = false;
    nghttp2_session_resume_data(s_, stream_id);
  }
  return n;
}

Result<void> Session::send_trailers(std::int32_t stream_id, const HeaderMap& fields) {
  Stream* s = find(stream_id);
  if (!s || s->closed) return error("stream closed");
  if (!s->has_provider || s->out_end) return error("stream already ended");
  if (!s->out_len.complete()) return error("body shorter than its content-length");
  s->trailers = fields;
  s->out_end = true;
  if (s->deferred) {
    s->deferred = false;
    nghttp2_session_resume_data(s_, stream_id);
  }
  return {};
}

std::size_t Session::send_capacity(std::int32_t stream_id) const noexcept {
  const Stream* s = find(stream_id);
  if (!s || s->closed || s->out_end || !s->has_provider) return 0;
  return settings_.send_buffer_bytes - std::min(settings_.send_buffer_bytes, s->out_size());
}

Session::PeerStream Session::peer_stream(std::int32_t id) const noexcept {
  auto it = std::lower_bound(peer_history_.begin(), peer_history_.end(), id,
                             [](const PeerRecord& r, std::int32_t v) { return r.id < v; });
  if (it != peer_history_.end() && it->id == id) return it->state;
  if (peer_forgot_ && id < peer_history_.front().id) return PeerStream::Forgotten;
  return PeerStream::Unknown;
}

void Session::set_peer_stream(std::int32_t id, PeerStream st) noexcept {
  if (st == PeerStream::Open) {
    if (peer_history_.size() == kPeerHistory + kPeerForget) {
      peer_history_.erase(peer_history_.begin(), peer_history_.begin() + kPeerForget);
      peer_forgot_ = true;
    }
    if (peer_history_.size() == peer_history_.capacity())  // grows to the bound, no further
      peer_history_.reserve(
          std::min(std::max<std::size_t>(8, peer_history_.size() * 2), kPeerHistory + kPeerForget));
    peer_history_.push_back({id, st});
    return;
  }
  // Streams mostly close in about the order they opened: the newest few first.
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

void Session::reset(std::int32_t stream_id, ErrorCode code) {
  Stream* s = find(stream_id);
  if (!s || s->closed) return;
  s->app_reset = true;
  nghttp2_submit_rst_stream(s_, NGHTTP2_FLAG_NONE, stream_id, static_cast<std::uint32_t>(code));
}

void Session::ping() {
  std::uint8_t opaque[8];
  std::uint64_t v = ++ping_seq_;
  std::memcpy(opaque, &v, 8);
  nghttp2_submit_ping(s_, NGHTTP2_FLAG_NONE, opaque);
}

void Session::shutdown() {
  if (shutting_down_ || dead_) return;
  shutting_down_ = true;
  if (mode_ == Mode::Server) {
    nghttp2_submit_shutdown_notice(s_);
    shutdown_ping_ = ++ping_seq_;
    std::uint8_t opaque[8];
    std::memcpy(opaque, &shutdown_ping_, 8);
    nghttp2_submit_ping(s_, NGHTTP2_FLAG_NONE, opaque);
  } else {
    nghttp2_submit_goaway(s_, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, nullptr, 0);
  }
}

void Session::terminate(ErrorCode code) {
  if (dead_) return;
  dead_ = true;
  last_error_ = "terminated";
  nghttp2_session_terminate_session(s_, static_cast<std::uint32_t>(code));
}

PrefaceMatch match_client_preface(std::string_view first_bytes) noexcept {
  constexpr std::string_view magic(NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
  auto n = std::min(first_bytes.size(), magic.size());
  if (first_bytes.substr(0, n) != magic.substr(0, n)) return PrefaceMatch::No;
  return n == magic.size() ? PrefaceMatch::Yes : PrefaceMatch::Partial;
}

std::uint32_t Session::available_streams() const noexcept {
  if (mode_ != Mode::Client || dead_ || goaway_received_ || shutting_down_) return 0;
  std::uint32_t limit =
      std::min(settings_.max_outbound_streams,
               nghttp2_session_get_remote_settings(s_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS));
  if (client_streams_ >= limit) return 0;
  std::uint32_t next = nghttp2_session_get_next_stream_id(s_);
  if (next > kMaxStreamId) return 0;
  std::uint32_t ids = (kMaxStreamId - next) / 2 + 1;
  return std::min(limit - static_cast<std::uint32_t>(client_streams_), ids);
}

}  // namespace portico::h2
