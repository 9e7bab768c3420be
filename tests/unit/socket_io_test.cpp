// recv_now / recv_wait over a loopback TCP pair: a read in place when data is there, a wait
// (not a recv that finds nothing) once a short read drained the socket, data and a FIN that came
// while nobody waited are still read, and a stream that never drains is left to Asio every
// kRecvStreak reads.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <string>
#include <tuple>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "core/accept_raw.hpp"
#include "core/socket_io.hpp"

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using portico::task;
using portico::detail::recv_now;
using portico::detail::recv_wait;
using portico::detail::RecvTry;

struct Pair {
  asio::io_context io{1};
  tcp::socket reader{io}, writer{io};
  char buf[64];

  Pair() {
    tcp::acceptor acc(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    writer.connect(acc.local_endpoint());
    acc.accept(reader);
  }
  void send(const std::string& s) { asio::write(writer, asio::buffer(s)); }

  /// One read as the proxy does it (recv_now, then recv_wait), run to completion within 10 s.
  /// `suspended`: whether it had to wait for the reactor.
  std::string read(error_code& ec, bool* suspended = nullptr) {
    std::size_t n = 0;
    const RecvTry t = recv_now(reader, asio::buffer(buf), n, ec);
    if (suspended) *suspended = t != RecvTry::Done;
    if (t != RecvTry::Done) {
      bool done = false;
      asio::co_spawn(
          io,
          [&]() -> task<void> {
            n = co_await recv_wait(reader, asio::buffer(buf), t,
                                   asio::redirect_error(asio::use_awaitable, ec));
            done = true;
          },
          [](std::exception_ptr e) { EXPECT_FALSE(e); });
      io.restart();
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!done && std::chrono::steady_clock::now() < until)
        io.run_one_for(std::chrono::milliseconds(100));
      EXPECT_TRUE(done) << "the read did not complete";
    }
    return std::string(buf, n);
  }
  /// A read that finds nothing: the socket is drained.
  void drain() {
    std::size_t n = 0;
    error_code ec;
    ASSERT_EQ(recv_now(reader, asio::buffer(buf), n, ec), RecvTry::Wait);
  }
  /// As a keep-alive connection after its first wait: a wait, a read, and a read that finds
  /// nothing (from which on the socket is watched for the peer's FIN).
  void settle_in() {
    drain();
    send("x");
    error_code ec;
    EXPECT_EQ(read(ec), "x");
    drain();
  }
  /// Lets the reactor see what the writer sent (bounded). With work outstanding, as in a
  /// server: an io_context without any returns from poll() without looking at its sockets.
  void settle() {
    auto work = asio::make_work_guard(io);
    io.restart();
    for (int i = 0; i < 5; ++i) io.poll();
  }
};

TEST(SocketIo, DataThereIsReadInPlace) {
  Pair p;
  p.send("abc");
  error_code ec;
  bool suspended = true;
  EXPECT_EQ(p.read(ec, &suspended), "abc");
  EXPECT_FALSE(ec);
  EXPECT_FALSE(suspended);
}

#ifdef PORTICO_RECV_READINESS
TEST(SocketIo, ADrainedSocketWaitsForTheReactorInsteadOfTrying) {
  Pair p;
  p.settle_in();
  p.send("one");
  error_code ec;
  EXPECT_EQ(p.read(ec), "one");  // woken by the event
  // That short read drained the socket: the next read waits even though data is already there
  // (its event not yet taken), instead of a recv that would have found nothing had it not.
  p.send("two");
  std::size_t n = 0;
  EXPECT_EQ(recv_now(p.reader, asio::buffer(p.buf), n, ec), RecvTry::Wait);
  bool suspended = false;
  EXPECT_EQ(p.read(ec, &suspended), "two");
  EXPECT_TRUE(suspended);
  EXPECT_FALSE(ec);
}

/// Data and the FIN arrive together, and the reactor takes their one event before the read:
/// the data is read, then the end of the stream, although no other event comes.
void expect_data_then_eof(Pair& p, const std::string& data) {
  p.send(data);
  p.writer.shutdown(tcp::socket::shutdown_send);
  p.settle();
  error_code ec;
  EXPECT_EQ(p.read(ec), data);
  EXPECT_FALSE(ec);
  EXPECT_EQ(p.read(ec), "");
  EXPECT_EQ(ec, asio::error::eof);
}

TEST(SocketIo, AFinBehindTheLastDataIsRead) {
  Pair p;
  p.settle_in();  // a short read would drain the socket, were the FIN not behind it
  expect_data_then_eof(p, "last");
}

TEST(SocketIo, AFinBehindTheFirstDataIsRead) {
  Pair p;
  p.drain();  // a new connection's first read waits: its request is not in yet
  expect_data_then_eof(p, "only");
}

TEST(SocketIo, AFinAfterTheLastReadIsAnEvent) {
  Pair p;
  p.settle_in();
  p.send("data");
  error_code ec;
  EXPECT_EQ(p.read(ec), "data");
  p.writer.shutdown(tcp::socket::shutdown_send);
  EXPECT_EQ(p.read(ec), "");
  EXPECT_EQ(ec, asio::error::eof);
}

TEST(SocketIo, DataThatCameWhileNobodyWaitedIsRead) {
  Pair p;
  p.settle_in();
  p.send("first");
  error_code ec;
  EXPECT_EQ(p.read(ec), "first");
  // More comes, and the reactor takes its event while no read is queued (a connection busy
  // with its upstream): the next read must not wait for another event.
  p.send("second");
  p.settle();
  std::size_t n = 0;
  EXPECT_EQ(recv_now(p.reader, asio::buffer(p.buf), n, ec), RecvTry::Done);
  EXPECT_EQ(std::string(p.buf, n), "second");
}

TEST(SocketIo, AResetIsReportedAsAnError) {
  Pair p;
  p.settle_in();
  p.writer.set_option(asio::socket_base::linger(true, 0));
  p.writer.close();  // RST
  error_code ec;
  EXPECT_EQ(p.read(ec), "");
  EXPECT_TRUE(ec == asio::error::connection_reset || ec == asio::error::eof) << ec.message();
}
#endif

TEST(SocketIo, AStreamThatNeverDrainsIsLeftToAsioEveryStreak) {
  Pair p;
  p.send(std::string(4 * portico::detail::kRecvStreak, 'x'));
  p.settle();
  std::size_t n = 0, in_place = 0;
  error_code ec;
  portico::detail::recv_streak = 0;
  // One byte at a time: every read is full, so none drains the socket.
  while (recv_now(p.reader, asio::buffer(p.buf, 1), n, ec) == RecvTry::Done &&
         in_place < 4 * portico::detail::kRecvStreak)
    ++in_place;
#ifdef PORTICO_RECV_READINESS
  EXPECT_EQ(in_place, portico::detail::kRecvStreak);
#else
  EXPECT_EQ(in_place, 0u);
#endif
}

#ifdef PORTICO_ACCEPT_RAW
/// Runs `io` until `done` (bounded: 10 s).
void run_until(asio::io_context& io, const bool& done) {
  auto work = asio::make_work_guard(io);
  io.restart();
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done && std::chrono::steady_clock::now() < until)
    io.run_one_for(std::chrono::milliseconds(100));
}

// accept_raw: the connection comes as a bare descriptor, non-blocking and close-on-exec, with
// the client's address; given to a socket (adopt_descriptor), Asio reads it and waits on it as
// on any other, without first making it non-blocking itself.
TEST(AcceptRaw, AConnectionComesBareAndIsGivenToAsioWhenItMustWait) {
  asio::io_context io{1};
  tcp::acceptor acc(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  acc.non_blocking(true);
  tcp::socket client(io);
  client.connect(acc.local_endpoint());
  bool done = false;
  error_code ec;
  portico::detail::RawAccept got;
  asio::co_spawn(
      io,
      [&]() -> task<void> {
        std::tie(ec, got) =
            co_await portico::detail::accept_raw(acc, asio::as_tuple(asio::use_awaitable));
        done = true;
      },
      [](std::exception_ptr e) { EXPECT_FALSE(e); });
  run_until(io, done);
  ASSERT_TRUE(done);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_TRUE(got.fd);
  EXPECT_TRUE(::fcntl(got.fd.get(), F_GETFL) & O_NONBLOCK);
  EXPECT_TRUE(::fcntl(got.fd.get(), F_GETFD) & FD_CLOEXEC);
  ASSERT_EQ(got.addr.ss_family, AF_INET);
  EXPECT_EQ(ntohs(reinterpret_cast<const sockaddr_in&>(got.addr).sin_port),
            client.local_endpoint().port());

  // Nothing sent yet: a read in place finds nothing, so the socket is adopted as drained and
  // the read waits for the reactor's event.
  char buf[16];
  std::size_t n = 0;
  ASSERT_EQ(portico::detail::recv_raw(got.fd.get(), asio::buffer(buf), n, ec), RecvTry::Wait);
  tcp::socket adopted(io);
  portico::detail::adopt_descriptor(adopted, tcp::v4(), got.fd, true, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_FALSE(got.fd) << "the socket owns the descriptor now";
  EXPECT_TRUE(adopted.native_non_blocking()) << "Asio knows it is non-blocking already";
  done = false;
  asio::co_spawn(
      io,
      [&]() -> task<void> {
        n = co_await recv_wait(adopted, asio::buffer(buf), RecvTry::Wait,
                               asio::redirect_error(asio::use_awaitable, ec));
        done = true;
      },
      [](std::exception_ptr e) { EXPECT_FALSE(e); });
  asio::write(client, asio::buffer(std::string("hello")));
  run_until(io, done);
  ASSERT_TRUE(done);
  EXPECT_FALSE(ec);
  EXPECT_EQ(std::string(buf, n), "hello");
}

// A pending accept_raw ends with operation_aborted when the listener closes; one still queued
// when its io_context goes is destroyed without a leak (ASan); an accepted descriptor nobody
// took is closed with its RawFd.
TEST(AcceptRaw, ClosingTheListenerEndsAPendingAccept) {
  asio::io_context io{1};
  tcp::acceptor acc(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  acc.non_blocking(true);
  bool done = false;
  error_code ec;
  asio::co_spawn(
      io,
      [&]() -> task<void> {
        auto [e, got] =
            co_await portico::detail::accept_raw(acc, asio::as_tuple(asio::use_awaitable));
        ec = e;
        EXPECT_FALSE(got.fd);
        done = true;
      },
      [](std::exception_ptr e) { EXPECT_FALSE(e); });
  io.poll();
  EXPECT_FALSE(done);
  acc.close();
  run_until(io, done);
  ASSERT_TRUE(done);
  EXPECT_EQ(ec, asio::error::operation_aborted);

  {
    asio::io_context io2{1};
    tcp::acceptor acc2(io2, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    acc2.non_blocking(true);
    asio::co_spawn(io2, portico::detail::accept_raw(acc2, asio::use_awaitable),
                   [](std::exception_ptr, portico::detail::RawAccept) {});
    io2.poll();
  }  // destroyed with the accept queued

  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  { portico::detail::RawFd owned(fds[0]); }
  EXPECT_EQ(::fcntl(fds[0], F_GETFD), -1) << "closed with its RawFd";
  ::close(fds[1]);
}
#endif

}  // namespace
