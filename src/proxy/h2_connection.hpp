// HTTP/2 toward clients: one H2Connection per connection that negotiated h2 (ALPN or h2c prior
// knowledge), one H2Stream per request stream. Each stream runs the same pipeline as an HTTP/1
// request (ProxyRequest); the connection moves bytes between the socket and the h2::Session.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include "tls/tls_stream.hpp"
#include <boost/asio/steady_timer.hpp>

#include "core/id_map.hpp"
#include "core/signal.hpp"
#include "http2/session.hpp"
#include "proxy/request.hpp"

namespace portico::detail {

/// The session settings for `o`.
h2::Settings h2_settings(const Http2Options& o, bool server);

class H2Connection;
struct H2StreamRelease;

/// One request stream of an HTTP/2 client connection.
class H2Stream final : public ProxyRequest {
 public:
  H2Stream(H2Connection& conn, std::int32_t id, std::uint32_t index);
  ~H2Stream() override;

  /// Makes the request whose head is in fields_ (`end_stream_`: it has no body) ready to be
  /// served; false when there is nothing to serve (reset at once, or malformed: answered).
  bool prepare();
  /// After serve_request: resets what the response left open, frees the rest of the body.
  void conclude();

  task<Result<void>> write_response_header(ResponseHeader resp, bool end_of_stream) override;
  task<Result<void>> write_response_body(std::string_view data, bool end_of_stream) override;

 private:
  friend class H2Connection;
  friend struct H2StreamRelease;

  // -- ProxyRequest -----------------------------------------------------------------------------
  void ds_prepare_head(ResponseHeader& h, bool bodyless) override;
  bool ds_head_pending() const noexcept override { return head_pending_; }
  void ds_drop_head() noexcept override;
  task<Result<void>> ds_send(const std::vector<std::string_view>& pieces, bool end,
                             const HeaderMap* trailers) override;
  bool ds_send_now(const std::vector<std::string_view>& pieces, bool end,
                   const HeaderMap* trailers, Result<void>& r) override;
  /// Queues what the stream's send buffer takes, from send_piece_/send_off_ on: true when the
  /// send is over (`out` holds the outcome), false when the buffer is full.
  bool send_some(const std::vector<std::string_view>& pieces, bool end, const HeaderMap* trailers,
                 Result<void>& out);
  task<Result<void>> ds_interim(ResponseHeader& h) override;
  task<Result<void>> ds_read_body(std::vector<std::string_view>& spans, bool& end) override;
  const HeaderMap* ds_request_trailers() noexcept override;
  task<Result<void>> ds_tunnel(UpstreamConn& up, const std::string* upgrade) override;
  void cancel_downstream() noexcept override;

  /// Ends the request's state: context, gauges, the connection's stream table.
  void end() noexcept;
  /// Makes a released stream ready to serve stream `id`, keeping its buffers' capacity.
  void reuse(std::int32_t id, std::uint32_t index) noexcept;
  /// The coroutine of a stream: serves it, then, kept by the connection, waits for the next
  /// stream it is given (no co_spawn and no new coroutine per stream). Owns `s`.
  static task<void> serve(std::unique_ptr<H2Stream, H2StreamRelease> s);

  // -- events from the connection ---------------------------------------------------------------
  void on_data() noexcept;
  void on_trailers(const HeaderMap& fields);
  void on_end() noexcept;
  void on_writable() noexcept;
  /// The client reset the stream, or the connection is going away.
  void on_gone() noexcept;
  void on_closed() noexcept;

  /// Waits on `t` until notified, `timeout` passes (false) or the request deadline expired.
  task<bool> wait(boost::asio::steady_timer& t, std::chrono::milliseconds timeout);
  Error gone_error() const;

  H2Connection& conn_;
  std::int32_t id_;
  HeaderMap fields_;          // the request head, until prepare() translates it
  bool end_stream_ = false;   // the head ended the stream (no body)
  bool assigned_ = false;     // a parked stream was given a new stream to serve
  HeaderMap trailers_out_;    // response trailers being sent
  HeaderMap req_trailers_;    // the request's trailer section
  bool head_pending_ = false;
  bool head_bodyless_ = false;
  bool head_error_ = false;    // the prepared head cannot be sent (a 101)
  bool local_done_ = false;    // our END_STREAM was queued
  bool remote_end_ = false;    // the client's END_STREAM arrived
  bool gone_ = false;          // reset by the client, or the connection ended
  bool closed_ = false;        // the session closed the stream
  bool expired_ = false;       // the request deadline passed
  bool detached_ = false;      // the connection is gone (only when a worker is torn down)
  bool released_ = false;      // H2Connection::park ended it (kept for reuse)
  std::size_t to_consume_ = 0; // request body bytes handed out by the last ds_read_body
  // Where a send that waits for room goes on: the piece, the bytes of it already queued.
  std::size_t send_piece_ = 0;
  std::size_t send_off_ = 0;
  bool send_started_ = false;  // ds_send_now started the send; ds_send finishes it
  boost::asio::steady_timer rd_sig_;  // request body or its end arrived
  boost::asio::steady_timer wr_sig_;  // send buffer has room
  Signal start_sig_;                  // parked: a new stream was assigned (or none will be)
};

/// Deletes a stream whose coroutine ended, telling its connection (unless the connection is
/// gone); the coroutine serving the stream owns it through this.
struct H2StreamRelease {
  void operator()(H2Stream* s) const noexcept;
};
using H2StreamPtr = std::unique_ptr<H2Stream, H2StreamRelease>;

class H2Connection {
 public:
  using tcp_socket = boost::asio::ip::tcp::socket;
  using tls_stream = TlsStream<tcp_socket>;

  /// `owner`: the client connection (addresses, TLS), whose transport this serves; `initial`:
  /// bytes already read from it (the h2c preface). `session`: the session of a parked
  /// connection to go on with (null: a new connection). `parkable`: once idle for
  /// keepalive_park_after, the connection may end its run() to be parked (see park_session()).
  H2Connection(HttpProxyService& svc, ServiceWorkerState& state, Worker& w, Session& owner,
               tcp_socket& sock, tls_stream* tls, Watchdog& wd, std::string_view initial,
               std::unique_ptr<h2::Session> session = nullptr, bool parkable = false);
  ~H2Connection();

  /// Serves the connection until the client leaves, an error or a drain ends it, or, when it
  /// can be parked, it has been idle for keepalive_park_after.
  task<void> run();
  /// After run(): the session of a connection that ended to be parked (idle, no stream,
  /// nothing to send, nothing buffered), trimmed; null when the connection is over. The
  /// connection then stays counted as an HTTP/2 one until the session is freed (whoever frees
  /// it counts that).
  std::unique_ptr<h2::Session> park_session() noexcept;
  /// Graceful: GOAWAY, the streams in flight complete, then the connection closes.
  void drain() noexcept;
  /// Now: every stream is cancelled and the connection closes.
  void abort() noexcept;

 private:
  friend class H2Stream;

  /// Wakes the writer: the session has output.
  void kick() noexcept;
  task<void> writer();
  /// Handles every queued session event.
  void dispatch();
  /// Starts serving stream `id`, whose head is `fields`. `fields` gets the stream's previous
  /// (used) field list in exchange, for the session to reuse.
  void start_stream(std::int32_t id, HeaderMap& fields, bool end_stream);
  void stream_done(std::int32_t id);
  /// A stream is over: ends it; true when it is kept (parked) for the next stream.
  bool park(H2Stream& s) noexcept;
  /// The coroutine of `s` ended (the stream is about to be deleted).
  void stream_gone(H2Stream* s) noexcept;
  /// Wakes the parked streams so their coroutines end.
  void unpark_all() noexcept;
  /// Idle from now on (no stream): request_park() once keepalive_park_after has passed.
  void schedule_park();
  /// The connection has been idle for keepalive_park_after: ends the read, for run() to free
  /// what serving streams took.
  void request_park() noexcept;
  /// Whether the idle connection can end to be parked now (else it is trimmed).
  bool can_leave() const noexcept;
  friend struct H2StreamRelease;
  /// Whether the connection has nothing left to do.
  bool finished() const noexcept;

  HttpProxyService& svc_;
  ServiceWorkerState& state_;
  Worker& worker_;
  Session& owner_;
  const HttpServerOptions& opts_;
  tcp_socket& sock_;
  tls_stream* tls_;
  Watchdog& wd_;
  std::shared_ptr<ProxyObserver> obs_;
  const bool adopted_;  // went on with a parked connection's session
  std::unique_ptr<h2::Session> own_session_;
  h2::Session& session_;  // *own_session_
  std::string initial_;
  IdMap<H2Stream*> streams_;  // each owned by its coroutine
  // Finished streams kept for reuse, each with its coroutine waiting for the next stream: their
  // vectors, header maps and context memory are allocated already. Owned by their coroutines.
  std::vector<H2Stream*> spare_;
  static constexpr std::size_t kSpareStreams = 16;
  // Every stream whose coroutine is alive (running, parked, or between the two): each must be
  // told when the connection goes first.
  std::vector<H2Stream*> live_;
  std::uint32_t streams_started_ = 0;
  Signal write_sig_;                    // kick(): the writer has something to send
  boost::asio::steady_timer done_sig_;  // the writer or the last stream ended
  Deferred::Entry park_later_;          // request_park(), when an idle wait lasts
  bool park_requested_ = false;
  bool writer_running_ = false;
  bool write_failed_ = false;
  bool reading_done_ = false;
  bool draining_ = false;
  bool aborted_ = false;
  bool parkable_ = false;
  bool leaving_ = false;  // run() ended for the connection to be parked
};

}  // namespace portico::detail
