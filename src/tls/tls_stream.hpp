// TLS over a connected stream socket, driven by coroutines.
//
// OpenSSL talks to a BIO of ours that reads from and writes to two buffers of this object; the
// coroutines move bytes between those buffers and the socket with ordinary Asio operations. So a
// read is the same speculative recv() a plain socket does (no extra readiness system call),
// several records produced by one write leave in one send(), and nothing is copied twice: the
// ciphertext goes socket -> `in_` -> OpenSSL's record buffer, and OpenSSL's records -> `stage_`
// -> socket. (asio::ssl::stream puts a BIO pair and two zero-filled 17 KiB buffers in between.)
//
// One read and one write may be outstanding at once (an HTTP/2 connection has a reader and a
// writer coroutine); handshake and shutdown run alone. Errors are reported as Asio's SSL stream
// reports them: asio::error::eof after the peer's close_notify, asio::ssl::error::stream_truncated
// when the transport closes without one, OpenSSL's error code in Asio's SSL category otherwise.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/error_code.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <portico/core/task.hpp>

#include "core/socket_io.hpp"

namespace portico::detail {

/// The part of a TLS stream that does not depend on the socket type: the SSL, its BIO and the
/// two ciphertext buffers.
class TlsBio {
 public:
  /// Takes ownership of `ssl` (one reference) and attaches the buffers to it. An SSL that was
  /// released by another TlsBio keeps its BIO, which is attached to this object instead.
  explicit TlsBio(SSL* ssl) noexcept;
  ~TlsBio();
  TlsBio(const TlsBio&) = delete;
  TlsBio& operator=(const TlsBio&) = delete;

  SSL* native_handle() const noexcept { return ssl_; }
  /// Gives up the SSL (the caller owns its reference), e.g. to move the connection to another
  /// worker. Bytes read from the socket but not yet decrypted are dropped: check buffered().
  SSL* release() noexcept;
  /// True when bytes from the peer wait here or in OpenSSL (an idle connection must have none).
  bool buffered() const noexcept;
  /// For an idle connection: frees the input buffer when it holds nothing (the next bytes are
  /// then first read into a small buffer on the stack, see fill()) and the capacity of the
  /// output buffers when no write is under way. OpenSSL releases its own record buffers when
  /// they are empty (SSL_MODE_RELEASE_BUFFERS).
  void trim() noexcept;
  /// Records are being written or wait to be (a read may send some: a key update's answer).
  bool writing() const noexcept { return flushing_ || !stage_.empty(); }
  /// For a connection closed without a stream around it (a parked one): sends `last` (the
  /// application's goodbye, e.g. an HTTP/2 GOAWAY) and close_notify on `fd` if the socket takes
  /// them at once, without waiting for the peer's close_notify, and leaves the session
  /// resumable.
  void send_close_notify(int fd, std::string_view last = {}) noexcept;

 protected:
  enum class Want { Done, Read, Fail };
  /// What an SSL call that returned `r` needs next; on Fail `ec` says why.
  Want step(int r, boost::system::error_code& ec) const noexcept;
  /// Encrypts [p, p+n) into stage_. False (and `ec`) on an error.
  bool encrypt(const void* p, std::size_t n, boost::system::error_code& ec) noexcept;
  /// Where the socket's next bytes go (all earlier ones were taken by OpenSSL).
  boost::asio::mutable_buffer in_space();

  static constexpr std::size_t kInBuffer = 17 * 1024;  // a full record and its header
  static constexpr std::size_t kRecord = 16 * 1024;    // plaintext of one record
  static constexpr std::size_t kFlushAt = 32 * 1024;   // staged ciphertext sent in one go
  /// Scratch for gathering small buffers into one record (one per thread; never held across a
  /// suspension).
  static char* gather_buffer() noexcept;

  SSL* ssl_;
  std::unique_ptr<char[]> in_;
  std::size_t in_begin_ = 0;
  std::size_t in_end_ = 0;
  std::vector<char> stage_;     // records OpenSSL produced, not yet handed to the socket
  std::vector<char> inflight_;  // records being written
  bool flushing_ = false;
  bool staged_ = false;   // try_write left its records in stage_ for write() to send
  bool trimmed_ = false;  // trim() freed the input buffer: fill() waits without it

  friend struct TlsBioMethod;
};

template <class Socket>
class TlsStream final : public TlsBio {
 public:
  using error_code = boost::system::error_code;

  TlsStream(Socket& sock, SSL* ssl) noexcept : TlsBio(ssl), sock_(sock) {}

  Socket& next_layer() noexcept { return sock_; }

  /// Runs the handshake as server or client.
  task<void> handshake(bool server, error_code& ec) {
    ec = {};
    if (server)
      SSL_set_accept_state(ssl_);
    else
      SSL_set_connect_state(ssl_);
    for (;;) {
      ERR_clear_error();
      const Want w = step(SSL_do_handshake(ssl_), ec);
      if (!stage_.empty()) {  // a flight, or the alert that goes with a failure
        error_code wec;
        if (!flush_now(wec)) co_await flush(wec);
        if (w != Want::Fail && wec) {
          ec = wec;
          co_return;
        }
      }
      if (w != Want::Read) co_return;
      co_await fill(ec);
      if (ec) co_return;
    }
  }

  /// Reads what is available (at least one byte) into `b`.
  task<std::size_t> read_some(boost::asio::mutable_buffer b, error_code& ec) {
    ec = {};
    if (b.size() == 0) co_return 0;
    for (;;) {
      ERR_clear_error();
      std::size_t n = 0;
      const int r = SSL_read_ex(ssl_, b.data(), b.size(), &n);
      const Want w = r == 1 ? Want::Done : step(r, ec);
      if (!stage_.empty()) {  // a key update answered, an alert
        error_code wec;
        if (!flush_now(wec)) co_await flush(wec);
      }
      if (w == Want::Done) co_return n;
      if (w == Want::Fail) co_return 0;
      co_await fill(ec);
      if (ec) co_return 0;
    }
  }

  /// Writes `bufs` without a suspension when they fit one flush (kFlushAt) and the socket takes
  /// them now: true when done, or failed (`ec`). False: co_await write() with the same buffers,
  /// which finishes what this started.
  template <class Buffers>
  bool try_write(const Buffers& bufs, error_code& ec) {
    ec = {};
    const auto first = boost::asio::buffer_sequence_begin(bufs);
    const auto last = boost::asio::buffer_sequence_end(bufs);
    std::size_t total = 0, count = 0;
    measure(first, last, total, count);
    if (total > kFlushAt) return false;
    if (!encrypt_gathered(first, last, total, count, ec)) return true;
    if (flush_now(ec)) return true;
    staged_ = true;
    return false;
  }

  /// Writes all of `bufs`. Small buffers are gathered into one record; the records of one call
  /// leave in as few send() calls as fit kFlushAt.
  template <class Buffers>
  task<void> write(const Buffers& bufs, error_code& ec) {
    ec = {};
    if (staged_) {  // try_write encrypted them; the socket was full
      staged_ = false;
      co_await flush(ec);
      co_return;
    }
    const auto first = boost::asio::buffer_sequence_begin(bufs);
    const auto last = boost::asio::buffer_sequence_end(bufs);
    std::size_t total = 0, count = 0;
    measure(first, last, total, count);
    if (total <= kFlushAt) {
      if (!encrypt_gathered(first, last, total, count, ec)) co_return;
    } else {
      for (auto it = first; it != last; ++it) {
        const boost::asio::const_buffer b(*it);
        const char* p = static_cast<const char*>(b.data());
        std::size_t left = b.size();
        while (left > 0) {
          const std::size_t n = std::min(left, kRecord);
          if (!encrypt(p, n, ec)) co_return;
          p += n;
          left -= n;
          if (stage_.size() >= kFlushAt) {
            if (!flush_now(ec)) co_await flush(ec);
            if (ec) co_return;
          }
        }
      }
    }
    if (!flush_now(ec)) co_await flush(ec);
  }

  /// For a send the caller makes itself (a batched send, core/send_batch.hpp): encrypts `bufs`
  /// (at most kFlushAt bytes) and holds the records as a flush under way, so that nothing else
  /// is sent before them. Returns the records; empty when that cannot be done now (too large, a
  /// write under way, an error in `ec`): write the usual way then. Call sent_staged() after.
  template <class Buffers>
  std::string_view stage_for_send(const Buffers& bufs, error_code& ec) {
    ec = {};
    if (flushing_ || staged_ || !stage_.empty()) return {};
    const auto first = boost::asio::buffer_sequence_begin(bufs);
    const auto last = boost::asio::buffer_sequence_end(bufs);
    std::size_t total = 0, count = 0;
    measure(first, last, total, count);
    if (total == 0 || total > kFlushAt) return {};
    if (!encrypt_gathered(first, last, total, count, ec)) {
      stage_.clear();
      return {};
    }
    inflight_.swap(stage_);
    flushing_ = true;
    return {inflight_.data(), inflight_.size()};
  }
  /// The caller's send of what stage_for_send() returned took `sent` bytes, or failed
  /// (`failed`). True when nothing is left to send. Else the records not sent, then any staged
  /// meanwhile (an alert), wait in stage_ as try_write leaves them: co_await write() sends them.
  bool sent_staged(std::size_t sent, const error_code& failed) noexcept {
    flushing_ = false;
    if (failed) stage_.clear();
    if (!failed && sent < inflight_.size())
      stage_.insert(stage_.begin(), inflight_.begin() + static_cast<std::ptrdiff_t>(sent),
                    inflight_.end());
    inflight_.clear();
    staged_ = !stage_.empty();
    return !staged_;
  }

  /// Sends close_notify. Whether the peer's is awaited is OpenSSL's choice: a caller that does
  /// not want to wait marks it received first (SSL_set_shutdown(SSL_RECEIVED_SHUTDOWN)).
  task<void> shutdown(error_code& ec) {
    ec = {};
    for (;;) {
      ERR_clear_error();
      const int r = SSL_shutdown(ssl_);
      const Want w = r == 1 ? Want::Done : r == 0 ? Want::Read : step(r, ec);
      if (!stage_.empty()) {
        error_code wec;
        if (!flush_now(wec)) co_await flush(wec);
        if (!ec) ec = wec;
      }
      if (w != Want::Read || ec) co_return;
      co_await fill(ec);
      if (ec) co_return;
    }
  }

 private:
  template <class It>
  static void measure(It first, It last, std::size_t& total, std::size_t& count) noexcept {
    for (auto it = first; it != last; ++it) {
      total += boost::asio::const_buffer(*it).size();
      ++count;
    }
  }

  /// Encrypts [first, last), `total` <= kFlushAt bytes in `count` buffers, into stage_: several
  /// small buffers gathered into one record, else each buffer in records of its own.
  template <class It>
  bool encrypt_gathered(It first, It last, std::size_t total, std::size_t count,
                        error_code& ec) noexcept {
    if (count > 1 && total <= kRecord) {
      char* g = gather_buffer();
      std::size_t at = 0;
      for (auto it = first; it != last; ++it) {
        const boost::asio::const_buffer b(*it);
        if (b.size()) std::memcpy(g + at, b.data(), b.size());
        at += b.size();
      }
      return at == 0 || encrypt(g, at, ec);
    }
    for (auto it = first; it != last; ++it) {
      const boost::asio::const_buffer b(*it);
      const char* p = static_cast<const char*>(b.data());
      for (std::size_t left = b.size(); left > 0;) {
        const std::size_t n = std::min(left, kRecord);
        if (!encrypt(p, n, ec)) return false;
        p += n;
        left -= n;
      }
    }
    return true;
  }

  /// Sends what is staged if the socket takes it all now, without a suspension (the usual
  /// case). False when the rest must wait for the socket: co_await flush() then.
  bool flush_now(error_code& ec) noexcept {
    if (flushing_ || stage_.empty()) return true;  // a running flush sends stage_ after inflight_
    const boost::asio::const_buffer b(stage_.data(), stage_.size());
    bool done = false;
    const std::size_t n = send_now(sock_.native_handle(), &b, &b + 1, done, ec);
    if (done || ec) {
      stage_.clear();
      return true;
    }
    stage_.erase(stage_.begin(), stage_.begin() + static_cast<std::ptrdiff_t>(n));
    return false;
  }

  /// Sends what is staged. A flush already running (the other coroutine's) sends it instead.
  task<void> flush(error_code& ec) {
    if (flushing_) co_return;
    flushing_ = true;
    while (!stage_.empty()) {
      inflight_.swap(stage_);
      co_await boost::asio::async_write(sock_, boost::asio::buffer(inflight_),
                                        boost::asio::redirect_error(boost::asio::use_awaitable, ec));
      inflight_.clear();
      if (ec) {
        stage_.clear();
        break;
      }
    }
    flushing_ = false;
  }

  /// Reads more ciphertext from the socket.
  task<void> fill(error_code& ec) {
    if (trimmed_ && !in_) {
      // Trimmed: the wait needs no input buffer; the first bytes come through this one.
      trimmed_ = false;
      char first[64];
      const boost::asio::mutable_buffer into(first, sizeof first);
      std::size_t n;
      if (const RecvTry t = recv_now(sock_, into, n, ec); t != RecvTry::Done)
        n = co_await recv_wait(sock_, into, t,
                               boost::asio::redirect_error(boost::asio::use_awaitable, ec));
      if (ec == boost::asio::error::eof) ec = boost::asio::ssl::error::stream_truncated;
      if (n > 0) {
        std::memcpy(in_space().data(), first, n);
        in_end_ += n;
      }
      co_return;
    }
    const boost::asio::mutable_buffer into = in_space();
    std::size_t n;
    if (const RecvTry t = recv_now(sock_, into, n, ec); t != RecvTry::Done)
      n = co_await recv_wait(sock_, into, t,
                             boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    if (ec == boost::asio::error::eof) ec = boost::asio::ssl::error::stream_truncated;
    in_end_ += n;
  }

  Socket& sock_;
};

}  // namespace portico::detail
