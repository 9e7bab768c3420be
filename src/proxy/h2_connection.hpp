// HTTP/2 toward clients: one H2Connection per connection that negotiated h2 (ALPN or h2c prior
// knowledge), one H2Stream per request stream. Each stream runs the same pipeline as an HTTP/1
// request (ProxyRequest); the connection moves bytes between the socket and the h2::Session.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include "tls/tls_stream.hpp"
#include <boost/asio/steady_timer.hpp>

#include "http2/session.hpp"
#include "proxy/request.hpp"

namespace portico::detail {

/// The session settings for `o`.
h2::Settings h2_settings(const Http2Options& o, bool server);

class H2Connection;

/// One request stream of an HTTP/2 client connection.
class H2Stream final : public ProxyRequest {
 public:
  H2Stream(H2Connection& conn, std::int32_t id, std::uint32_t index);
  ~H2Stream() override;

  /// Serves the request whose head is `fields`; `end_stream`: it has no body.
  task<void> run(HeaderMap fields, bool end_stream);

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
  task<Result<void>> ds_interim(ResponseHeader& h) override;
  task<Result<void>> ds_read_body(std::vector<std::string_view>& spans, bool& end) override;
  const HeaderMap* ds_request_trailers() noexcept override;
  task<Result<void>> ds_tunnel(UpstreamConn& up, const std::string* upgrade) override;
  void cancel_downstream() noexcept override;

  /// Ends the request's state: context, gauges, the connection's stream table.
  void end() noexcept;
  /// Makes a released stream ready to serve stream `id`, keeping its buffers' capacity.
  void reuse(std::int32_t id, std::uint32_t index) noexcept;

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
  bool released_ = false;      // H2Connection::release_stream ended it (kept for reuse)
  std::size_t to_consume_ = 0; // request body bytes handed out by the last ds_read_body
  boost::asio::steady_timer rd_sig_;  // request body or its end arrived
  boost::asio::steady_timer wr_sig_;  // send buffer has room
};

/// Returns a finished stream to its connection for reuse (or deletes it when the connection is
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
  /// bytes already read from it (the h2c preface).
  H2Connection(HttpProxyService& svc, ServiceWorkerState& state, Worker& w, Session& owner,
               tcp_socket& sock, tls_stream* tls, Watchdog& wd, std::string_view initial);
  ~H2Connection();

  /// Serves the connection until the client leaves, an error or a drain ends it.
  task<void> run();
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
  void start_stream(std::int32_t id, HeaderMap fields, bool end_stream);
  void stream_done(std::int32_t id);
  /// A stream's coroutine is over: end it and keep it for the next stream (a few are kept).
  void release_stream(H2Stream* s) noexcept;
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
  h2::Session session_;
  std::string initial_;
  std::unordered_map<std::int32_t, H2Stream*> streams_;  // each owned by its coroutine
  // Finished streams kept for reuse: their vectors, header maps and context memory are
  // allocated already.
  std::vector<std::unique_ptr<H2Stream>> spare_;
  static constexpr std::size_t kSpareStreams = 16;
  std::uint32_t streams_started_ = 0;
  boost::asio::steady_timer write_sig_;
  boost::asio::steady_timer done_sig_;  // the writer or the last stream ended
  bool writer_running_ = false;
  bool write_failed_ = false;
  bool reading_done_ = false;
  bool draining_ = false;
  bool aborted_ = false;
};

}  // namespace portico::detail
