// serve(): run a proxy service on an io_context the host application owns.
#pragma once

#include <memory>

#include <boost/asio/ip/tcp.hpp>

#include <portico/core/task.hpp>
#include <portico/proxy/service.hpp>

namespace portico {

/// Accepts connections on `acceptor` and serves them with `service` on the acceptor's executor,
/// until the acceptor is closed or the coroutine is cancelled. `co_spawn` it on your own
/// io_context; no Server is needed. The acceptor must already be open and listening; it is made
/// non-blocking (connections are taken with accept4 from the reactor). The
/// io_context must be run by one thread: what portico keeps per worker (its upstream pool, its
/// parked connections, its batch of sends) is that thread's alone. With batch_upstream_sends or
/// batch_response_sends and liburing, the first request proxied makes an io_uring ring on that
/// thread; when it is closed the kernel may interrupt one of the thread's blocking system calls
/// with EINTR.
task<void> serve(boost::asio::ip::tcp::acceptor& acceptor, std::shared_ptr<Service> service);

}  // namespace portico
