// One downstream HTTP/1.1 connection: the Session the hooks see and the proxy pipeline.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>

#include <portico/proxy/proxy_http.hpp>
#include <portico/proxy/service.hpp>

#include "core/watchdog.hpp"
#include "http1/codec.hpp"
#include "server/worker.hpp"
#include "tls/tls.hpp"
#include "upstream/connection.hpp"

namespace portico::detail {

struct ServiceWorkerState;

/// Appends to `iov` the buffers that send `pieces` as a body: raw, or as chunks followed (when
/// `end`) by the last chunk and `trailers`. Chunk-size lines are written to `frame` first, so
/// the buffers point into a string that does not grow afterwards. Returns the body bytes.
std::size_t frame_body(const std::vector<std::string_view>& pieces, bool chunked, bool end,
                       const HeaderMap* trailers, std::string& frame,
                       std::vector<boost::asio::const_buffer>& iov);

/// How the body of the response to the client is delimited.
enum class DsFraming : std::uint8_t { None, Length, Chunked, Close };

class H1Connection final : public Session, public Drainable {
 public:
  /// `tls`: the listener's TLS, or null for plain text.
  H1Connection(HttpProxyService& svc, ServiceWorkerState& state, Worker& w, Accepted& a,
               std::shared_ptr<ServerTls> tls = nullptr);
  ~H1Connection() override;

  /// Serves requests until the client leaves, an error closes the connection, or a drain.
  task<void> run();

  task<Result<void>> write_response_header(ResponseHeader resp, bool end_of_stream) override;
  task<Result<void>> write_response_body(std::string_view data, bool end_of_stream) override;

  void drain() noexcept override;
  void abort() noexcept override;

 private:
  // -- downstream I/O ---------------------------------------------------------------------------
  /// The TLS handshake of a TLS listener (certificate hook, SNI, ALPN); false: close.
  task<bool> tls_handshake();
  /// Reads the PROXY protocol header of a listener that expects one; false: close.
  task<bool> read_proxy_header();
  /// Waits until more than `seen` bytes can be peeked (without consuming them) and peeks up to
  /// `cap`: the count, 0 when the client closed, -1 on an error or the DsRead deadline.
  task<ssize_t> peek_more(unsigned char* buf, std::size_t cap, ssize_t seen);
  task<Result<std::size_t>> ds_read(std::chrono::milliseconds timeout);
  task<Result<void>> ds_write(const std::vector<boost::asio::const_buffer>& bufs);
  /// Reads and parses until a request header is complete. An empty error means a clean close.
  task<Result<bool>> read_request_header();
  /// Decides the framing of a response about to be sent and serialises its head into wbuf_.
  void prepare_response_head(ResponseHeader& h, bool bodyless);
  /// Sends the pending head (if any) and body pieces; `end` terminates the body.
  task<Result<void>> ds_send(const std::vector<std::string_view>& pieces, bool end,
                             const HeaderMap* trailers);

  // -- request processing ------------------------------------------------------------------------
  task<void> handle_request();
  task<void> handle_parse_error();
  task<Result<void>> run_phases();
  task<Result<void>> proxy_attempt(UpstreamConnPtr& conn, bool reused, bool& response_started);
  task<Result<void>> attempt_inner(UpstreamConn& up, bool& response_started);
  task<Result<void>> pump_request_body(UpstreamConn& up);
  /// Frames and writes req_chunks_[0, n) upstream; `end` adds the last chunk and trailers.
  task<Result<void>> us_send_body(UpstreamConn& up, std::size_t n, bool end);
  task<Result<void>> us_write(UpstreamConn& up, const std::vector<boost::asio::const_buffer>& b);
  /// Reads from the upstream; a zero timeout means the peer's read_timeout.
  task<Result<std::size_t>> us_read(UpstreamConn& up, std::chrono::milliseconds timeout = {});
  /// Runs `t` beside the current coroutine (request body or tunnel direction); see proxy_attempt.
  void start_side(task<Result<void>> t, UpstreamConn& up);
  /// After a 101 or an accepted CONNECT: bytes both ways until one side closes.
  task<Result<void>> run_tunnel(UpstreamConn& up);
  task<Result<void>> tunnel_to_upstream(UpstreamConn& up);
  task<void> finish_request(const Error* err);
  static void expire_request(void* self);
  /// Reads and discards what the client still sends, so closing does not reset the response.
  task<void> linger();
  void log_failure(const Error& e, std::uint16_t status);

  HttpProxyService& svc_;
  detail::ProxyHttpErased& app_;
  const HttpServerOptions& opts_;
  const std::uint32_t hooks_;  // the coroutine hooks the proxy overrides
  bool has(HookBit b) const noexcept { return (hooks_ & b) != 0; }
  ServiceWorkerState& state_;
  Worker& worker_;
  std::shared_ptr<ProxyObserver> obs_;  // metrics and access log of the service
  boost::asio::ip::tcp::socket sock_;
  std::shared_ptr<Watchdog> wd_;
  http1::Parser parser_;

  /// The read buffer: allocated on the first read, not zeroed (bytes are written before read).
  class ReadBuffer {
   public:
    bool empty() const noexcept { return size_ == 0; }
    std::size_t size() const noexcept { return size_; }
    char* data() noexcept { return p_.get(); }
    /// Allocates `n` bytes; the previous contents are not kept.
    void resize(std::size_t n) {
      p_.reset(new char[n]);
      size_ = n;
    }

   private:
    std::unique_ptr<char[]> p_;
    std::size_t size_ = 0;
  };
  ReadBuffer rbuf_;
  std::size_t rbegin_ = 0;
  std::size_t rend_ = 0;
  std::string wbuf_;   // a serialised response head not yet sent
  std::string frame_;  // chunk-size lines of the write being built
  std::vector<boost::asio::const_buffer> iov_;
  std::vector<BodyChunk> chunks_;
  std::vector<std::string_view> pieces_;

  // per request
  void* ctx_ = nullptr;
  std::unique_ptr<std::byte[]> ctx_mem_;
  // A context is constructed in ctx_mem_ and not destroyed yet: finish_request destroys it, or
  // the destructor when the connection is torn down mid-request (shutdown, grace period over).
  bool ctx_live_ = false;
  void build_ctx();
  void drop_ctx() noexcept;
  RequestHeader up_req_;
  ResponseHeader resp_;
  DsFraming ds_framing_ = DsFraming::None;
  bool req_has_body_ = false;
  bool req_body_done_ = true;
  bool req_body_started_ = false;
  bool head_request_ = false;
  bool connect_ = false;
  bool upgrade_ = false;
  bool tunnel_ = false;
  UpstreamConn* current_up_ = nullptr;  // the upstream connection of the running attempt
  // An upstream connection that speaks for this client only (PROXY protocol): kept here for
  // the client's next request instead of in the shared pool.
  UpstreamConnPtr private_up_;
  // TLS toward the client: the listener, the certificate generation the handshake used, and
  // the stream over sock_ (null on plain listeners).
  std::shared_ptr<ServerTls> server_tls_;
  std::shared_ptr<const ServerCtxSet> tls_set_;
  std::unique_ptr<boost::asio::ssl::stream<boost::asio::ip::tcp::socket&>> tls_;
  // The client is watched for a close while the response head is awaited.
  struct ClientWatch;
  std::shared_ptr<ClientWatch> client_watch_;
  bool awaiting_head_ = false;
  bool client_gone_ = false;
  void arm_client_watch();
  void disarm_client_watch() noexcept;
  bool idle_ = true;
  bool closed_ = false;
  bool drain_requested_ = false;
  bool expect_proxy_header_ = false;
  /// How long a connection that has not sent its first request yet may still send it once the
  /// server drains.
  static constexpr std::chrono::milliseconds kFirstRequestGrace{1000};

  // the concurrent request-body pump of the current attempt
  boost::asio::steady_timer pump_timer_;
  boost::asio::cancellation_signal pump_cancel_;
  bool pump_running_ = false;
  Result<void> pump_result_;
  std::exception_ptr pump_exception_;
  std::string us_frame_;
  std::vector<boost::asio::const_buffer> us_iov_;
  std::vector<BodyChunk> req_chunks_;
  std::vector<std::string_view> us_pieces_;
  std::string replay_;  // request body bytes read so far, for a retry
  bool replay_truncated_ = false;
};

/// Per-service state owned by one worker.
/// How strictly upstream responses are parsed.
inline http1::ParserLimits upstream_parser_limits(const HttpServerOptions& o) {
  return {o.max_response_header_bytes, o.max_response_header_count, o.max_request_target_bytes};
}

struct ServiceWorkerState final : WorkerState {
  ServiceWorkerState(std::shared_ptr<Pool> p, std::shared_ptr<ClientTls> tls)
      : pool(std::move(p)), client_tls(std::move(tls)) {}
  void drain() noexcept override { pool->drain(); }
  std::shared_ptr<Pool> pool;
  std::shared_ptr<ClientTls> client_tls;  // the service's, shared by its workers
};

}  // namespace portico::detail
