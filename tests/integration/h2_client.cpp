#include "integration/h2_client.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace h2test {

namespace ph2 = portico::h2;
using Clock = std::chrono::steady_clock;

namespace {

SSL* as_ssl(void* p) { return static_cast<SSL*>(p); }

std::string ssl_errors() {
  std::string s;
  while (unsigned long e = ERR_get_error()) {
    char b[256];
    ERR_error_string_n(e, b, sizeof b);
    if (!s.empty()) s += "; ";
    s += b;
  }
  return s;
}

int ms_left(Clock::time_point end) {
  auto left = std::chrono::duration_cast<Millis>(end - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

std::uint32_t be32(std::string_view p, std::size_t at) {
  if (p.size() < at + 4) return 0;
  auto b = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(p[at + i])); };
  return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
}

void put32(std::string& out, std::uint32_t v) {
  out.push_back(static_cast<char>(v >> 24));
  out.push_back(static_cast<char>(v >> 16));
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}

// HPACK string length with a 7-bit prefix (RFC 7541 §5.1), Huffman bit clear.
void hpack_len(std::string& out, std::size_t n) {
  if (n < 127) {
    out.push_back(static_cast<char>(n));
    return;
  }
  out.push_back(127);
  n -= 127;
  while (n >= 128) {
    out.push_back(static_cast<char>((n & 0x7f) | 0x80));
    n >>= 7;
  }
  out.push_back(static_cast<char>(n));
}

}  // namespace

// ---- Transport ---------------------------------------------------------------------------------

Transport::Transport(std::uint16_t port, const Options& o) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    error_ = "socket";
    return;
  }
  timeval tv{static_cast<time_t>(o.timeout.count() / 1000),
             static_cast<suseconds_t>((o.timeout.count() % 1000) * 1000)};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    error_ = std::string("connect: ") + std::strerror(errno);
    return;
  }
  if (!o.preamble.empty() && ::send(fd_, o.preamble.data(), o.preamble.size(), MSG_NOSIGNAL) !=
                                 static_cast<ssize_t>(o.preamble.size())) {
    error_ = "sending the preamble";
    return;
  }
  if (!o.tls) return;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  ctx_ = ctx;
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);  // test certificates; the proxy is what is tested
  std::string protos;
  for (const auto& p : o.alpn) {
    protos.push_back(static_cast<char>(p.size()));
    protos += p;
  }
  if (!protos.empty())
    SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(protos.data()),
                            static_cast<unsigned>(protos.size()));
  SSL* ssl = SSL_new(ctx);
  ssl_ = ssl;
  SSL_set_fd(ssl, fd_);
  if (!o.sni.empty()) SSL_set_tlsext_host_name(ssl, o.sni.c_str());
  if (SSL_connect(ssl) != 1) {
    error_ = "TLS handshake: " + ssl_errors();
    return;
  }
  const unsigned char* sel = nullptr;
  unsigned len = 0;
  SSL_get0_alpn_selected(ssl, &sel, &len);
  if (sel) alpn_.assign(reinterpret_cast<const char*>(sel), len);
}

Transport::~Transport() {
  if (ssl_) SSL_free(as_ssl(ssl_));
  if (ctx_) SSL_CTX_free(static_cast<SSL_CTX*>(ctx_));
  if (fd_ >= 0) ::close(fd_);
}

bool Transport::write(std::string_view bytes) {
  if (fd_ < 0) return false;
  while (!bytes.empty()) {
    if (ssl_) {
      int n = SSL_write(as_ssl(ssl_), bytes.data(), static_cast<int>(std::min<std::size_t>(bytes.size(), 1 << 20)));
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    } else {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  return true;
}

long Transport::read_some(char* buf, std::size_t n, Millis wait) {
  if (fd_ < 0) return -1;
  const auto end = Clock::now() + wait;
  for (;;) {
    if (!ssl_ || SSL_pending(as_ssl(ssl_)) == 0) {
      pollfd p{fd_, POLLIN, 0};
      int r = ::poll(&p, 1, ms_left(end));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return 0;
    }
    if (!ssl_) {
      ssize_t r = ::recv(fd_, buf, n, 0);
      if (r > 0) return static_cast<long>(r);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
      return -1;
    }
    int r = SSL_read(as_ssl(ssl_), buf, static_cast<int>(n));
    if (r > 0) return r;
    int e = SSL_get_error(as_ssl(ssl_), r);
    // Records without application data (TLS 1.3 tickets): look again until the deadline.
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      if (Clock::now() >= end) return 0;
      continue;
    }
    ERR_clear_error();
    return -1;
  }
}

// ---- frames ----------------------------------------------------------------------------------------

std::uint32_t Frame::error_code() const {
  if (type == kRstStream) return be32(payload, 0);
  if (type == kGoaway) return be32(payload, 4);
  return 0;
}

std::uint32_t Frame::last_stream() const { return type == kGoaway ? be32(payload, 0) & 0x7fffffff : 0; }

std::string frame(std::uint8_t type, std::uint8_t flags, std::uint32_t stream,
                  std::string_view payload) {
  std::string f;
  auto n = static_cast<std::uint32_t>(payload.size());
  f.push_back(static_cast<char>(n >> 16));
  f.push_back(static_cast<char>(n >> 8));
  f.push_back(static_cast<char>(n));
  f.push_back(static_cast<char>(type));
  f.push_back(static_cast<char>(flags));
  put32(f, stream & 0x7fffffff);
  f.append(payload);
  return f;
}

std::string settings_frame(const std::vector<std::pair<std::uint16_t, std::uint32_t>>& s) {
  std::string p;
  for (auto [id, v] : s) {
    p.push_back(static_cast<char>(id >> 8));
    p.push_back(static_cast<char>(id));
    put32(p, v);
  }
  return frame(kSettings, 0, 0, p);
}

std::string literal_block(const Fields& fields) {
  std::string b;
  for (const auto& [n, v] : fields) {
    b.push_back(0);
    hpack_len(b, n.size());
    b.append(n);
    hpack_len(b, v.size());
    b.append(v);
  }
  return b;
}

RawConnection::RawConnection(std::uint16_t port, const Transport::Options& o) : t_(port, o) {}

bool RawConnection::handshake(Millis wait) {
  if (!send(std::string(kClientPreface) + settings_frame({}))) return false;
  const auto end = Clock::now() + wait;
  bool theirs = false, ours = false;
  while (!(theirs && ours)) {
    auto f = next(Millis(ms_left(end)));
    if (!f) return false;
    if (f->type != kSettings) continue;
    if (f->flags & kAck) {
      ours = true;
    } else {
      theirs = true;
      for (std::size_t i = 0; i + 6 <= f->payload.size(); i += 6) {
        auto id = static_cast<std::uint16_t>((static_cast<unsigned char>(f->payload[i]) << 8) |
                                             static_cast<unsigned char>(f->payload[i + 1]));
        server_settings[id] = be32(f->payload, i + 2);
      }
      if (!send(frame(kSettings, kAck, 0, {}))) return false;
    }
  }
  return true;
}

std::optional<Frame> RawConnection::next(Millis wait) {
  const auto end = Clock::now() + wait;
  for (;;) {
    if (buf_.size() >= 9) {
      std::size_t len = (static_cast<std::size_t>(static_cast<unsigned char>(buf_[0])) << 16) |
                        (static_cast<std::size_t>(static_cast<unsigned char>(buf_[1])) << 8) |
                        static_cast<unsigned char>(buf_[2]);
      if (buf_.size() >= 9 + len) {
        Frame f;
        f.type = static_cast<std::uint8_t>(buf_[3]);
        f.flags = static_cast<std::uint8_t>(buf_[4]);
        f.stream = be32(buf_, 5) & 0x7fffffff;
        f.payload = buf_.substr(9, len);
        buf_.erase(0, 9 + len);
        return f;
      }
    }
    if (eof_) return std::nullopt;
    char b[16384];
    long n = t_.read_some(b, sizeof b, Millis(ms_left(end)));
    if (n < 0) {
      eof_ = true;
      continue;
    }
    if (n == 0) return std::nullopt;
    buf_.append(b, static_cast<std::size_t>(n));
  }
}

// ---- H2Client ----------------------------------------------------------------------------------------

std::string Stream::header(std::string_view name) const {
  auto v = headers.get(name);
  return v ? std::string(*v) : std::string();
}

H2Client::H2Client(std::uint16_t port, Options o) : o_(std::move(o)) {
  Transport::Options to;
  to.tls = o_.tls;
  to.sni = o_.sni;
  to.timeout = o_.timeout;
  to.preamble = o_.preamble;
  t_ = std::make_unique<Transport>(port, to);
  if (!t_->connected()) {
    error_ = t_->error();
    return;
  }
  if (o_.tls && t_->alpn() != "h2") {
    error_ = "ALPN selected '" + t_->alpn() + "', not h2";
    return;
  }
  session_ = std::make_unique<ph2::Session>(ph2::Mode::Client, o_.settings);
  if (!flush()) {
    error_ = "writing the preface";
    return;
  }
  if (o_.handshake && !wait_for([&] { return settings_seen_; }, o_.timeout)) {
    error_ = "no SETTINGS from the server";
    return;
  }
  connected_ = true;
}

H2Client::~H2Client() = default;

std::int32_t H2Client::start(const Request& r) {
  portico::HeaderMap f;
  f.append(":method", r.method);
  f.append(":scheme", r.scheme);
  f.append(":authority", r.authority);
  f.append(":path", r.path);
  for (const auto& [n, v] : r.headers) f.append(n, v);
  const bool has_body = !r.body.empty() || !r.trailers.empty() || r.keep_open;
  auto id = session_->submit_request(f, !has_body);
  if (!id) return 0;
  Stream& s = streams_[*id];
  s.id = *id;
  if (has_body) {
    s.out = r.body;
    s.out_end = !r.keep_open;
    s.out_pending = !s.out.empty() || s.out_end;
    for (const auto& [n, v] : r.trailers) s.out_trailers.append(n, v);
  }
  return *id;
}

void H2Client::send_body(std::int32_t id, std::string_view bytes, bool end, const Fields& trailers) {
  Stream& s = streams_[id];
  s.out.erase(0, s.out_off);
  s.out_off = 0;
  s.out.append(bytes);
  s.out_end = end;
  for (const auto& [n, v] : trailers) s.out_trailers.append(n, v);
  s.out_pending = true;
}

void H2Client::reset(std::int32_t id, ph2::ErrorCode code) {
  session_->reset(id, code);
  streams_[id].out_pending = false;
  flush();
}

void H2Client::refill() {
  for (auto& [id, s] : streams_) {
    if (!s.out_pending || s.out_failed || s.closed) continue;
    std::string_view rest = std::string_view(s.out).substr(s.out_off);
    const bool with_trailers = s.out_end && !s.out_trailers.empty();
    if (!rest.empty() || (s.out_end && !with_trailers)) {
      auto n = session_->send_data(id, rest, s.out_end && !with_trailers);
      if (!n) {
        s.out_failed = true;
        continue;
      }
      s.out_off += *n;
      if (*n < rest.size()) continue;  // the send buffer is full: more after the next read
    }
    if (with_trailers && !session_->send_trailers(id, s.out_trailers)) s.out_failed = true;
    s.out_pending = false;
  }
}

bool H2Client::flush() {
  if (!session_ || closed_) return false;
  for (int round = 0; round < 1000; ++round) {
    refill();
    std::string_view out = session_->pending_output();
    if (out.empty()) return true;
    if (!t_->write(out)) {
      closed_ = true;
      return false;
    }
    session_->consume_output(out.size());
  }
  return true;
}

bool H2Client::pump(Millis wait) {
  if (closed_) return false;
  if (!flush()) return false;
  char buf[65536];
  long n = t_->read_some(buf, sizeof buf, wait);
  if (n < 0) {
    closed_ = true;
    handle_events();
    return false;
  }
  if (n > 0) {
    auto r = session_->feed(std::string_view(buf, static_cast<std::size_t>(n)));
    handle_events();
    if (!r) {
      error_ = r.error().to_string();
      flush();
      closed_ = true;
      return false;
    }
  }
  flush();
  handle_events();
  return !closed_;
}

bool H2Client::wait_for(const std::function<bool()>& pred, Millis limit) {
  const auto end = Clock::now() + limit;
  while (!pred()) {
    if (closed_) return pred();
    const auto left = ms_left(end);
    if (left <= 0) return false;
    pump(Millis(std::min(left, 100)));
  }
  return true;
}

bool H2Client::ping(Millis limit) {
  const std::size_t before = ping_acks_;
  session_->ping();
  return wait_for([&] { return ping_acks_ > before; }, limit);
}

std::optional<Stream> H2Client::request(const Request& r, Millis limit) {
  auto id = start(r);
  if (id == 0) return std::nullopt;
  if (!wait_done(id, limit)) return std::nullopt;
  return streams_[id];
}

void H2Client::handle_events() {
  while (auto e = session_->poll_event()) {
    const std::int32_t id = e->stream_id;
    switch (e->kind) {
      case ph2::EventKind::Head: {
        Stream& s = streams_[id];
        s.id = id;
        for (auto f : e->fields) {
          if (f.name == ":status")
            s.status = static_cast<unsigned>(std::stoul(std::string(f.value)));
          else if (!f.name.empty() && f.name[0] != ':')
            s.headers.append(f.name, f.value);
        }
        if (e->end_stream) s.ended = true;
        break;
      }
      case ph2::EventKind::Informational: {
        auto st = e->fields.get(":status");
        streams_[id].interim.push_back(st ? static_cast<unsigned>(std::stoul(std::string(*st))) : 0);
        break;
      }
      case ph2::EventKind::Data: {
        Stream& s = streams_[id];
        for (int k = 0; k < 100000; ++k) {
          std::string_view v = session_->received(id);
          if (v.empty()) break;
          s.body.append(v);
          session_->consume(id, v.size());
        }
        break;
      }
      case ph2::EventKind::Trailers: {
        Stream& s = streams_[id];
        s.has_trailers = true;
        for (auto f : e->fields) s.trailers.append(f.name, f.value);
        break;
      }
      case ph2::EventKind::EndStream:
        streams_[id].ended = true;
        break;
      case ph2::EventKind::Reset: {
        Stream& s = streams_[id];
        s.reset = true;
        s.reset_code = e->code;
        break;
      }
      case ph2::EventKind::Closed: {
        Stream& s = streams_[id];
        s.closed = true;
        s.close_code = e->code;
        s.retry_safe = e->retry_safe;
        session_->discard(id);
        break;
      }
      case ph2::EventKind::Goaway:
        goaways_.push_back({e->code, e->last_stream_id});
        break;
      case ph2::EventKind::PingAck:
        ++ping_acks_;
        break;
      case ph2::EventKind::Settings:
        settings_seen_ = true;
        break;
      case ph2::EventKind::Rejected: {
        Stream& s = streams_[id];
        s.rejected = true;
        s.rejected_status = e->code;
        break;
      }
      default:
        break;
    }
  }
}

}  // namespace h2test
