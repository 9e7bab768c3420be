// HTTP/2 toward upstreams: multiplexed sessions shared by the requests of one worker.
//
// A peer whose PeerOptions::alpn is H2 (h2 over TLS, or h2c prior knowledge on plain text) or
// H2H1 (h2 when the TLS handshake agrees on it, HTTP/1.1 otherwise) is reached through an
// H2UpConn: one connection carrying up to min(max_h2_streams, the peer's
// SETTINGS_MAX_CONCURRENT_STREAMS) requests at once; past that another one opens. Sessions are
// kept per pool key while they have room and are closed after the peer's idle_timeout without
// streams. Each request attempt is an H2Call on one of them.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/steady_timer.hpp>

#include <portico/http/header_map.hpp>

#include "core/id_map.hpp"
#include "core/signal.hpp"
#include "core/watchdog.hpp"
#include "http2/session.hpp"
#include "upstream/connection.hpp"

namespace portico::detail {

class H2UpConn;
class ProxyObserver;

enum class Wake : std::uint8_t { Notified, TimedOut, Cancelled };
/// Waits on `t` (whose cancel() is the notification) for at most `timeout` (0: no limit). A
/// terminal cancellation of the awaiting coroutine reports Cancelled. `shared`: several wait on
/// `t`, whose expiry is left as it is (`timeout` unused): setting it would cancel their waits.
task<Wake> wait_on(boost::asio::steady_timer& t, std::chrono::milliseconds timeout,
                   bool shared = false);

/// What a request attempt learns from its stream, filled in by the session's reader.
struct H2Call {
  /// `conn_sig`: a Signal of the connection, whose registry `rd` shares (no service lookup).
  H2Call(const boost::asio::any_io_executor& executor, const Signal& conn_sig) : ex(executor) {
    rd.share_registry(conn_sig);
  }
  boost::asio::any_io_executor ex;
  std::int32_t id = 0;
  std::vector<HeaderMap> interim;  // 1xx heads not relayed yet
  HeaderMap head;                  // the final response head, once `has_head`
  HeaderMap trailers;
  bool has_head = false;
  bool end = false;         // the upstream's END_STREAM arrived
  bool reset = false;       // RST_STREAM from the upstream, or the session is gone
  bool closed = false;      // no more events
  bool retry_safe = false;  // the upstream did not process the request
  bool cancelled = false;   // the attempt was cancelled (client gone, deadline)
  std::uint32_t code = 0;   // the reset code
  std::uint16_t rejected = 0;  // a status the session answered for us (oversized head)
  const char* malformed = nullptr;  // why the session reset a malformed response (static)
  Signal rd;                        // head, body, end, reset (the read timeout: the watchdog)
  std::optional<boost::asio::steady_timer> wr;  // send buffer room (made by the first wait)
  void notify() noexcept {
    rd.notify();
    if (wr) wr->cancel();
  }
};

/// One multiplexed HTTP/2 connection to an upstream.
class H2UpConn : public std::enable_shared_from_this<H2UpConn> {
 public:
  H2UpConn(UpstreamConnPtr transport, const h2::Settings& s, std::uint64_t key,
           std::chrono::milliseconds idle_timeout, std::chrono::milliseconds write_timeout,
           std::shared_ptr<ProxyObserver> obs);
  ~H2UpConn();

  /// Starts the reader and writer.
  void start();
  /// Opens a stream for `call` with the request `r` (h2::Session::submit_request; ":scheme"
  /// is `scheme`, cookies split into crumbs); fails when no stream can open.
  Result<void> open(H2Call& call, const RequestHeader& r, std::string_view scheme, bool end_stream);
  /// Forgets `call` (the attempt is over), resetting its stream with CANCEL if still open.
  void release(H2Call& call) noexcept;
  /// Streams that may still be opened (reservations of attempts on their way counted).
  bool has_room() const noexcept;
  bool usable() const noexcept { return !dead_ && !session_.goaway_received(); }
  /// No new streams; the connection closes once its streams are done.
  void shutdown() noexcept;
  void kick() noexcept;

  h2::Session& session() noexcept { return session_; }
  const Signal& signal() const noexcept { return write_sig_; }
  UpstreamConn& transport() noexcept { return *t_; }
  std::uint64_t key() const noexcept { return key_; }
  /// A stream is being set up by an attempt that found room here.
  void reserve() noexcept { ++reserved_; }
  void unreserve() noexcept {
    if (reserved_) --reserved_;
  }

 private:
  task<void> reader(std::shared_ptr<H2UpConn> self);
  task<void> writer(std::shared_ptr<H2UpConn> self);
  void dispatch();
  void fail_all() noexcept;

  UpstreamConnPtr t_;
  h2::Session session_;
  std::uint64_t key_;
  std::chrono::milliseconds idle_timeout_;
  std::chrono::milliseconds write_timeout_;
  std::shared_ptr<Watchdog> wd_;
  std::shared_ptr<ProxyObserver> obs_;
  IdMap<H2Call*> calls_;
  Signal write_sig_;  // kick(): the writer has something to send
  std::uint32_t reserved_ = 0;
  bool dead_ = false;
  bool closing_ = false;
};

/// The HTTP/2 upstream sessions of one worker, by pool key.
class H2Upstream {
 public:
  /// A connection being opened for a key; requests that find no session wait for it.
  struct Pending {
    explicit Pending(const boost::asio::any_io_executor& ex) : done(ex) {}
    /// Cancelled by end_connect; expires when the connect would time out. Every request of a
    /// burst waits on it (wait_on, shared).
    boost::asio::steady_timer done;
  };
  /// The connect in progress for `key`, or null.
  std::shared_ptr<Pending> connecting(std::uint64_t key) const;
  /// Announces a connect for `key` that lasts at most `timeout` (0: no limit); end_connect must
  /// follow (the waiters are woken then).
  std::shared_ptr<Pending> begin_connect(std::uint64_t key, const boost::asio::any_io_executor& ex,
                                         std::chrono::milliseconds timeout);
  void end_connect(std::uint64_t key) noexcept;

  /// A session for `key` with room for one more stream (reserved for the caller), or null.
  std::shared_ptr<H2UpConn> find(std::uint64_t key);
  void add(std::shared_ptr<H2UpConn> c);
  /// Closes idle sessions, lets busy ones finish (graceful shutdown).
  void drain() noexcept;

 private:
  std::unordered_map<std::uint64_t, std::vector<std::weak_ptr<H2UpConn>>> by_key_;
  std::unordered_map<std::uint64_t, std::shared_ptr<Pending>> connecting_;
  bool draining_ = false;
};

/// The ALPN protocol the TLS handshake of `c` agreed on ("" for none or plain text).
std::string negotiated_alpn(UpstreamConn& c);

}  // namespace portico::detail
