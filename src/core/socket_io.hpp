// Reads and writes that complete without a suspension when the socket is ready.
//
// Writes: an Asio write that completes on its first try still posts its completion: the
// coroutine suspends, the handler waits behind the reactor (one more epoll_wait per round of such
// handlers) and a composed operation is allocated and run. Most writes of a proxy fit the socket
// buffer, so they are tried here first with one non-blocking sendmsg; only what is left goes
// through Asio.
//
// Reads: Asio's reactor marks a socket readable on each edge-triggered event and forgets it only
// at end of stream, so every read after the first is tried at once: on a keep-alive connection
// the read for the next request (or response) finds the socket empty, one recv in vain per read,
// two per proxied request; and a read that finds data still posts its completion. recv_now reads
// in place, as an edge-triggered event loop does (nginx's rev->ready): a read that returns less
// than it asked for drained the socket, and the next one waits for the reactor's next readable
// event instead of trying (recv_wait). The state is the reactor's own per-socket flag, so an
// event that came while nobody waited still makes the next read try; a FIN that came behind the
// last data is known from EPOLLRDHUP, which the reactor is made to watch.
#pragma once

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <boost/asio/async_result.hpp>
#include <boost/asio/basic_stream_socket.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/error_code.hpp>
#include <boost/version.hpp>

#include <portico/core/task.hpp>

namespace portico::detail {

// ---------------------------------------------------------------------------------------------
// reads

/// What recv_now did.
enum class RecvTry : std::uint8_t {
  Done,   // read, end of stream or failed: `n` and `ec` say which, as async_read_some would
  Wait,   // the socket is drained: recv_wait reads once the reactor sees it readable
  Async,  // left to Asio as it is (its completion is posted: see kRecvStreak)
};

/// Reads completed in place in a row on one thread before one is left to Asio, whose posted
/// completion lets the other connections of the thread run: a stream that never drains (a fast
/// upstream and client) cannot hold the thread.
inline constexpr unsigned kRecvStreak = 64;

// Only where the reactor's state was checked to be as used here (Boost 1.81's epoll reactor);
// elsewhere every read is Asio's own.
#if defined(BOOST_ASIO_HAS_EPOLL) && !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT) && \
    !defined(BOOST_ASIO_DISABLE_EPOLL) && BOOST_VERSION >= 108100 && BOOST_VERSION < 108200
#define PORTICO_RECV_READINESS 1
}  // namespace portico::detail
#include <boost/asio/detail/epoll_reactor.hpp>
#include <boost/asio/detail/reactive_socket_recv_op.hpp>
namespace portico::detail {

// The reactor's per-socket state and its operations' perform functions are private to Asio;
// explicit instantiations may name private members ([temp.spec.general]), which is how these
// reach them. A name Asio changes fails the build.
template <class Tag, typename Tag::type M>
struct Reach {
  friend typename Tag::type reach(Tag) { return M; }
};
namespace aio = boost::asio::detail;
using Reactor = aio::epoll_reactor;
using ReactorState = Reactor::descriptor_state;
using RecvOp = aio::reactive_socket_recv_op_base<boost::asio::mutable_buffer>;
#define PORTICO_REACH(Name, Type, Member) \
  struct Name {                           \
    using type = Type;                    \
    friend type reach(Name);              \
  };                                      \
  template struct Reach<Name, &Member>
PORTICO_REACH(ReachMutex, aio::conditionally_enabled_mutex ReactorState::*, ReactorState::mutex_);
PORTICO_REACH(ReachReady, bool (ReactorState::*)[Reactor::max_ops], ReactorState::try_speculative_);
PORTICO_REACH(ReachQueues, aio::op_queue<aio::reactor_op> (ReactorState::*)[Reactor::max_ops],
              ReactorState::op_queue_);
PORTICO_REACH(ReachRegistered, std::uint32_t ReactorState::*, ReactorState::registered_events_);
PORTICO_REACH(ReachReactor, Reactor* ReactorState::*, ReactorState::reactor_);
PORTICO_REACH(ReachEpoll, int Reactor::*, Reactor::epoll_fd_);
PORTICO_REACH(ReachEvents, unsigned aio::scheduler_operation::*,
              aio::scheduler_operation::task_result_);
PORTICO_REACH(ReachPerform, aio::reactor_op::status (*aio::reactor_op::*)(aio::reactor_op*),
              aio::reactor_op::perform_func_);
PORTICO_REACH(ReachBuffer, boost::asio::mutable_buffer RecvOp::*, RecvOp::buffers_);
#undef PORTICO_REACH

/// The reactor's state of a socket (basic_socket::impl_ is protected: reached from a subclass).
template <class Socket>
struct SocketReach : Socket {
  static ReactorState* state(Socket& s) noexcept {
    return (s.*&SocketReach::impl_).get_implementation().reactor_data_;
  }
  /// Asio's flags for the socket (socket_ops::state_type).
  static unsigned char& flags(Socket& s) noexcept {
    return (s.*&SocketReach::impl_).get_implementation().state_;
  }
};

/// Conditions that stay once they come and make the socket readable for good: the peer's FIN
/// (EPOLLRDHUP, watched once watch_hangup ran), a hang-up or an error.
inline constexpr std::uint32_t kLastingEvents = EPOLLRDHUP | EPOLLHUP | EPOLLERR;

/// The events the reactor took last for `st` (Asio keeps them until the next epoll_wait that
/// reports the socket).
inline std::uint32_t last_events(ReactorState* st) noexcept {
  return ((aio::scheduler_operation*)st)->*reach(ReachEvents{});  // a private base
}

/// Whether a read of `st` that returned less than it asked for drained the socket: not when the
/// peer's FIN (or an error) may be in behind the data, announced by an event taken already: the
/// end of the stream would never be read. The reactor's last events tell it once the socket is
/// watched for EPOLLRDHUP; a FIN after them is an event still to come.
inline bool drained_by_short_read(ReactorState* st) noexcept {
  return ((st->*reach(ReachRegistered{})) & EPOLLRDHUP) && !(last_events(st) & kLastingEvents);
}

/// Adds EPOLLRDHUP to the events the reactor watches for `st` (socket `fd`), once per socket
/// (recv_now: at its second wait, so that a connection read once and closed does not pay for
/// it). Asio keeps the flag when it changes the socket's events later.
inline void watch_hangup(ReactorState* st, int fd) noexcept {
  std::uint32_t& events = st->*reach(ReachRegistered{});
  if (events & EPOLLRDHUP) return;
  epoll_event ev{};
  ev.events = events | EPOLLRDHUP;
  ev.data.ptr = st;
  if (::epoll_ctl((st->*reach(ReachReactor{}))->*reach(ReachEpoll{}), EPOLL_CTL_MOD, fd, &ev) == 0)
    events = ev.events;
}

/// Asio's receive, which also tells the reactor when a read drained the socket (returned less
/// than it asked for): the reactor then leaves the socket alone until its next readable event.
/// A FIN behind the data is seen by recv_now's next read in the events that performed this one.
inline aio::reactor_op::status perform_recv_drains(aio::reactor_op* op) {
  aio::reactor_op::status s = RecvOp::do_perform(op);
  if (s == aio::reactor_op::done && !op->ec_ && op->bytes_transferred_ > 0 &&
      op->bytes_transferred_ < (static_cast<RecvOp*>(op)->*reach(ReachBuffer{})).size())
    s = aio::reactor_op::done_and_exhausted;
  return s;
}

/// Makes the read just queued on `sock` one that tells a drained socket (perform_recv_drains),
/// when the socket is watched for EPOLLRDHUP (else a FIN behind its data could go unseen).
template <class Socket>
void queued_read_drains(Socket& sock) noexcept {
  ReactorState* st = SocketReach<Socket>::state(sock);
  if (!st) return;
  // Under the lock: on an io_context run by several threads another may be performing it.
  aio::conditionally_enabled_mutex::scoped_lock lock(st->*reach(ReachMutex{}));
  if (!((st->*reach(ReachRegistered{})) & EPOLLRDHUP)) return;
  if (aio::reactor_op* op = (st->*reach(ReachQueues{}))[Reactor::read_op].front())
    if (op->*reach(ReachPerform{}) == &RecvOp::do_perform)
      op->*reach(ReachPerform{}) = &perform_recv_drains;
}
#endif

/// Consecutive reads completed in place on this thread (see kRecvStreak).
inline thread_local unsigned recv_streak = 0;

/// One non-blocking recv on `fd` into `b`: Done (n bytes, or ec: eof, an error) or Wait (nothing
/// there, not even a FIN). The system call under recv_now and recv_raw.
inline RecvTry recv_once(int fd, boost::asio::mutable_buffer b, std::size_t& n,
                         boost::system::error_code& ec) noexcept {
  ssize_t got;
  do {
    got = ::recv(fd, b.data(), b.size(), MSG_DONTWAIT);
  } while (got < 0 && errno == EINTR);
  if (got > 0) {
    n = static_cast<std::size_t>(got);
    return RecvTry::Done;
  }
  if (got == 0) {
    ec = boost::asio::error::eof;
    return RecvTry::Done;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) return RecvTry::Wait;
  ec.assign(errno, boost::asio::error::get_system_category());
  return RecvTry::Done;
}

/// One read of `sock` into `b` tried in place: Done (n bytes, or ec: eof, an error), Wait (the
/// last read drained the socket and no readable event came since) or Async (no reactor state to
/// use, a read already queued, or kRecvStreak). Wait and Async go on with recv_wait.
template <class Socket>
RecvTry recv_now(Socket& sock, boost::asio::mutable_buffer b, std::size_t& n,
                 boost::system::error_code& ec) noexcept {
  n = 0;
#ifdef PORTICO_RECV_READINESS
  ReactorState* st = SocketReach<Socket>::state(sock);
  if (!st || b.size() == 0 || ++recv_streak > kRecvStreak) {
    recv_streak = 0;
    return RecvTry::Async;
  }
  aio::conditionally_enabled_mutex::scoped_lock lock(st->*reach(ReachMutex{}));
  if (!(st->*reach(ReachQueues{}))[Reactor::read_op].empty() ||
      (st->*reach(ReachRegistered{})) == 0)
    return RecvTry::Async;
  bool& ready = (st->*reach(ReachReady{}))[Reactor::read_op];
  if (!ready) {
    if (!(last_events(st) & kLastingEvents)) return RecvTry::Wait;
    ready = true;  // a FIN (or an error) behind the data the last read took
  }
  if (recv_once(sock.native_handle(), b, n, ec) == RecvTry::Done) {
    if (n > 0 && n < b.size() && drained_by_short_read(st)) ready = false;
    return RecvTry::Done;
  }
  // Nothing, not even a FIN: whatever comes next is an event.
  ready = false;
  // Not on a socket's first wait (Asio has not made it non-blocking yet: a client whose
  // request is not in when it is accepted): most such connections are read once and closed.
  // A connection that waits again is watched from then on.
  if (SocketReach<Socket>::flags(sock) & aio::socket_ops::non_blocking)
    watch_hangup(st, sock.native_handle());
  return RecvTry::Wait;
#else
  (void)sock, (void)b, (void)ec;
  return RecvTry::Async;
#endif
}

/// recv_now for a descriptor not given to Asio yet (accept_raw, non-blocking): Done, Wait
/// (nothing there: it must be registered with the reactor to wait, see adopt_descriptor) or
/// Async (kRecvStreak: registered, and read through Asio's posted completion).
inline RecvTry recv_raw(int fd, boost::asio::mutable_buffer b, std::size_t& n,
                        boost::system::error_code& ec) noexcept {
  n = 0;
  if (++recv_streak > kRecvStreak) {
    recv_streak = 0;
    return RecvTry::Async;
  }
  return recv_once(fd, b, n, ec);
}

/// The rest of a read that recv_now did not finish (its result `t`, not Done): async_read_some,
/// which for Wait is queued with the reactor without a try (the socket's flag is down) and puts
/// the flag down again when it drains the socket (queued_read_drains). Together, as
/// async_read_some is used:
///
///     std::size_t n;
///     if (const RecvTry t = recv_now(sock, b, n, ec); t != RecvTry::Done)
///       n = co_await recv_wait(sock, b, t, redirect_error(use_awaitable, ec));
template <class Socket, class Token>
auto recv_wait(Socket& sock, boost::asio::mutable_buffer b, RecvTry t, Token&& token) {
  return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
      [](auto handler, Socket* s, boost::asio::mutable_buffer into, RecvTry how) {
        s->async_read_some(into, std::move(handler));
#ifdef PORTICO_RECV_READINESS
        if (how == RecvTry::Wait) {
          recv_streak = 0;
          queued_read_drains(*s);
        }
#else
        (void)how;
#endif
      },
      token, &sock, b, t);
}

/// Tells Asio that the descriptor of `sock` is its own, fresh from accept(): Asio, which cannot
/// know that of a descriptor it is given, then closes it without first removing it from epoll
/// with a system call (closing the last descriptor of a socket does that). Only a child process
/// still holding a copy of the descriptor (forked, or exec'd without close-on-exec, while the
/// connection was open) would leave the socket in epoll after the close, which costs spurious
/// wake-ups (Asio tolerates them), nothing else.
template <class Socket>
void own_descriptor(Socket& sock) noexcept {
#ifdef PORTICO_RECV_READINESS
  SocketReach<Socket>::flags(sock) &= static_cast<unsigned char>(~aio::socket_ops::possible_dup);
#else
  (void)sock;
#endif
}

// ---------------------------------------------------------------------------------------------
// writes

/// A write tried at once (send_now, TlsStream::try_write): finished, failed, or how far it got.
struct WriteTry {
  bool done = false;
  std::size_t sent = 0;  // plain sockets: bytes already sent
  boost::system::error_code ec;
  /// The rest must wait for the socket.
  bool pending() const noexcept { return !done && !ec; }
};

/// Buffers taken by one send_now (more are left to the asynchronous rest).
inline constexpr std::size_t kSendNowBuffers = 64;

/// Sends what the socket takes now of [first, last) with one sendmsg(MSG_DONTWAIT) (send for a
/// single buffer), without SIGPIPE. Returns the bytes sent; `done` says whether that was all of
/// them. A full socket buffer is not an error; any other failure sets `ec` (Asio's error values,
/// e.g. broken_pipe). `flags` are added to the call's (MSG_MORE for a last write that a
/// half-close follows at once).
template <class It>
std::size_t send_now(int fd, It first, It last, bool& done, boost::system::error_code& ec,
                     int flags = 0) noexcept {
  iovec iov[kSendNowBuffers];
  std::size_t count = 0, total = 0;
  done = true;
  for (It it = first; it != last; ++it) {
    const boost::asio::const_buffer b(*it);
    if (b.size() == 0) continue;
    if (count == kSendNowBuffers) {
      done = false;
      break;
    }
    iov[count].iov_base = const_cast<void*>(b.data());
    iov[count].iov_len = b.size();
    total += b.size();
    ++count;
  }
  if (count == 0) return 0;
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = count;
  ssize_t n;
  do {
    // One buffer: send(2), which the kernel takes without copying in a msghdr and an iovec.
    n = count == 1
            ? ::send(fd, iov[0].iov_base, iov[0].iov_len, MSG_DONTWAIT | MSG_NOSIGNAL | flags)
            : ::sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL | flags);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    done = false;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      ec.assign(errno, boost::asio::error::get_system_category());
    return 0;
  }
  if (static_cast<std::size_t>(n) < total) done = false;
  return static_cast<std::size_t>(n);
}

/// The buffers of [first, last) after their first `skip` bytes.
template <class It>
std::vector<boost::asio::const_buffer> buffers_after(It first, It last, std::size_t skip) {
  std::vector<boost::asio::const_buffer> rest;
  for (It it = first; it != last; ++it) {
    boost::asio::const_buffer b(*it);
    if (skip >= b.size()) {
      skip -= b.size();
      continue;
    }
    rest.push_back(b + skip);
    skip = 0;
  }
  return rest;
}

/// Writes the buffers of [first, last) after their first `skip` bytes with Asio (the slow path
/// of a write that send_now started).
template <class Socket, class It>
task<void> write_rest(Socket& sock, It first, It last, std::size_t skip,
                      boost::system::error_code& ec) {
  const std::vector<boost::asio::const_buffer> rest = buffers_after(first, last, skip);
  co_await boost::asio::async_write(sock, rest,
                                    boost::asio::redirect_error(boost::asio::use_awaitable, ec));
}

/// One write of `bufs` tried in place: through `tls` (a TlsStream) when there is one, else
/// straight on `sock`. Most writes end here; one that is pending() goes on with finish_write.
/// `flags` go to send_now (plain sockets only).
template <class Tls, class Buffers>
WriteTry try_write(int fd, Tls* tls, Buffers bufs, int flags = 0) {
  WriteTry t;
  if (tls)
    t.done = tls->try_write(bufs, t.ec);
  else
    t.sent = send_now(fd, boost::asio::buffer_sequence_begin(bufs),
                      boost::asio::buffer_sequence_end(bufs), t.done, t.ec, flags);
  return t;
}
/// try_write on the descriptor of `sock`.
template <class Socket, class Tls, class Buffers>
WriteTry try_write(Socket& sock, Tls* tls, Buffers bufs) {
  return try_write(sock.native_handle(), tls, bufs);
}

/// The rest of a write that try_write left pending, with the same `sock`, `tls` and `bufs`.
template <class Socket, class Tls, class Buffers>
task<void> finish_write(Socket& sock, Tls* tls, Buffers bufs, WriteTry t,
                        boost::system::error_code& ec) {
  if (tls)
    co_await tls->write(bufs, ec);
  else
    co_await write_rest(sock, boost::asio::buffer_sequence_begin(bufs),
                        boost::asio::buffer_sequence_end(bufs), t.sent, ec);
}

}  // namespace portico::detail
