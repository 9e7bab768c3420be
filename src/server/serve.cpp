#include <portico/server/serve.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "server/worker.hpp"

namespace portico {

namespace asio = boost::asio;

namespace detail {
task<void> accept_loop(asio::ip::tcp::acceptor& acc, Service& svc, Worker& w, std::size_t listener);
}

task<void> serve(asio::ip::tcp::acceptor& acceptor, std::shared_ptr<Service> service) {
  auto ex = co_await asio::this_coro::executor;
  detail::Worker worker(ex, 0);
  service->attach_worker(worker);
  auto ep = acceptor.local_endpoint();
  if (service->local_endpoints().empty())
    service->set_local_endpoint(0, SocketAddr::from_sockaddr(ep.data(), static_cast<socklen_t>(ep.size())));
  co_await detail::accept_loop(acceptor, *service, worker, 0);
  // The acceptor closed: let open connections finish their request, then return. Connections
  // refer to `worker`, so this frame outlives them.
  asio::steady_timer all_closed(ex, asio::steady_timer::time_point::max());
  worker.set_on_empty([&all_closed] { all_closed.cancel(); });
  worker.drain_all();
  while (worker.active() > 0)
    co_await all_closed.async_wait(asio::as_tuple(asio::use_awaitable));
  worker.set_on_empty(nullptr);
}

}  // namespace portico
