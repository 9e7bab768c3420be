// Zero-copy forwarding between two sockets: splice(2) through a pipe.
//
// A body that nobody filters needs no pass through user space: splice() moves the pages of the
// upstream socket's receive queue into a pipe and from the pipe onto the client socket's send
// queue. The proxy then costs two system calls per pipe-full instead of a recv and a send, and
// copies nothing.
//
// The pipe is empty whenever bytes are spliced into it (the caller writes out all it holds
// first), so a splice from the socket that would block means the socket is drained, never that
// the pipe is full; a drained socket is waited for like a read (its readiness is the reactor's
// flag that recv_now uses).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>

#include <boost/asio/socket_base.hpp>
#include <boost/system/error_code.hpp>

#include "core/socket_io.hpp"

namespace portico::detail {

/// A pipe for splice(), from a per-thread cache: one that is given back empty is kept for the
/// next body (a pipe costs three system calls to make and its pages stay allocated).
class SplicePipe {
 public:
  /// The capacity asked of each pipe (F_SETPIPE_SZ); a system that refuses it leaves the
  /// default (64 KiB on Linux).
  static constexpr int kBytes = 256 * 1024;
  /// Empty pipes a thread keeps.
  static constexpr std::size_t kCached = 8;

  /// No pipe.
  SplicePipe() noexcept = default;
  /// A pipe from the cache, or a new one; an invalid one when none can be made (the descriptor
  /// limit): the caller copies instead.
  static SplicePipe take() noexcept;
  SplicePipe(SplicePipe&& o) noexcept : held(o.held), r_(o.r_), w_(o.w_), cap_(o.cap_) {
    o.r_ = o.w_ = -1;
    o.held = 0;
  }
  SplicePipe& operator=(SplicePipe&&) = delete;
  /// Back to the cache when empty; closed when it still holds bytes (a failed transfer).
  ~SplicePipe();

  explicit operator bool() const noexcept { return r_ >= 0; }
  int read_end() const noexcept { return r_; }
  int write_end() const noexcept { return w_; }
  /// Bytes one splice may move into the pipe.
  std::size_t capacity() const noexcept { return cap_; }

  /// Bytes in the pipe, kept by the caller.
  std::size_t held = 0;

 private:
  SplicePipe(int r, int w, std::size_t cap) noexcept : r_(r), w_(w), cap_(cap) {}
  int r_ = -1;
  int w_ = -1;
  std::size_t cap_ = 0;
};

/// Splice rounds a transfer makes in place before it lets the thread's other connections run
/// (both sides of a fast transfer may never make it wait).
inline constexpr unsigned kSpliceStreak = 16;

/// Moves up to `max` bytes of `sock` into the empty pipe `p` without waiting. Returns Done with
/// `n` bytes, with n == 0 and no `ec` at the end of the stream, or with `ec`; Wait when the socket
/// is drained (recv_wait's Wait: wait for it with `async_wait(wait_read)`, then call again).
template <class Socket>
RecvTry splice_in(Socket& sock, SplicePipe& p, std::size_t max, std::size_t& n,
                  boost::system::error_code& ec) noexcept {
  n = 0;
#ifdef PORTICO_RECV_READINESS
  ReactorState* st = SocketReach<Socket>::state(sock);
  bool* ready = nullptr;
  if (st) {
    aio::conditionally_enabled_mutex::scoped_lock lock(st->*reach(ReachMutex{}));
    ready = &(st->*reach(ReachReady{}))[Reactor::read_op];
    if (!*ready && !(last_events(st) & kLastingEvents)) return RecvTry::Wait;
  }
#endif
  if (max > p.capacity()) max = p.capacity();
  ssize_t got;
  do {
    got = ::splice(sock.native_handle(), nullptr, p.write_end(), nullptr, max,
                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  } while (got < 0 && errno == EINTR);
  if (got >= 0) {
    n = static_cast<std::size_t>(got);
    p.held += n;
    return RecvTry::Done;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {  // the pipe is empty: the socket is drained
#ifdef PORTICO_RECV_READINESS
    if (st) {
      aio::conditionally_enabled_mutex::scoped_lock lock(st->*reach(ReachMutex{}));
      *ready = false;
    }
#endif
    return RecvTry::Wait;
  }
  ec.assign(errno, boost::asio::error::get_system_category());
  return RecvTry::Done;
}

/// Moves what the pipe holds onto `fd` (a non-blocking socket) without waiting; `more` when
/// further bytes follow at once (SPLICE_F_MORE). Returns the bytes moved: fewer than held (maybe
/// 0) when the socket's buffer is full, to be finished once it is writable. Failures set `ec`;
/// a peer that is gone is EPIPE or ECONNRESET, never a SIGPIPE (see splice_out in splice.cpp).
std::size_t splice_out(SplicePipe& p, int fd, bool more, boost::system::error_code& ec) noexcept;

/// Makes `sock` non-blocking for system calls made outside Asio (a splice to a socket blocks
/// on a full buffer unless the socket itself is non-blocking), the way Asio does it itself.
template <class Socket>
void ensure_non_blocking(Socket& sock, boost::system::error_code& ec) noexcept {
  if (!sock.native_non_blocking()) sock.native_non_blocking(true, ec);
}

}  // namespace portico::detail
