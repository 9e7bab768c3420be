// Accepting a connection without giving it to Asio yet.
//
// Asio's accept hands over a socket already registered with epoll (epoll_ctl ADD), and closing
// it unregisters it again (in the kernel, at close). A connection whose request is in when it
// is accepted, and which is answered and closed without ever waiting (a client opening a
// connection per request), never needed the registration: about 6 % of the proxy's CPU per such
// connection went to it (epoll_ctl, eventpoll_release_file at close, events for a socket
// nobody waits on). accept_raw takes the connection with accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)
// from a reactor operation of its own on the listener, so the descriptor stays bare until
// the connection first has to wait (adopt_descriptor). Only where the reactor was checked to be
// as used here (PORTICO_RECV_READINESS, see socket_io.hpp); elsewhere Asio accepts.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <utility>

#include <boost/asio/async_result.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#include <boost/asio/detail/bind_handler.hpp>
#include <boost/asio/detail/fenced_block.hpp>
#include <boost/asio/detail/handler_alloc_helpers.hpp>
#include <boost/asio/detail/handler_cont_helpers.hpp>
#include <boost/asio/detail/handler_work.hpp>
#include <boost/asio/execution/context.hpp>

#include <portico/core/socket_addr.hpp>

#include "core/log.hpp"
#include "core/raw_fd.hpp"
#include "core/socket_io.hpp"

namespace portico::detail {

/// What accept_raw completes with: the connection's descriptor (non-blocking, close-on-exec)
/// and the client's address.
struct RawAccept {
  RawFd fd;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
};

#ifdef PORTICO_RECV_READINESS
#define PORTICO_ACCEPT_RAW 1

using Acceptor = boost::asio::ip::tcp::acceptor;
using AcceptorImpl = aio::io_object_impl<aio::reactive_socket_service<boost::asio::ip::tcp>,
                                         boost::asio::any_io_executor>;
struct ReachAcceptorImpl {
  using type = AcceptorImpl Acceptor::*;
  friend type reach(ReachAcceptorImpl);
};
template struct Reach<ReachAcceptorImpl, &Acceptor::impl_>;

/// The reactor operation: queued on the listener's read queue as Asio's accept is, performed
/// when the listener is readable; takes one connection with accept4.
template <class Handler, class IoExecutor>
class AcceptRawOp : public aio::reactor_op {
 public:
  BOOST_ASIO_DEFINE_HANDLER_PTR(AcceptRawOp);

  AcceptRawOp(int listener, Handler& h, const IoExecutor& ex)
      : aio::reactor_op(boost::system::error_code(), &AcceptRawOp::do_perform,
                        &AcceptRawOp::do_complete),
        listener_(listener),
        handler_(std::move(h)),
        work_(handler_, ex) {}

  static status do_perform(aio::reactor_op* base) {
    auto* o = static_cast<AcceptRawOp*>(base);
    for (;;) {
      o->got_.addr_len = sizeof o->got_.addr;
      const int fd = ::accept4(o->listener_, reinterpret_cast<sockaddr*>(&o->got_.addr),
                               &o->got_.addr_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        o->got_.fd = RawFd(fd);
        return done;
      }
      // A connection the client reset while it waited in the queue: the next one may be
      // behind it (the listener is edge-triggered: no event would say so).
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return not_done;
      o->ec_.assign(errno, boost::asio::error::get_system_category());
      return done;
    }
  }

  static void do_complete(void* owner, aio::operation* base, const boost::system::error_code&,
                          std::size_t) {
    auto* o = static_cast<AcceptRawOp*>(base);
    ptr p = {std::addressof(o->handler_), o, o};
    aio::handler_work<Handler, IoExecutor> w(std::move(o->work_));
    // Out of the operation before its memory goes (and closed with it when nobody takes it:
    // an io_context destroyed with the operation still queued).
    aio::move_binder2<Handler, boost::system::error_code, RawAccept> handler(
        0, std::move(o->handler_), o->ec_, std::move(o->got_));
    p.h = std::addressof(handler.handler_);
    p.reset();
    if (owner) {
      aio::fenced_block b(aio::fenced_block::half);
      w.complete(handler, handler.handler_);
    }
  }

 private:
  int listener_;
  RawAccept got_;
  Handler handler_;
  aio::handler_work<Handler, IoExecutor> work_;
};

/// Accepts one connection on `acc` (open and non-blocking) without registering it with the
/// reactor: completes with (error_code, RawAccept), as async_accept would with a socket.
/// Closing the acceptor completes it with operation_aborted.
template <class Token>
auto accept_raw(Acceptor& acc, Token&& token) {
  return boost::asio::async_initiate<Token, void(boost::system::error_code, RawAccept)>(
      [](auto handler, Acceptor* a) {
        using Op = AcceptRawOp<std::decay_t<decltype(handler)>, boost::asio::any_io_executor>;
        AcceptorImpl& impl = a->*reach(ReachAcceptorImpl{});
        auto& data = impl.get_implementation();
        // The listener's reactor, as its registration recorded it (use_service would look it
        // up under the registry's mutex on every accept).
        Reactor& reactor = data.reactor_data_
                               ? *(data.reactor_data_->*reach(ReachReactor{}))
                               : boost::asio::use_service<Reactor>(boost::asio::query(
                                     impl.get_executor(), boost::asio::execution::context));
        const bool cont = boost_asio_handler_cont_helpers::is_continuation(handler);
        typename Op::ptr p = {std::addressof(handler), Op::ptr::allocate(handler), 0};
        p.p = new (p.v) Op(data.socket_, handler, impl.get_executor());
        if (data.socket_ < 0) {
          p.p->ec_ = boost::asio::error::bad_descriptor;
          reactor.post_immediate_completion(p.p, cont);
        } else {
          reactor.start_op(Reactor::read_op, data.socket_, data.reactor_data_, p.p, cont, true);
        }
        p.v = p.p = 0;
      },
      token, &acc);
}
#endif

/// Gives `fd`, a connected stream socket made non-blocking by accept_raw, to `sock` (not open):
/// registered with the reactor as Asio's assign does. Asio is told that the descriptor is
/// non-blocking already (no ioctl at its first wait) and is the socket's own (own_descriptor);
/// `drained`: a read just found the socket empty, so the next one waits for the reactor's event
/// instead of trying first.
template <class Socket>
void adopt_descriptor(Socket& sock, const typename Socket::protocol_type& proto, RawFd& fd,
                      bool drained, boost::system::error_code& ec) {
  sock.assign(proto, fd.get(), ec);
  if (ec) return;  // fd still owned by `fd`, closed with it
  fd.release();
#ifdef PORTICO_RECV_READINESS
  SocketReach<Socket>::flags(sock) |= aio::socket_ops::internal_non_blocking;
  if (drained)
    if (ReactorState* st = SocketReach<Socket>::state(sock)) {
      aio::conditionally_enabled_mutex::scoped_lock lock(st->*reach(ReachMutex{}));
      (st->*reach(ReachReady{}))[Reactor::read_op] = false;
    }
#else
  (void)drained;
#endif
  own_descriptor(sock);
}

/// adopt_descriptor for an accepted TCP connection, its family told by `local` (or `peer` when
/// the listener's address is a wildcard). On failure it is logged and `fd` closed: false.
inline bool adopt_accepted(boost::asio::ip::tcp::socket& sock, RawFd& fd, const SocketAddr& local,
                           const SocketAddr& peer, bool drained) noexcept {
  if (!fd) return true;
  const bool v6 = (local.empty() ? peer : local).family() == AF_INET6;
  boost::system::error_code ec;
  adopt_descriptor(sock, v6 ? boost::asio::ip::tcp::v6() : boost::asio::ip::tcp::v4(), fd, drained,
                   ec);
  if (!ec) return true;
  log::error_log().warn("connection from {}: {}", peer.to_string(), ec.message());
  fd.reset();
  return false;
}

}  // namespace portico::detail
