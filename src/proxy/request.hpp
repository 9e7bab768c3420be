// ProxyRequest: one downstream request and the proxy pipeline that serves it, whatever the
// protocol of the client connection.
//
// The pipeline (hooks, upstream selection, retries, the upstream exchange, the concurrent
// request-body pump) lives here once. A downstream protocol derives from it and provides the
// client side: how a response head and body are framed and sent, how the request body is read,
// how a client that goes away is noticed. H1Connection serves one request at a time on its
// connection; H2Stream is one stream of an HTTP/2 connection.
#pragma once

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>

#include <portico/proxy/proxy_http.hpp>
#include <portico/proxy/service.hpp>

#include "core/socket_io.hpp"
#include "core/splice.hpp"
#include "core/watchdog.hpp"
#include "http1/codec.hpp"
#include "proxy/parking.hpp"
#include "server/worker.hpp"
#include "upstream/connection.hpp"

namespace portico::detail {

struct ServiceWorkerState;
class H2UpConn;
class H2Upstream;
struct H2Call;

/// Appends to `iov` the buffers that send `pieces` as a body: raw, or as chunks followed (when
/// `end`) by the last chunk and `trailers`. Chunk-size lines are written to `frame` first, so
/// the buffers point into a string that does not grow afterwards. Returns the body bytes.
std::size_t frame_body(const std::vector<std::string_view>& pieces, bool chunked, bool end,
                       const HeaderMap* trailers, std::string& frame,
                       std::vector<boost::asio::const_buffer>& iov);

/// A view of a vector of buffers as a buffer sequence: Asio's composed writes copy the sequence
/// they are given, and a copy of this costs no allocation (the vector must outlive the write).
struct BufferView {
  explicit BufferView(const std::vector<boost::asio::const_buffer>& v) noexcept
      : b(v.data()), e(v.data() + v.size()) {}
  const boost::asio::const_buffer* begin() const noexcept { return b; }
  const boost::asio::const_buffer* end() const noexcept { return e; }
  const boost::asio::const_buffer* b;
  const boost::asio::const_buffer* e;
};

/// How strictly upstream responses are parsed.
inline http1::ParserLimits upstream_parser_limits(const HttpServerOptions& o) {
  return {o.max_response_header_bytes, o.max_response_header_count, o.max_request_target_bytes};
}

/// Per-service state owned by one worker.
struct ServiceWorkerState final : WorkerState {
  ServiceWorkerState(std::shared_ptr<Pool> p, std::shared_ptr<ClientTls> tls);
  ~ServiceWorkerState() override;
  void drain() noexcept override;
  std::shared_ptr<Pool> pool;
  std::shared_ptr<ClientTls> client_tls;  // the service's, shared by its workers
  std::unique_ptr<H2Upstream> h2;         // multiplexed HTTP/2 upstream sessions
  // Idle keep-alive connections: those about to be parked, and the parked ones (see
  // H1Connection::park). Made on first use, with the service's delays.
  std::unique_ptr<Deferred> park_after;
  std::unique_ptr<ParkingLot> parking;
  Deferred::Entry trim_later;  // closes the release window (park_after's delay after it opened)
  bool releasing = false;      // a release window (core/memory.hpp) is open
  bool drained = false;        // drain() ran: the worker is winding down
  /// park_after, made on first use with `delay` (HttpServerOptions::keepalive_park_after).
  Deferred& parker(const boost::asio::any_io_executor& ex, std::chrono::milliseconds delay);
  /// A connection parked or trimmed: unless one is open, opens a release window, in which what
  /// connections free goes back to the system as it is freed; park_after's delay later, it
  /// closes and returns what the allocator still holds. No-op before parker() is made.
  void trim_soon() noexcept;
  /// Closes the release window, if open.
  void end_release() noexcept;
  // The worker's connections (Worker::active(), parked ones included) at their peak since the
  // last release window a crowd leaving opened.
  std::size_t conns_peak = 0;
  void connection_started(std::size_t active) noexcept {
    if (active > conns_peak) conns_peak = active;
  }
  /// A connection ended, leaving `active` on the worker. Once a crowd has left (kCrowdLeft
  /// fewer than at the peak, and at most seven eighths of it), what they free goes back to the
  /// system as for parking (trim_soon; park_after is made with `delay` if need be, not when
  /// parking is off). Steady traffic, where the count hovers around its peak, keeps the
  /// allocator's own behaviour.
  void connection_ended(std::size_t active, const boost::asio::any_io_executor& ex,
                        std::chrono::milliseconds delay) noexcept;
  static constexpr std::size_t kCrowdLeft = 128;
  /// A listener's options and TLS, copied from the service at the first connection the worker
  /// serves from it: they never change once added, and the service reads them under its mutex.
  struct Listener {
    ListenerOptions options;
    std::shared_ptr<ServerTls> tls;
    bool known = false;
  };
  const Listener& listener(const Service& svc, std::size_t i);
  std::vector<Listener> listeners;
};

class ProxyRequest : public Session {
 public:
  ProxyRequest(HttpProxyService& svc, ServiceWorkerState& state, Worker& w);
  ~ProxyRequest() override;

 protected:
  // -- the client side, per protocol ------------------------------------------------------------
  /// Decides the framing of a response about to be sent and prepares its head; it goes out with
  /// the next ds_send. Records the status and time of a final response.
  virtual void ds_prepare_head(ResponseHeader& h, bool bodyless) = 0;
  /// A prepared head has not been sent yet.
  virtual bool ds_head_pending() const noexcept = 0;
  /// Forgets a prepared head that was not sent (an error is answered instead).
  virtual void ds_drop_head() noexcept = 0;
  /// Sends the pending head (if any) and body pieces; `end` ends the response (with trailers).
  virtual task<Result<void>> ds_send(const std::vector<std::string_view>& pieces, bool end,
                                     const HeaderMap* trailers) = 0;
  /// Starts ds_send without a coroutine frame: true when it completed at once (`r` holds the
  /// outcome); false when it must wait, and then ds_send with the same arguments, awaited next,
  /// finishes it. The default does nothing at once.
  virtual bool ds_send_now(const std::vector<std::string_view>& /*pieces*/, bool /*end*/,
                           const HeaderMap* /*trailers*/, Result<void>& /*r*/) {
    return false;
  }
  /// Relays an interim (1xx) response.
  virtual task<Result<void>> ds_interim(ResponseHeader& h) = 0;
  /// The next part of the request body: `spans` stay valid until the next call; `end` when the
  /// body is complete (the spans may still carry its last bytes).
  virtual task<Result<void>> ds_read_body(std::vector<std::string_view>& spans, bool& end) = 0;
  /// The request's trailer section, once the body is complete (null when none).
  virtual const HeaderMap* ds_request_trailers() noexcept = 0;
  /// Watches for the client going away while the response head is awaited (and the request
  /// body is not being read); a client that leaves sets client_gone_ and cancels the upstream.
  virtual void watch_client() {}
  virtual void unwatch_client() noexcept {}
  /// A CONNECT tunnel (`upgrade` null) or a switched protocol (`upgrade`: the Upgrade value):
  /// sends the client its answer, then relays bytes both ways until one side closes.
  virtual task<Result<void>> ds_tunnel(UpstreamConn& up, const std::string* upgrade) = 0;
  /// Whether the rest of a response body may be spliced onto the client (ds_splice_body): a
  /// plain-text HTTP/1 client, a response framed by its Content-Length. The default: never.
  virtual bool ds_can_splice() const noexcept { return false; }
  /// Sends the pending head, then moves the `n` body bytes still to come of `up`'s response
  /// from its socket to the client's with splice(2) through `pipe` (HttpServerOptions::
  /// splice_min_body_bytes); only after ds_can_splice() said yes.
  virtual task<Result<void>> ds_splice_body(UpstreamConn& up, SplicePipe& pipe, std::uint64_t n);
  /// The whole-request deadline passed: stop the client-side I/O the request waits for.
  virtual void cancel_downstream() noexcept = 0;

  // -- the pipeline -----------------------------------------------------------------------------
  /// Resets the per-request fields; the protocol then fills req_ and the request flags.
  void begin_request();
  /// Runs the request whose head is in req_: context, phases, fail_to_proxy, logging.
  task<void> serve_request();
  task<void> finish_request(const Error* err);
  /// finish_request without a logging hook: nothing to await.
  void end_request(const Error* err) noexcept;
  void build_ctx();
  void drop_ctx() noexcept;
  task<Result<void>> run_phases();
  task<Result<void>> proxy_attempt(UpstreamConnPtr& conn, bool reused, bool& response_started);
  task<Result<void>> attempt_inner(UpstreamConn& up, bool& response_started);
  task<Result<void>> pump_request_body(UpstreamConn& up);
  /// The attempt over a stream of a multiplexed HTTP/2 upstream session (h2_upstream.cpp).
  task<Result<void>> h2_attempt(std::shared_ptr<H2UpConn> up, bool reused, bool& response_started);
  task<Result<void>> h2_exchange(H2UpConn& up, H2Call& call, bool reused, bool& response_started,
                                 bool& reserved);
  task<Result<void>> h2_pump_body(H2UpConn& up, H2Call& call);
  /// Stops the upstream I/O the attempt waits for (client gone, request deadline).
  void cancel_upstream_io() noexcept;
  /// Frames and writes req_chunks_[0, n) upstream; `end` adds the last chunk and trailers.
  task<Result<void>> us_send_body(UpstreamConn& up, std::size_t n, bool end);
  task<Result<void>> us_write(UpstreamConn& up, const std::vector<boost::asio::const_buffer>& b);
  // us_write in parts (after try_write): the wait for the rest, the outcome.
  task<Result<void>> us_write_wait(UpstreamConn& up, const std::vector<boost::asio::const_buffer>& b,
                                   WriteTry t);
  Result<void> us_write_result(const boost::system::error_code& ec, bool timed_out) const;
  /// The request head (us_iov_) after a send batch sent `result` of it (bytes, or -errno): the
  /// rest written the usual way, or the failure.
  task<Result<void>> us_head_settle(UpstreamConn& up, int result);
  /// Reads from the upstream; a zero timeout means the peer's read_timeout.
  task<Result<std::size_t>> us_read(UpstreamConn& up, std::chrono::milliseconds timeout = {});
  // us_read in parts, for callers that await the socket themselves (no coroutine frame): the
  // checks and the timeout before the read, the outcome after it.
  Result<void> us_read_begin(UpstreamConn& up, std::chrono::milliseconds timeout = {});
  Result<std::size_t> us_read_end(UpstreamConn& up, std::size_t n,
                                  const boost::system::error_code& ec);
  /// Runs `t` beside the current coroutine (request body or tunnel direction); see proxy_attempt.
  /// `cancel` runs when `t` fails, to unblock the other direction.
  void start_side(task<Result<void>> t, void (*cancel)(void*), void* arg);
  /// After the attempt's own coroutine returned `r` (or threw `exc`): stops the side still
  /// running and waits for it, rethrows an exception of either, and lets a failed side explain
  /// a failed `r`.
  task<void> end_side(Result<void>& r, std::exception_ptr exc);
  static void expire_request(void* self);
  void log_failure(const Error& e, std::uint16_t status);
  /// Records one request body part read from the client: the replay copy for a retry and the
  /// request body filter; `n` spans of `spans`, then the end when `end`. The filtered chunks are
  /// req_chunks_[0, n + end).
  Result<void> filter_request_body(const std::vector<std::string_view>& spans, bool end);
  /// A retry: what earlier attempts read (and the end, when the body was read in full) goes
  /// through the request body filter again into req_chunks_; returns how many chunks.
  Result<std::size_t> filter_replay();

  HttpProxyService& svc_;
  detail::ProxyHttpErased& app_;
  const HttpServerOptions& opts_;
  const std::uint32_t hooks_;  // the coroutine hooks the proxy overrides
  bool has(HookBit b) const noexcept { return (hooks_ & b) != 0; }
  ServiceWorkerState& state_;
  Worker& worker_;
  std::shared_ptr<ProxyObserver> obs_;  // metrics and access log of the service
  std::shared_ptr<Watchdog> wd_;
  std::vector<BodyChunk> chunks_;
  std::vector<std::string_view> pieces_;

  /// Between requests of an idle connection (see H1Connection::trim): frees what the last
  /// request's heads, body spans and buffers kept for the next one.
  void release_request_memory() noexcept;

  // per request
  void* ctx_ = nullptr;
  std::unique_ptr<std::byte[]> ctx_mem_;
  // A context is constructed in ctx_mem_ and not destroyed yet: finish_request destroys it, or
  // the destructor when the request is torn down midway (shutdown, grace period over).
  bool ctx_live_ = false;
  RequestHeader up_req_;
  ResponseHeader resp_;
  bool req_has_body_ = false;
  bool req_body_done_ = true;
  bool req_body_started_ = false;
  bool head_request_ = false;
  bool connect_ = false;
  bool upgrade_ = false;
  bool tunnel_ = false;
  bool awaiting_head_ = false;
  bool client_gone_ = false;
  UpstreamConn* current_up_ = nullptr;  // the upstream connection of the running attempt
  H2Call* current_call_ = nullptr;      // or its HTTP/2 upstream stream
  // An upstream connection that speaks for this client only (PROXY protocol): kept here for
  // the client's next request instead of in the shared pool.
  UpstreamConnPtr private_up_;

  // the concurrent request-body pump of the current attempt
  // Made at the first pump (constructing a timer looks its service up under a mutex: a cost
  // per connection that most never need).
  std::optional<boost::asio::steady_timer> pump_timer_;
  boost::asio::steady_timer& pump_timer();
  boost::asio::cancellation_signal pump_cancel_;
  bool pump_running_ = false;
  Result<void> pump_result_;
  std::exception_ptr pump_exception_;
  std::string us_frame_;
  std::vector<boost::asio::const_buffer> us_iov_;
  std::vector<BodyChunk> req_chunks_;
  std::vector<std::string_view> us_pieces_;
  std::vector<std::string_view> body_spans_;
  std::string replay_;  // request body bytes read so far, for a retry
  bool replay_truncated_ = false;
};

}  // namespace portico::detail
