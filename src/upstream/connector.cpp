#include <netinet/in.h>
#include <netinet/tcp.h>

#include <boost/asio/error.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>

#include "tls/tls.hpp"
#include "upstream/connection.hpp"

namespace portico::detail {

namespace asio = boost::asio;
using generic_ep = asio::generic::stream_protocol::endpoint;

namespace {
Error connect_error(const boost::system::error_code& ec, bool timed_out, const HttpPeer& peer) {
  ErrorType t = ErrorType::ConnectError;
  if (timed_out)
    t = ErrorType::ConnectTimedout;
  else if (ec == asio::error::connection_refused)
    t = ErrorType::ConnectRefused;
  else if (ec == asio::error::host_unreachable || ec == asio::error::network_unreachable)
    t = ErrorType::ConnectNoRoute;
  Error e = Error::upstream(t, "connecting to " + peer.address.to_string() +
                                   (timed_out ? "" : ": " + ec.message()));
  e.set_retry(true);
  return e;
}
}  // namespace

task<Result<UpstreamConnPtr>> connect_upstream(const HttpPeer& peer, Watchdog& wd,
                                               http1::ParserLimits limits,
                                               std::string_view preamble,
                                               const std::shared_ptr<ClientTls>& tls,
                                               std::uint64_t key) {
  const auto started = std::chrono::steady_clock::now();
  auto ex = co_await asio::this_coro::executor;
  auto c = std::make_unique<UpstreamConn>(ex, limits);
  c->key = peer.reuse_hash();
  c->peer = peer.address;
  c->idle_timeout = peer.options.idle_timeout;
  const int family = peer.address.family();
  const int protocol = peer.address.is_unix() ? 0 : IPPROTO_TCP;
  c->family = family;
  c->protocol = protocol;
  boost::system::error_code ec;
  c->sock.open(asio::generic::stream_protocol(family, protocol), ec);
  if (ec) {
    Error e = Error::internal(ErrorType::SocketError, "socket(): " + ec.message());
    co_return e;
  }
  if (!peer.address.is_unix()) {
    int one = 1;
    ::setsockopt(c->fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (auto ka = peer.options.tcp_keepalive.count(); ka > 0) {
      auto secs = [](long ms) { return static_cast<int>(std::clamp<long>(ms / 1000, 1, 32767)); };
      int idle = secs(ka);
      ::setsockopt(c->fd(), SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
      ::setsockopt(c->fd(), IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
      if (auto iv = peer.options.tcp_keepalive_interval.count(); iv > 0) {
        int interval = secs(iv);
        ::setsockopt(c->fd(), IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
      }
      if (peer.options.tcp_keepalive_count > 0) {
        int count = static_cast<int>(std::min<std::uint32_t>(peer.options.tcp_keepalive_count, 127));
        ::setsockopt(c->fd(), IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
      }
    }
  }
  if (peer.options.bind_to) {
    c->sock.bind(generic_ep(peer.options.bind_to->data(), peer.options.bind_to->size()), ec);
    if (ec) {
      Error e = Error::internal(ErrorType::BindError,
                                "bind to " + peer.options.bind_to->to_string() + ": " + ec.message());
      co_return e;
    }
  }
  auto timeout = peer.options.connection_timeout;
  if (peer.options.total_connection_timeout.count() > 0 &&
      (timeout.count() <= 0 || peer.options.total_connection_timeout < timeout))
    timeout = peer.options.total_connection_timeout;
  wd.arm(Watchdog::UsRead, timeout,
         &Watchdog::cancel_io<stream_socket>, &c->sock);
  co_await c->sock.async_connect(generic_ep(peer.address.data(), peer.address.size()),
                                 asio::redirect_error(asio::use_awaitable, ec));
  const bool timed_out = wd.expired(Watchdog::UsRead);
  wd.disarm(Watchdog::UsRead);
  if (ec || timed_out) co_return connect_error(ec, timed_out, peer);
  generic_ep local = c->sock.local_endpoint(ec);
  if (!ec) c->local = SocketAddr::from_sockaddr(local.data(), static_cast<socklen_t>(local.size()));
  if (!preamble.empty()) {
    wd.arm(Watchdog::UsWrite, peer.options.write_timeout,
           &Watchdog::cancel_io<stream_socket>, &c->sock);
    co_await asio::async_write(c->sock, asio::buffer(preamble),
                               asio::redirect_error(asio::use_awaitable, ec));
    const bool write_timed_out = wd.expired(Watchdog::UsWrite);
    wd.disarm(Watchdog::UsWrite);
    if (ec || write_timed_out) {
      Error e = Error::upstream(write_timed_out ? ErrorType::WriteTimedout : ErrorType::WriteError,
                                "sending the PROXY protocol header to " + peer.address.to_string() +
                                    (write_timed_out ? "" : ": " + ec.message()));
      e.set_retry(true);
      co_return e;
    }
  }
  if (peer.tls) {
    if (!tls) co_return Error::internal(ErrorType::TLSHandshakeFailure, "no TLS client context");
    auto ssl = tls->new_ssl(peer, key);
    if (!ssl) co_return ssl.error();
    c->tls = std::make_unique<tls_stream>(c->sock, *ssl);
    c->tls_owner = tls;
    // The handshake gets what is left of total_connection_timeout, else connection_timeout.
    auto budget = peer.options.connection_timeout;
    if (peer.options.total_connection_timeout.count() > 0)
      budget = std::chrono::duration_cast<Millis>(peer.options.total_connection_timeout -
                                                   (std::chrono::steady_clock::now() - started));
    if (budget.count() <= 0) budget = Millis(1);
    wd.arm(Watchdog::UsRead, budget, &Watchdog::cancel_io<stream_socket>, &c->sock);
    co_await c->tls->handshake(false, ec);
    const bool hs_timed_out = wd.expired(Watchdog::UsRead);
    wd.disarm(Watchdog::UsRead);
    if (hs_timed_out || ec) {
      const long verify = SSL_get_verify_result(c->tls->native_handle());
      if (!hs_timed_out && verify != X509_V_OK) {
        // The certificate was refused: another attempt at the same peer would fail the same way.
        co_return Error::upstream(ErrorType::InvalidCert,
                                  "TLS to " + peer.to_string() + ": certificate refused: " +
                                      X509_verify_cert_error_string(verify));
      }
      Error e = Error::upstream(hs_timed_out ? ErrorType::TLSHandshakeTimedout : ErrorType::TLSHandshakeFailure,
                                "TLS handshake with " + peer.to_string() +
                                    (hs_timed_out ? std::string(" timed out") : ": " + ec.message()));
      e.set_retry(true);
      co_return e;
    }
    tls->count_handshake(c->tls->native_handle());
  }
  co_return c;
}

}  // namespace portico::detail
