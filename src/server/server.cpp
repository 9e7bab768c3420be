#include <portico/server/server.hpp>

#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/log.hpp"
#include "server/worker.hpp"

namespace portico {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace detail {

/// Accepts on one listening socket until it is closed, handing connections to `svc`.
task<void> accept_loop(tcp::acceptor& acc, Service& svc, Worker& w, std::size_t listener) {
  // Learned once per listener instead of with two system calls per connection: the local
  // address (unless the listener is bound to a wildcard) and whether TCP_NODELAY is inherited.
  boost::system::error_code lec;
  const tcp::endpoint bound = acc.local_endpoint(lec);
  const SocketAddr local = !lec && !bound.address().is_unspecified()
                               ? SocketAddr::from_sockaddr(bound.data(), static_cast<socklen_t>(bound.size()))
                               : SocketAddr{};
  asio::ip::tcp::no_delay nd;
  acc.get_option(nd, lec);
  const bool nodelay = !lec && nd.value();
  tcp::endpoint peer;
  for (;;) {
    auto [ec, sock] = co_await acc.async_accept(peer, asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acc.is_open()) co_return;
      log::error_log().warn("accept on {}: {}", svc.name(), ec.message());
      if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
          ec.value() == ENFILE || ec == asio::error::no_memory) {
        // Out of descriptors: back off instead of spinning on the ready listener.
        asio::steady_timer t(acc.get_executor(), std::chrono::milliseconds(100));
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      continue;
    }
    Accepted a{std::move(sock), listener,
               SocketAddr::from_sockaddr(peer.data(), static_cast<socklen_t>(peer.size())), local, nodelay};
    svc.serve_connection(w, a);
  }
}

}  // namespace detail

namespace {
struct WorkerThread {
  explicit WorkerThread(std::size_t i)
      : ctx(1), guard(ctx->get_executor()), worker(ctx->get_executor(), i, true) {}
  ~WorkerThread() {
    // Everything bound to the io_context goes before it: listeners, pooled connections, and
    // finally (in ctx's destructor) the frames of connections a hard stop left suspended, which
    // still refer to `worker`.
    guard.reset();
    acceptors.clear();
    worker.clear_states();
    ctx.reset();
  }
  // ctx is a pointer so that it can be destroyed before `worker`.
  struct Ctx {
    explicit Ctx(int hint) : io(std::make_unique<asio::io_context>(hint)) {}
    asio::io_context* operator->() const { return io.get(); }
    asio::io_context& operator*() const { return *io; }
    void reset() { io.reset(); }
    std::unique_ptr<asio::io_context> io;
  } ctx;
  asio::executor_work_guard<asio::io_context::executor_type> guard;
  detail::Worker worker;
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  std::thread thread;
};

Result<std::unique_ptr<tcp::acceptor>> open_listener(asio::io_context& ctx, const SocketAddr& a,
                                                     int backlog) {
  auto acc = std::make_unique<tcp::acceptor>(ctx);
  boost::system::error_code ec;
  const tcp proto = a.family() == AF_INET6 ? tcp::v6() : tcp::v4();
  acc->open(proto, ec);
  if (!ec) acc->set_option(asio::socket_base::reuse_address(true), ec);
  // Accepted sockets inherit it, so connections need no setsockopt of their own.
  if (!ec) acc->set_option(asio::ip::tcp::no_delay(true), ec);
  if (!ec) {
    int one = 1;
    if (::setsockopt(acc->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
      ec.assign(errno, boost::system::system_category());
  }
  if (!ec) {
    tcp::endpoint ep;
    std::memcpy(ep.data(), a.data(), a.size());
    acc->bind(ep, ec);
  }
  if (!ec) acc->listen(backlog, ec);
  if (ec) return Error::internal(ErrorType::BindError, "listen on " + a.to_string() + ": " + ec.message());
  return acc;
}
}  // namespace

// ShutdownWatch: sleepers register their timer; trigger() cancels them on the watch's executor.
struct ShutdownWatch::State {
  explicit State(asio::any_io_executor e) : ex(std::move(e)) {}
  asio::any_io_executor ex;
  std::atomic<bool> stopped{false};
  std::vector<asio::steady_timer*> sleepers;          // touched on `ex` only
  std::vector<asio::cancellation_signal*> cancellers;  // touched on `ex` only
};

ShutdownWatch::ShutdownWatch(asio::any_io_executor ex) : s_(std::make_shared<State>(std::move(ex))) {}

bool ShutdownWatch::stopped() const noexcept { return s_->stopped.load(std::memory_order_acquire); }

task<bool> ShutdownWatch::sleep_for(std::chrono::steady_clock::duration d) const {
  return sleep_until(std::chrono::steady_clock::now() + d);
}

task<bool> ShutdownWatch::sleep_until(std::chrono::steady_clock::time_point t) const {
  auto s = s_;
  if (s->stopped.load(std::memory_order_acquire)) co_return false;
  asio::steady_timer timer(co_await asio::this_coro::executor, t);
  s->sleepers.push_back(&timer);
  // Registered until this frame ends, even when it is destroyed while suspended.
  struct Registration {
    State& st;
    asio::steady_timer* t;
    ~Registration() { st.sleepers.erase(std::find(st.sleepers.begin(), st.sleepers.end(), t)); }
  } reg{*s, &timer};
  co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  co_return !s->stopped.load(std::memory_order_acquire);
}

void ShutdownWatch::trigger() const {
  if (s_->stopped.exchange(true, std::memory_order_acq_rel)) return;
  asio::post(s_->ex, [s = s_] {
    for (auto* t : s->sleepers) t->cancel();
    // Emitting may complete an operation whose coroutine then unregisters its signal: iterate
    // over a copy.
    auto cancellers = s->cancellers;
    for (auto* c : cancellers)
      if (std::find(s->cancellers.begin(), s->cancellers.end(), c) != s->cancellers.end())
        c->emit(asio::cancellation_type::terminal);
  });
}

task<void> ShutdownWatch::cancel_on_shutdown(task<void> op) const {
  auto s = s_;
  if (s->stopped.load(std::memory_order_acquire)) co_return;
  asio::cancellation_signal signal;
  s->cancellers.push_back(&signal);
  struct Registration {
    State& st;
    asio::cancellation_signal* c;
    ~Registration() { st.cancellers.erase(std::find(st.cancellers.begin(), st.cancellers.end(), c)); }
  } reg{*s, &signal};
  co_await asio::co_spawn(co_await asio::this_coro::executor, std::move(op),
                          asio::bind_cancellation_slot(signal.slot(), asio::use_awaitable));
}

namespace {
/// The control thread: one io_context running the background services.
struct ControlThread {
  ControlThread() : ctx(1), guard(ctx.get_executor()), watch(ctx.get_executor()) {}
  asio::io_context ctx;
  asio::executor_work_guard<asio::io_context::executor_type> guard;
  ShutdownWatch watch;
  std::thread thread;

  void spawn(std::shared_ptr<BackgroundService> s) {
    auto* svc = s.get();
    asio::co_spawn(ctx, svc->start(watch), [s = std::move(s)](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        log::error_log().error("background service {}: {}", s->name(), x.what());
      } catch (...) {
        log::error_log().error("background service {} failed", s->name());
      }
    });
  }
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false;  // under mu: ctx.run() returned for good

  void run() {
    thread = std::thread([this] {
      for (;;) {
        try {
          ctx.run();
          break;
        } catch (const std::exception& e) {
          log::error_log().error("control thread: {}", e.what());
        }
      }
      std::lock_guard lk(mu);
      finished = true;
      cv.notify_all();
    });
  }
  /// Tells the services to stop and lets them finish (a check in flight is cancelled, a
  /// DNS query may take a little longer), for at most `patience`; then abandons what is left
  /// and joins.
  void stop(std::chrono::milliseconds patience) {
    watch.trigger();
    guard.reset();
    {
      std::unique_lock lk(mu);
      if (!cv.wait_for(lk, patience, [this] { return finished; })) {
        log::error_log().warn("background services still running {} ms after shutdown; "
                              "abandoning them",
                              patience.count());
        ctx.stop();
      }
    }
    if (thread.joinable()) thread.join();
  }
};
}  // namespace

struct Server::Impl {
  ServerConf conf;
  std::vector<std::shared_ptr<BackgroundService>> background;
  // Declared after `background`, so destroyed first: suspended service frames go before the
  // services they point into.
  std::unique_ptr<ControlThread> control;
  std::vector<std::shared_ptr<Service>> services;
  std::vector<std::unique_ptr<WorkerThread>> workers;
  bool started = false;
  std::atomic<bool> stopping{false};
  std::mutex mu;
  std::condition_variable cv;
  std::size_t running = 0;
  bool joined = false;
  // Signalled by a worker whenever its last connection closes (see wait_idle).
  mutable std::mutex idle_mu;
  mutable std::condition_variable idle_cv;

  void stop_workers(bool graceful) {
    for (auto& wt : workers) {
      asio::post(*wt->ctx, [w = wt.get(), graceful] {
        boost::system::error_code ec;
        for (auto& a : w->acceptors) a->close(ec);
        if (graceful) {
          w->worker.drain_all();
        } else {
          w->worker.abort_all();
          w->ctx->stop();
        }
        w->guard.reset();
      });
    }
  }
};

Server::Server(ServerConf conf) : impl_(std::make_unique<Impl>()) {
  impl_->conf = conf;
  if (impl_->conf.threads == 0) impl_->conf.threads = 1;
}

Server::~Server() {
  if (impl_->started) {
    shutdown(false);
    wait();
  }
}

void Server::add_service(std::shared_ptr<Service> s) { impl_->services.push_back(std::move(s)); }

void Server::add_background(std::shared_ptr<BackgroundService> s) {
  impl_->background.push_back(s);
  if (impl_->control)
    asio::post(impl_->control->ctx, [c = impl_->control.get(), s = std::move(s)]() mutable {
      c->spawn(std::move(s));
    });
}

Result<void> Server::start() {
  if (impl_->started) return ok();
  auto& I = *impl_;
  for (std::size_t i = 0; i < I.conf.threads; ++i) I.workers.push_back(std::make_unique<WorkerThread>(i));
  // Bind every listener on every worker (SO_REUSEPORT); port 0 resolves on the first worker.
  for (auto& svc : I.services) {
    auto addrs = svc->listen_addrs();
    for (std::size_t k = 0; k < addrs.size(); ++k) {
      SocketAddr addr = addrs[k];
      for (auto& wt : I.workers) {
        auto acc = open_listener(*wt->ctx, addr, I.conf.backlog);
        if (!acc) {
          I.workers.clear();
          return acc.error();
        }
        if (addr.port() == 0) {
          auto ep = (*acc)->local_endpoint();
          addr = SocketAddr::from_sockaddr(ep.data(), static_cast<socklen_t>(ep.size()));
        }
        wt->acceptors.push_back(std::move(*acc));
      }
      auto ep = I.workers.front()->acceptors.back()->local_endpoint();
      svc->set_local_endpoint(k, SocketAddr::from_sockaddr(ep.data(), static_cast<socklen_t>(ep.size())));
    }
  }
  for (auto& wt : I.workers) {
    wt->worker.set_on_empty([&I] {
      std::lock_guard lk(I.idle_mu);
      I.idle_cv.notify_all();
    });
    std::size_t a = 0;
    for (auto& svc : I.services) {
      svc->attach_worker(wt->worker);
      for (std::size_t k = 0; k < svc->listen_addrs().size(); ++k, ++a)
        asio::co_spawn(*wt->ctx, detail::accept_loop(*wt->acceptors[a], *svc, wt->worker, k),
                       asio::detached);
    }
  }
  I.running = I.workers.size();
  for (auto& wt : I.workers) {
    wt->thread = std::thread([this, w = wt.get()] {
      for (;;) {
        try {
          w->ctx->run();
          w->worker.clear_states();
          break;
        } catch (const std::exception& e) {
          log::error_log().error("worker {}: {}", w->worker.index(), e.what());
        }
      }
      std::lock_guard lk(impl_->mu);
      if (--impl_->running == 0) impl_->cv.notify_all();
    });
  }
  I.control = std::make_unique<ControlThread>();
  for (auto& s : I.background) I.control->spawn(s);
  I.control->run();
  I.started = true;
  log::error_log().info("portico started with {} worker(s)", I.workers.size());
  return ok();
}

void Server::shutdown(bool graceful) {
  if (!impl_->started) return;
  if (impl_->stopping.exchange(true) && graceful) return;
  if (impl_->control) impl_->control->watch.trigger();
  impl_->stop_workers(graceful);
}

void Server::wait() {
  auto& I = *impl_;
  if (!I.started || I.joined) return;
  {
    std::unique_lock lk(I.mu);
    if (!I.cv.wait_for(lk, I.conf.grace_period, [&] { return I.running == 0; })) {
      log::error_log().warn("grace period over with requests in flight; stopping");
      for (auto& wt : I.workers) wt->ctx->stop();
    }
  }
  for (auto& wt : I.workers)
    if (wt->thread.joinable()) wt->thread.join();
  if (I.control) {
    I.control->stop(std::chrono::milliseconds(2000));
    I.control.reset();
  }
  I.joined = true;
}

std::size_t Server::active_connections() const {
  std::size_t n = 0;
  for (auto& wt : impl_->workers) n += wt->worker.active();
  return n;
}

bool Server::wait_idle(std::chrono::milliseconds timeout) const {
  auto& I = *impl_;
  std::unique_lock lk(I.idle_mu);
  return I.idle_cv.wait_for(lk, timeout, [this] { return active_connections() == 0; });
}

int Server::run_forever(std::function<void()> on_ready) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGQUIT);
  // Workers inherit the mask, so only this thread takes the signals.
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  if (auto r = start(); !r) {
    log::error_log().critical("cannot start: {}", r.error().to_string());
    return 1;
  }
  if (on_ready) on_ready();
  timespec tick{0, 200 * 1000 * 1000};
  while (!impl_->stopping.load()) {
    int sig = sigtimedwait(&set, nullptr, &tick);
    if (sig == SIGINT) {
      log::error_log().info("SIGINT: exiting now");
      shutdown(false);
    } else if (sig == SIGTERM) {
      log::error_log().info("SIGTERM: graceful shutdown, grace period {} ms",
                            impl_->conf.grace_period.count());
      shutdown(true);
    } else if (sig == SIGHUP) {
      log::error_log().info("SIGHUP: reloading TLS certificates");
      for (auto& svc : impl_->services) (void)svc->reload_tls();
    } else if (sig == SIGQUIT) {
      log::error_log().info("SIGQUIT ignored (graceful upgrade is not available yet)");
    }
  }
  wait();
  log::error_log().info("portico stopped");
  return 0;
}

}  // namespace portico
