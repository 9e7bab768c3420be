// A blocking HTTP/2 test client on portico's own h2::Session (client mode), over cleartext
// (prior knowledge, h2c) or TLS (ALPN "h2"), plus raw frame helpers for what a well-behaved
// session refuses to send (upper-case names, streams past the peer's limit).
//
// Everything is bounded: every read waits at most the given time, and `wait_for` gives up at its
// deadline; nothing sleeps. One thread drives a client; streams run concurrently on it, their
// request bodies queued and sent as the peer's windows allow while responses are read.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <portico/http/header_map.hpp>

#include "http2/frame.hpp"
#include "http2/session.hpp"

namespace h2test {

using Fields = std::vector<std::pair<std::string, std::string>>;
using Millis = std::chrono::milliseconds;

/// A blocking byte stream to 127.0.0.1:`port`: plain TCP, or TLS through OpenSSL.
class Transport {
 public:
  struct Options {
    bool tls = false;
    std::vector<std::string> alpn = {"h2"};  ///< TLS only
    std::string sni;                         ///< TLS only; empty: none
    Millis timeout{10000};                   ///< bounds every blocking write and read
    std::string preamble;                    ///< sent first, in clear (a PROXY protocol header)
  };
  Transport(std::uint16_t port, const Options& o);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  bool connected() const noexcept { return fd_ >= 0 && error_.empty(); }
  const std::string& error() const noexcept { return error_; }
  /// The protocol ALPN selected (TLS), else empty.
  const std::string& alpn() const noexcept { return alpn_; }
  int fd() const noexcept { return fd_; }

  /// Writes every byte; false on error or timeout.
  bool write(std::string_view bytes);
  /// Waits at most `wait` for bytes: > 0 bytes read, 0 nothing yet, -1 EOF or error.
  long read_some(char* buf, std::size_t n, Millis wait);

 private:
  int fd_ = -1;
  void* ctx_ = nullptr;  // SSL_CTX*
  void* ssl_ = nullptr;  // SSL*
  std::string error_;
  std::string alpn_;
};

// ---- raw frames ---------------------------------------------------------------------------------

using namespace portico::h2::frame;  // frame types, flags, kClientPreface

struct Frame {
  std::uint8_t type = 0;
  std::uint8_t flags = 0;
  std::uint32_t stream = 0;
  std::string payload;
  /// RST_STREAM and GOAWAY: the error code; GOAWAY: the last stream id in `last_stream`.
  std::uint32_t error_code() const;
  std::uint32_t last_stream() const;
};

/// A serialised frame.
std::string frame(std::uint8_t type, std::uint8_t flags, std::uint32_t stream,
                  std::string_view payload);
/// A SETTINGS frame with (id, value) pairs.
std::string settings_frame(const std::vector<std::pair<std::uint16_t, std::uint32_t>>& s);
/// A header block of literal fields without indexing (RFC 7541 §6.2.2), names sent as given: it
/// leaves the HPACK dynamic tables alone, so raw blocks can be mixed freely.
std::string literal_block(const Fields& fields);

/// A connection written and read frame by frame, with no session behind it.
class RawConnection {
 public:
  RawConnection(std::uint16_t port, const Transport::Options& o);
  bool connected() const noexcept { return t_.connected(); }
  Transport& transport() noexcept { return t_; }
  bool send(std::string_view bytes) { return t_.write(bytes); }
  /// The preface, an empty SETTINGS, then reads until the server's SETTINGS (ACKed) and the ACK
  /// of ours arrived. False when the server closed or `wait` passed.
  bool handshake(Millis wait = Millis(10000));
  /// The next frame, or nothing after `wait` or at EOF (`eof()` tells).
  std::optional<Frame> next(Millis wait = Millis(10000));
  bool eof() const noexcept { return eof_; }
  /// The server's SETTINGS, as received during the handshake.
  std::map<std::uint16_t, std::uint32_t> server_settings;

 private:
  Transport t_;
  std::string buf_;
  bool eof_ = false;
};

// ---- the session client --------------------------------------------------------------------------

/// A request to send. The pseudo-header fields come from the first four members; `headers`
/// follow (lowercase names: the session lowercases what it sends anyway).
struct Request {
  std::string method = "GET";
  std::string path = "/";
  std::string authority = "h2.test";
  std::string scheme = "https";
  Fields headers;
  std::string body;
  Fields trailers;
  /// Leave the request side open after the body (the stream stays half-open until end_request).
  bool keep_open = false;
};

/// What the client saw of one stream.
struct Stream {
  std::int32_t id = 0;
  unsigned status = 0;                ///< the final :status, 0 before it
  std::vector<unsigned> interim;      ///< 1xx statuses, in order
  portico::HeaderMap headers;         ///< response fields, pseudo-header fields removed
  std::string body;
  portico::HeaderMap trailers;
  bool has_trailers = false;
  bool ended = false;                 ///< the server's END_STREAM arrived
  bool reset = false;                 ///< the server sent RST_STREAM ...
  std::uint32_t reset_code = 0;       ///< ... with this code
  bool closed = false;                ///< the session closed the stream
  std::uint32_t close_code = 0;
  bool retry_safe = false;
  bool rejected = false;              ///< a response header list over our limit
  std::uint32_t rejected_status = 0;
  /// Complete: closed, or ended without a reset.
  bool done() const noexcept { return closed || (ended && !reset); }
  /// The first value of a response field, or empty.
  std::string header(std::string_view name) const;

  // outbound body, queued
  std::string out;
  std::size_t out_off = 0;
  bool out_pending = false;   ///< `out` still has bytes (or the end) to hand to the session
  bool out_end = false;       ///< end the request after `out`
  portico::HeaderMap out_trailers;
  bool out_failed = false;
};

class H2Client {
 public:
  struct Options {
    bool tls = false;
    std::string sni = "h2.test";
    Millis timeout{10000};
    portico::h2::Settings settings{};
    /// The constructor waits for the server's SETTINGS.
    bool handshake = true;
    /// Sent first on the connection, before TLS or the preface (a PROXY protocol header).
    std::string preamble;
  };
  H2Client(std::uint16_t port, Options o);
  explicit H2Client(std::uint16_t port) : H2Client(port, Options{}) {}
  ~H2Client();
  H2Client(const H2Client&) = delete;
  H2Client& operator=(const H2Client&) = delete;

  /// The transport is up, ALPN chose h2 (TLS) and, with `handshake`, the server's SETTINGS came.
  bool connected() const noexcept { return connected_; }
  const std::string& error() const noexcept { return error_; }
  portico::h2::Session& session() noexcept { return *session_; }
  Transport& transport() noexcept { return *t_; }

  /// Opens a stream for `r` and queues its body; returns the stream id, or 0 when the session
  /// refused. Nothing is written until the next `flush`/`pump`.
  std::int32_t start(const Request& r);
  /// Queues more request body on an open stream (`end`: then END_STREAM, or trailers).
  void send_body(std::int32_t id, std::string_view bytes, bool end, const Fields& trailers = {});
  /// RST_STREAM now.
  void reset(std::int32_t id, portico::h2::ErrorCode code = portico::h2::ErrorCode::Cancel);

  /// Hands queued body bytes to the session and writes everything it has; false on a write error.
  bool flush();
  /// One round: flush, read for at most `wait`, feed, handle events. False once the connection
  /// is over (EOF, an error, or the session finished).
  bool pump(Millis wait);
  /// Pumps until `pred()` holds (true) or `limit` passes or the connection ends (false, after a
  /// last look at `pred`).
  bool wait_for(const std::function<bool()>& pred, Millis limit = Millis(10000));
  bool wait_done(std::int32_t id, Millis limit = Millis(10000)) {
    return wait_for([&] { return stream(id).done(); }, limit);
  }
  /// Pumps until the server closes the connection.
  bool wait_closed(Millis limit = Millis(10000)) {
    return wait_for([&] { return closed_; }, limit);
  }

  /// Sends PING and pumps until its ACK (true): the server has processed everything sent before.
  bool ping(Millis limit = Millis(10000));

  /// start + wait_done; the stream as it ended (nothing when it did not within the timeout).
  std::optional<Stream> request(const Request& r, Millis limit = Millis(10000));

  Stream& stream(std::int32_t id) { return streams_[id]; }
  bool closed() const noexcept { return closed_; }
  struct Goaway {
    std::uint32_t code = 0;
    std::int32_t last_stream_id = 0;
  };
  /// Every GOAWAY received, in order.
  const std::vector<Goaway>& goaways() const noexcept { return goaways_; }
  bool got_settings() const noexcept { return settings_seen_; }

 private:
  void handle_events();
  void refill();

  Options o_;
  std::unique_ptr<Transport> t_;
  std::unique_ptr<portico::h2::Session> session_;
  std::map<std::int32_t, Stream> streams_;
  std::vector<Goaway> goaways_;
  std::string error_;
  bool connected_ = false;
  bool closed_ = false;
  bool settings_seen_ = false;
  std::size_t ping_acks_ = 0;
};

}  // namespace h2test
