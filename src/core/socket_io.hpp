// Writes that complete without a suspension when the socket takes everything at once.
//
// An Asio write that completes on its first try still posts its completion: the coroutine
// suspends, the handler waits behind the reactor (one more epoll_wait per round of such
// handlers) and a composed operation is allocated and run. Most writes of a proxy fit the socket
// buffer, so they are tried here first with one non-blocking sendmsg; only what is left goes
// through Asio.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstddef>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/error_code.hpp>

#include <portico/core/task.hpp>

namespace portico::detail {

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

/// Sends what the socket takes now of [first, last) with one sendmsg(MSG_DONTWAIT), without
/// SIGPIPE. Returns the bytes sent; `done` says whether that was all of them. A full socket
/// buffer is not an error; any other failure sets `ec` (Asio's error values, e.g. broken_pipe).
template <class It>
std::size_t send_now(int fd, It first, It last, bool& done, boost::system::error_code& ec) noexcept {
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
    n = ::sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
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
template <class Socket, class Tls, class Buffers>
WriteTry try_write(Socket& sock, Tls* tls, Buffers bufs) {
  WriteTry t;
  if (tls)
    t.done = tls->try_write(bufs, t.ec);
  else
    t.sent = send_now(sock.native_handle(), boost::asio::buffer_sequence_begin(bufs),
                      boost::asio::buffer_sequence_end(bufs), t.done, t.ec);
  return t;
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
