// The nghttp2 callbacks of h2::Session: events, body buffering, and the protections nghttp2 does
// not apply itself (frame floods, rapid reset, header list size, Content-Length).
#include <algorithm>
#include <cstring>

#include "http2/session.hpp"
#include "http2/stream.hpp"

namespace portico::h2 {

namespace {

std::string_view sv(const std::uint8_t* p, std::size_t n) noexcept {
  return {reinterpret_cast<const char*>(p), n};
}

}  // namespace

struct Session::Callbacks::Impl {
  static Session& self(void* user) { return *static_cast<Session*>(user); }

  static int on_begin_frame(nghttp2_session*, const nghttp2_frame_hd* hd, void* user) {
    Session& s = self(user);
    const Settings& cfg = s.settings_;
    if (s.mode_ == Mode::Server && (hd->stream_id & 1) &&
        (hd->type == NGHTTP2_HEADERS || hd->type == NGHTTP2_DATA)) {
      const std::int32_t id = hd->stream_id;
      if (hd->type == NGHTTP2_HEADERS && id > s.max_peer_stream_) {
        s.max_peer_stream_ = id;
        s.set_peer_stream(id, PeerStream::Open);
      } else if (id <= s.max_peer_stream_ && !nghttp2_session_find_stream(s.s_, id)) {
        switch (s.peer_stream(id)) {
          case PeerStream::Closed:
            return s.fail(ErrorCode::StreamClosed, "frame on a closed stream");
          case PeerStream::Unknown:
            if (hd->type == NGHTTP2_HEADERS)
              return s.fail(ErrorCode::ProtocolError, "HEADERS on a stream id below one in use");
            return s.fail(ErrorCode::StreamClosed, "DATA on a stream that never opened");
          default:  // ours to ignore: reset or refused by us, or too old to know
            break;
        }
      }
    }
    switch (hd->type) {
      case NGHTTP2_DATA:
        if (hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM)) {
          if (++s.empty_frames_ > cfg.max_empty_frames)
            return s.fail(ErrorCode::EnhanceYourCalm, "flood of empty DATA frames");
        } else if (hd->length > 0) {
          s.empty_frames_ = 0;
        }
        break;
      case NGHTTP2_HEADERS:
        s.continuations_ = 0;
        break;
      case NGHTTP2_CONTINUATION:
        if (++s.continuations_ > cfg.max_continuations)
          return s.fail(ErrorCode::EnhanceYourCalm, "flood of CONTINUATION frames");
        break;
      case NGHTTP2_SETTINGS:
        if (!(hd->flags & NGHTTP2_FLAG_ACK) &&
            s.over_rate(s.settings_frames_, cfg.max_settings_per_window))
          return s.fail(ErrorCode::EnhanceYourCalm, "flood of SETTINGS frames");
        break;
      case NGHTTP2_PING:
        if (!(hd->flags & NGHTTP2_FLAG_ACK) && s.over_rate(s.pings_, cfg.max_pings_per_window))
          return s.fail(ErrorCode::EnhanceYourCalm, "flood of PING frames");
        break;
      case NGHTTP2_PRIORITY:
        if (hd->stream_id == 0) return s.fail(ErrorCode::ProtocolError, "PRIORITY on stream 0");
        if (s.over_rate(s.priorities_, cfg.max_priority_per_window))
          return s.fail(ErrorCode::EnhanceYourCalm, "flood of PRIORITY frames");
        break;
      case NGHTTP2_RST_STREAM:
        // A reset of a stream we had not finished answering (or of one we do not know) is the
        // cheap half of the rapid reset attack: count it against the window.
        if (s.mode_ == Mode::Server) {
          Session::Stream* st = s.find(hd->stream_id);
          if (!st || !st->local_done) {
            ++s.stats_.peer_resets;
            if (s.over_rate(s.resets_, cfg.max_resets_per_window))
              return s.fail(ErrorCode::EnhanceYourCalm, "rapid reset");
          }
        }
        break;
      default:
        break;
    }
    return 0;
  }

  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    Session& s = self(user);
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    Session::Stream* st = s.find(frame->hd.stream_id);
    if (!st && s.mode_ == Mode::Server && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
      st = &s.open(frame->hd.stream_id);
    if (!st) return 0;
    st->head.clear();
    st->head_bytes = 0;
    st->head_too_large = false;
    return 0;
  }

  static int on_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name,
                       std::size_t namelen, const std::uint8_t* value, std::size_t valuelen,
                       std::uint8_t, void* user) {
    Session& s = self(user);
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    Session::Stream* st = s.find(frame->hd.stream_id);
    if (!st || st->head_too_large) return 0;
    // nghttp2 decodes every field (the HPACK state depends on it) but keeps no limit of its own:
    // stop storing once the list outgrows what we advertised.
    st->head_bytes += namelen + valuelen + 32;
    if (st->head_bytes > s.settings_.max_header_list_size) {
      st->head_too_large = true;
      st->head.clear();
      return 0;
    }
    st->head.append(sv(name, namelen), sv(value, valuelen));
    return 0;
  }

  /// The head of `st` was larger than max_header_list_size.
  static void reject_head(Session& s, Session::Stream& st, bool end_stream) {
    ++s.stats_.headers_rejected;
    st.rejected = true;
    Event e{EventKind::Rejected};
    e.stream_id = st.id;
    if (s.mode_ == Mode::Server && !st.head_seen) {
      // Answer 431 (RFC 6585 §5) and tell the client to stop sending (RFC 9113 §8.1).
      st.head_seen = true;
      static const nghttp2_nv nva[] = {
          {(std::uint8_t*)":status", (std::uint8_t*)"431", 7, 3, NGHTTP2_NV_FLAG_NONE},
          {(std::uint8_t*)"content-length", (std::uint8_t*)"0", 14, 1, NGHTTP2_NV_FLAG_NONE},
      };
      nghttp2_submit_response(s.s_, st.id, nva, 2, nullptr);
      st.head_submitted = true;
      if (!end_stream) nghttp2_submit_rst_stream(s.s_, NGHTTP2_FLAG_NONE, st.id, NGHTTP2_NO_ERROR);
      e.code = 431;
      // It costs us a stream like a reset does.
      ++s.stats_.peer_resets;
      if (s.over_rate(s.resets_, s.settings_.max_resets_per_window))
        s.fail(ErrorCode::EnhanceYourCalm, "rapid reset");
    } else {
      nghttp2_submit_rst_stream(s.s_, NGHTTP2_FLAG_NONE, st.id, NGHTTP2_CANCEL);
      e.code = s.mode_ == Mode::Server ? 431 : 502;
    }
    s.push(std::move(e));
  }

  /// Client: a malformed response head, trailer section or DATA on `st`. The stream is reset
  /// with PROTOCOL_ERROR, the reason reported (Malformed), and nothing more of it is (Closed
  /// follows).
  static void malformed_response(Session& s, Session::Stream& st, const char* why) {
    st.rejected = true;
    st.head.clear();
    nghttp2_submit_rst_stream(s.s_, NGHTTP2_FLAG_NONE, st.id, NGHTTP2_PROTOCOL_ERROR);
    Event m{EventKind::Malformed, st.id};
    m.why = why;
    s.push(std::move(m));
  }

  /// END_STREAM from the peer: the body must match its Content-Length.
  static void end_stream(Session& s, Session::Stream& st) {
    if (!st.in_len.complete()) {
      nghttp2_submit_rst_stream(s.s_, NGHTTP2_FLAG_NONE, st.id, NGHTTP2_PROTOCOL_ERROR);
      return;
    }
    s.push(Event{EventKind::EndStream, st.id});
  }

  static int on_headers_recv(Session& s, const nghttp2_frame* frame) {
    Session::Stream* st = s.find(frame->hd.stream_id);
    if (!st || st->rejected) return 0;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (st->head_too_large) {
      reject_head(s, *st, end);
      return 0;
    }
    Event e{EventKind::Head, st->id};
    e.end_stream = end;
    if (!st->head_seen) {
      bool no_body = false;
      if (s.mode_ == Mode::Server) {
        // nghttp2 leaves HTTP messaging to us on the server side (see Session::Session).
        if (const char* why = request_problem(st->head)) {
          st->head.clear();
          nghttp2_submit_rst_stream(s.s_, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
          Event m{EventKind::Malformed, st->id};
          m.why = why;
          s.push(std::move(m));
          return 0;
        }
        st->request_is_head = st->head.get(":method") == std::optional<std::string_view>("HEAD");
      } else {
        // Nor on the client side: a response head RFC 9113 calls malformed resets the stream,
        // as nghttp2's own checks did (§8.1.1), and is reported with the reason.
        std::uint16_t status = 0;
        const char* why = response_problem(st->head, status);
        // An interim response never ends a stream (§8.1).
        if (!why && status < 200 && end) why = "interim response with END_STREAM";
        if (why) {
          malformed_response(s, *st, why);
          return 0;
        }
        if (status < 200) {
          e.kind = EventKind::Informational;
          e.fields = std::move(st->head);
          st->head = s.take_head();
          s.push(std::move(e));
          return 0;
        }
        no_body = st->request_is_head || status == 204 || status == 304;
      }
      auto len = ContentLength::from_fields(st->head, no_body, s.mode_ == Mode::Client);
      if (!len) {
        nghttp2_submit_rst_stream(s.s_, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
        return 0;
      }
      st->in_len = *len;
      st->head_seen = true;
      st->head_reported = true;
    } else {
      // Trailers end the stream (RFC 9113 §8.1): a HEADERS after the head without END_STREAM
      // makes the message malformed.
      if (!end) {
        st->head.clear();
        nghttp2_submit_rst_stream(s.s_, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
        return 0;
      }
      // The server's trailers are checked where they are translated (to_trailers); a client
      // checks the upstream's here, before anything of them is reported.
      if (s.mode_ == Mode::Client) {
        if (const char* why = trailers_problem(st->head)) {
          malformed_response(s, *st, why);
          return 0;
        }
      }
      e.kind = EventKind::Trailers;
    }
    e.fields = std::move(st->head);
    st->head = s.take_head();  // for trailers, or the next stream using this object
    s.push(std::move(e));
    if (end) end_stream(s, *st);
    return 0;
  }

  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    Session& s = self(user);
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS:
        on_headers_recv(s, frame);
        break;
      case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
          Session::Stream* st = s.find(frame->hd.stream_id);
          if (st && !st->rejected && st->head_seen) end_stream(s, *st);
        }
        break;
      case NGHTTP2_RST_STREAM: {
        Session::Stream* st = s.find(frame->hd.stream_id);
        if (!st) break;
        st->peer_rst = true;
        if (st->client || st->head_reported) {
          Event e{EventKind::Reset, st->id};
          e.code = frame->rst_stream.error_code;
          s.push(std::move(e));
        }
        break;
      }
      case NGHTTP2_GOAWAY: {
        s.goaway_received_ = true;
        Event e{EventKind::Goaway};
        e.code = frame->goaway.error_code;
        e.last_stream_id = frame->goaway.last_stream_id;
        s.push(std::move(e));
        break;
      }
      case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) s.push(Event{EventKind::Settings});
        break;

      case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
          std::uint64_t v;
          std::memcpy(&v, frame->ping.opaque_data, 8);
          if (s.shutting_down_ && !s.final_goaway_sent_ && v == s.shutdown_ping_) {
            // Every stream the client opened before it saw the notice has arrived by now.
            s.final_goaway_sent_ = true;
            nghttp2_submit_goaway(s.s_, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(s.s_), NGHTTP2_NO_ERROR,
                                  nullptr, 0);
          }
          s.push(Event{EventKind::PingAck});
        }
        break;
      default:
        break;
    }
    return s.dead_ && s.in_recv_ ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
  }

  static int on_data_chunk(nghttp2_session* session, std::uint8_t, std::int32_t stream_id,
                           const std::uint8_t* data, std::size_t len, void* user) {
    Session& s = self(user);
    Session::Stream* st = s.find(stream_id);
    if (!st || st->rejected || st->closed) {
      // Nobody will read these bytes: give the window back now.
      nghttp2_session_consume(session, stream_id, len);
      return 0;
    }
    // DATA before the final response head (or after a reset one) is malformed (RFC 9113 §8.1).
    if (st->client && !st->head_seen) {
      nghttp2_session_consume(session, stream_id, len);
      malformed_response(s, *st, "DATA before the response head");
      return 0;
    }
    if (!st->in_len.add(len)) {
      // More DATA than Content-Length said (RFC 9113 §8.1.1). nghttp2 checks it too; this is the
      // explicit rule, whatever the library version.
      nghttp2_session_consume(session, stream_id, len);
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_PROTOCOL_ERROR);
      return 0;
    }
    if (len == 0) return 0;
    // Append to the last piece while it has room (its bytes never move then), else start one.
    if (st->chunks.empty() || st->chunks.back().capacity() - st->chunks.back().size() < len) {
      st->chunks.emplace_back();
      st->chunks.back().reserve(std::max<std::size_t>(len, 4096));
    }
    st->chunks.back().append(reinterpret_cast<const char*>(data), len);
    st->buffered += len;
    s.inbound_buffered_ += len;
    s.stats_.peak_buffered = std::max(s.stats_.peak_buffered, s.inbound_buffered_);
    if (s.has_events() && s.events_->back().kind == EventKind::Data &&
        s.events_->back().stream_id == stream_id) {
      s.events_->back().bytes += len;
    } else {
      Event e{EventKind::Data, stream_id};
      e.bytes = len;
      s.push(std::move(e));
    }
    return 0;
  }

  static void close(Session& s, Session::Stream& st, std::uint32_t code) {
    st.closed = true;
    if (!st.client) {
      const bool ours = st.app_reset || st.rejected || (code != NGHTTP2_NO_ERROR && !st.peer_rst);
      s.set_peer_stream(st.id, ours ? PeerStream::ClosedByUs : PeerStream::Closed);
    }
    --s.open_streams_;
    if (st.client) --s.client_streams_;
    std::string().swap(st.out);
    st.out_off = 0;
    st.trailers.reset();
    if (st.client || st.head_reported) {
      Event e{EventKind::Closed, st.id};
      e.code = code;
      e.retry_safe = st.client && !st.head_seen && code == NGHTTP2_REFUSED_STREAM;
      s.push(std::move(e));
    }
    s.maybe_erase(st.id);
  }

  static int on_stream_close(nghttp2_session*, std::int32_t stream_id, std::uint32_t code,
                             void* user) {
    Session& s = self(user);
    Session::Stream* st = s.find(stream_id);
    if (!st || st->closed) return 0;
    // A stream we reset because the peer broke a rule (a malformed request, a bad body length)
    // costs us as much as one the peer reset: both count toward the rapid reset window.
    if (s.mode_ == Mode::Server && code != NGHTTP2_NO_ERROR && !st->peer_rst && !st->app_reset &&
        !st->rejected && !st->local_done) {
      ++s.stats_.peer_resets;
      if (s.over_rate(s.resets_, s.settings_.max_resets_per_window))
        s.fail(ErrorCode::EnhanceYourCalm, "rapid reset");
    }
    close(s, *st, code);
    return s.dead_ && s.in_recv_ ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
  }

  static int on_frame_send(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    Session& s = self(user);
    switch (frame->hd.type) {
      case NGHTTP2_GOAWAY: {
        Event e{EventKind::GoawaySent};
        e.code = frame->goaway.error_code;
        e.last_stream_id = frame->goaway.last_stream_id;
        s.push(std::move(e));
        break;
      }
      case NGHTTP2_HEADERS:
      case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
          if (Session::Stream* st = s.find(frame->hd.stream_id)) st->local_done = true;
        break;
      default:
        break;
    }
    return 0;
  }

  static int on_frame_not_send(nghttp2_session*, const nghttp2_frame* frame, int, void* user) {
    Session& s = self(user);
    // A request that never left (GOAWAY arrived first, or ids ran out): nghttp2 opened no
    // stream, so report it closed and safe to retry here.
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    Session::Stream* st = s.find(frame->hd.stream_id);
    if (!st || st->closed || !st->client) return 0;
    close(s, *st, NGHTTP2_REFUSED_STREAM);
    return 0;
  }

  static int on_error(nghttp2_session*, int, const char* msg, std::size_t len, void* user) {
    self(user).last_error_.assign(msg, len);
    return 0;
  }

  static ssize_t read_body(nghttp2_session* session, std::int32_t stream_id, std::uint8_t* buf,
                           std::size_t length, std::uint32_t* flags, nghttp2_data_source*,
                           void* user) {
    Session& s = self(user);
    Session::Stream* st = s.find(stream_id);
    if (!st) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    std::size_t avail = st->out_size();
    if (avail == 0 && !st->out_end) {
      st->deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
    std::size_t n = std::min(avail, length);
    std::memcpy(buf, st->out.data() + st->out_off, n);
    st->out_off += n;
    if (st->out_off == st->out.size()) {
      st->out.clear();
      st->out_off = 0;
    } else if (st->out_off >= st->out.size() / 2) {
      st->out.erase(0, st->out_off);
      st->out_off = 0;
    }
    if (st->out_size() == 0 && st->out_end) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      if (st->trailers) {
        std::vector<nghttp2_nv> nva;
        nva.reserve(st->trailers->size());
        for (auto f : *st->trailers)
          nva.push_back({(std::uint8_t*)f.name.data(), (std::uint8_t*)f.value.data(), f.name.size(),
                         f.value.size(), NGHTTP2_NV_FLAG_NONE});
        if (nghttp2_submit_trailer(session, stream_id, nva.data(), nva.size()) == 0)
          *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        st->trailers.reset();
      }
      std::string().swap(st->out);
    }
    if (st->want_writable && !st->out_end && st->out_size() <= s.settings_.send_buffer_bytes / 2) {
      st->want_writable = false;
      s.push(Event{EventKind::Writable, stream_id});
    }
    return static_cast<ssize_t>(n);
  }
};

nghttp2_session_callbacks* Session::Callbacks::make() {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, &Impl::on_begin_frame);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &Impl::on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &Impl::on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &Impl::on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &Impl::on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &Impl::on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &Impl::on_frame_send);
  nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, &Impl::on_frame_not_send);
  nghttp2_session_callbacks_set_error_callback2(cbs, &Impl::on_error);
  return cbs;
}

nghttp2_data_provider Session::Callbacks::provider() {
  nghttp2_data_provider p;
  p.source.ptr = nullptr;
  p.read_callback = &Impl::read_body;
  return p;
}

}  // namespace portico::h2
