// One downstream HTTP/1.1 connection: the Session the hooks see and the proxy pipeline.
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>

#include "core/raw_fd.hpp"
#include "core/send_batch.hpp"
#include "core/signal.hpp"
#include "proxy/request.hpp"
#include "tls/tls.hpp"
#include "tls/tls_stream.hpp"

namespace portico::h2 {
class Session;
}

namespace portico::detail {

/// How the body of the response to the client is delimited.
enum class DsFraming : std::uint8_t { None, Length, Chunked, Close };

class H2Connection;

class H1Connection final : public ProxyRequest, public Drainable {
 public:
  /// `tls`: the listener's TLS, or null for plain text.
  H1Connection(HttpProxyService& svc, ServiceWorkerState& state, Worker& w, Accepted& a,
               std::shared_ptr<ServerTls> tls = nullptr);
  ~H1Connection() override;

  /// Serves requests until the client leaves, an error closes the connection, or a drain. A
  /// client that negotiates HTTP/2 (ALPN h2, or the h2c preface where allowed) is handed to an
  /// H2Connection over the same transport.
  task<void> run();

  task<Result<void>> write_response_header(ResponseHeader resp, bool end_of_stream) override;
  task<Result<void>> write_response_body(std::string_view data, bool end_of_stream) override;

  void drain() noexcept override;
  void abort() noexcept override;

 private:
  // -- ProxyRequest -----------------------------------------------------------------------------
  void ds_prepare_head(ResponseHeader& h, bool bodyless) override;
  bool ds_head_pending() const noexcept override { return !wbuf_.empty(); }
  void ds_drop_head() noexcept override { wbuf_.clear(); }
  task<Result<void>> ds_send(const std::vector<std::string_view>& pieces, bool end,
                             const HeaderMap* trailers) override;
  bool ds_send_now(const std::vector<std::string_view>& pieces, bool end,
                   const HeaderMap* trailers, Result<void>& r) override;
  /// The end of a send: the counters, the head buffer.
  Result<void> ds_sent(Result<void> r);
  task<Result<void>> ds_interim(ResponseHeader& h) override;
  task<Result<void>> ds_read_body(std::vector<std::string_view>& spans, bool& end) override;
  const HeaderMap* ds_request_trailers() noexcept override;
  void watch_client() override;
  void unwatch_client() noexcept override;
  task<Result<void>> ds_tunnel(UpstreamConn& up, const std::string* upgrade) override;
  void cancel_downstream() noexcept override;
  bool ds_can_splice() const noexcept override { return !tls_ && ds_framing_ == DsFraming::Length; }
  task<Result<void>> ds_splice_body(UpstreamConn& up, SplicePipe& pipe, std::uint64_t n) override;

  // -- downstream I/O ---------------------------------------------------------------------------
  /// The TLS handshake of a TLS listener (certificate hook, SNI, ALPN); false: close.
  task<bool> tls_handshake();
  /// Reads the PROXY protocol header of a listener that expects one; false: close.
  task<bool> read_proxy_header();
  /// On a plain listener with h2c: whether the client starts with the HTTP/2 preface.
  task<bool> sniff_h2c_preface();
  /// Serves the connection as HTTP/2 until it ends.
  task<void> run_h2();
  /// Waits until more than `seen` bytes can be peeked (without consuming them) and peeks up to
  /// `cap`: the count, 0 when the client closed, -1 on an error or the DsRead deadline.
  task<ssize_t> peek_more(unsigned char* buf, std::size_t cap, ssize_t seen);
  /// Reads what the client sends, within `timeout` from `now`.
  task<Result<std::size_t>> ds_read(std::chrono::milliseconds timeout,
                                    Watchdog::clock::time_point now = Watchdog::clock::now());
  task<Result<void>> ds_write(const std::vector<boost::asio::const_buffer>& bufs);
  // ds_write in parts (after try_write): the wait for the rest, the outcome.
  task<Result<void>> ds_write_wait(const std::vector<boost::asio::const_buffer>& bufs, WriteTry t);
  Result<void> ds_write_result(const boost::system::error_code& ec, bool timed_out) const;
  /// Reads and parses until a request header is complete. An empty error means a clean close.
  task<Result<bool>> read_request_header();

  // -- request processing ------------------------------------------------------------------------
  /// Takes the parsed request head and sets the request's state; false when the (bodyless)
  /// message does not complete, to be answered as a parse error.
  bool prepare_request();
  task<void> handle_parse_error();
  /// After a 101 or an accepted CONNECT: bytes both ways until one side closes.
  task<Result<void>> run_tunnel(UpstreamConn& up);
  task<Result<void>> tunnel_to_upstream(UpstreamConn& up);
  /// Reads and discards what the client still sends, so closing does not reset the response.
  task<void> linger();

  boost::asio::ip::tcp::socket sock_;
  /// The client's descriptor while it is not in sock_: a plain-text connection accepted by
  /// accept_raw is given to Asio (registered with epoll) only when it first has to wait, so one
  /// answered and closed without waiting never is.
  RawFd raw_;
  /// The client's descriptor, in sock_ or not.
  int fd() noexcept { return raw_ ? raw_.get() : sock_.native_handle(); }
  /// Gives raw_ to sock_ (see adopt_descriptor; `drained`: a read just found nothing). False:
  /// the registration failed (logged), the connection is closed.
  bool attach(bool drained = false) noexcept;
  /// shutdown(2) and close of the client's descriptor, in sock_ or not.
  void shutdown_client(boost::asio::socket_base::shutdown_type how) noexcept;
  void close_client() noexcept;
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
  // A send ds_send_now started and ds_send finishes: its first try, its body bytes.
  WriteTry send_try_;
  std::size_t send_body_ = 0;
  bool send_started_ = false;
  bool send_last_ = false;  // the send ends the response and the connection (see ds_send_now)
  // The last send of a response, queued in the worker's batch (batch_response_sends): its
  // item and gather list (over TLS the stream holds the records), and whether ds_send waits
  // for the flush.
  SendBatch::Item batch_item_;
  std::array<iovec, 8> batch_iov_{};
  bool send_batched_ = false;
  Signal batch_done_;
  bool batch_send(SendBatch& batch);
  bool batch_settled(Result<void>& r);  // after the flush: true when the send is over (in r)
  DsFraming ds_framing_ = DsFraming::None;

  // TLS toward the client: the listener, the certificate generation the handshake used, and
  // the stream over sock_ (null on plain listeners).
  std::shared_ptr<ServerTls> server_tls_;
  std::shared_ptr<const ServerCtxSet> tls_set_;
  std::unique_ptr<TlsStream<boost::asio::ip::tcp::socket>> tls_;
  // The client is watched for a close while the response head is awaited.
  struct ClientWatch;
  std::shared_ptr<ClientWatch> client_watch_;
  Deferred::Entry watch_later_;  // the client watch, armed when the wait for the upstream lasts
  void arm_client_watch();
  // Parking (HttpServerOptions::keepalive_park_after): an idle keep-alive connection hands its
  // socket's descriptor (and, over TLS, its SSL object and handshake; over HTTP/2, its session)
  // to the worker's ParkingLot and ends; the next request starts a new H1Connection, which takes
  // them over. A
  // connection from a PROXY protocol listener (its client address came from the header), or a
  // TLS one with bytes buffered or records being written, is trimmed instead: it frees its read
  // buffer and the TLS buffers (trim()), and its next bytes are first read into a small buffer
  // (ds_read).
  Deferred::Entry park_later_;
  /// request_park() once keepalive_park_after has passed from `now` (unless park_later_ is
  /// cancelled).
  void schedule_park(Deferred::clock::time_point now = Deferred::clock::now());
  void request_park() noexcept;
  void park();
  void trim() noexcept;
  /// Whether the idle connection can go to the ParkingLot now (else it is trimmed).
  bool can_park() const noexcept;
  std::size_t listener_ = 0;
  bool parkable_ = false;
  bool park_ = false;     // asked to park: the idle read was cancelled for it
  bool parked_ = false;   // the socket went to the ParkingLot, which counts the close
  bool trimmed_ = false;  // idle and trimmed: counted in connection_trimmed
  // Set while the connection speaks HTTP/2 (drain and abort go to it).
  H2Connection* h2_ = nullptr;
  // HTTP/2: the session of a parked connection, from the ParkingLot (the connection goes on
  // with it) or to it (H2Connection::park_session).
  std::unique_ptr<h2::Session> h2_session_;
  bool idle_ = true;
  bool closed_ = false;
  bool drain_requested_ = false;
  bool expect_proxy_header_ = false;
  bool h2c_ = false;  // a plain listener that also takes HTTP/2 with prior knowledge
  /// How long a connection that has not sent its first request yet may still send it once the
  /// server drains.
  static constexpr std::chrono::milliseconds kFirstRequestGrace{1000};
};

}  // namespace portico::detail
