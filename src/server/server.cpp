#include <portico/server/server.hpp>

#include <portico/observe/access_log.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <latch>
#include <mutex>
#include <optional>
#include <set>
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

#include "core/accept_raw.hpp"
#include "core/log.hpp"
#include "core/signal.hpp"
#include "core/socket_io.hpp"
#include "server/daemon.hpp"
#include "server/upgrade.hpp"
#include "server/worker.hpp"

namespace portico {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace detail {

namespace {
/// What the coroutines accepting on one listener share.
struct AcceptShared {
  AcceptShared(tcp::acceptor& a, Service& s, Worker& wk, std::size_t l)
      : acc(a), svc(s), w(wk), listener(l), done(a.get_executor()) {}
  tcp::acceptor& acc;
  Service& svc;
  Worker& w;
  std::size_t listener;
  SocketAddr local;  // the bound address, unless the listener is bound to a wildcard
  bool nodelay = false;
  std::size_t waiting = 0;  // runners waiting in accept
  bool closed = false;
  asio::steady_timer done;  // accept_loop waits on it until the listener closes

  void close() {
    closed = true;
    done.cancel();
  }
};

/// Runners parked in accept beyond which one that ends a connection ends too.
constexpr std::size_t kMaxWaitingRunners = 64;

/// Accepts a connection and serves it in place, then accepts the next. Before serving, a runner
/// that leaves nobody waiting in accept starts another: there is always one accepting, and as
/// many runners as connections at the busiest moment (up to kMaxWaitingRunners kept after). A
/// coroutine started per connection (co_spawn, its frames, its entry point) cost more than the
/// rest of accepting it; and with several waiting, only the first tries accept() in vain.
task<void> accept_runner(std::shared_ptr<AcceptShared> sh) {
#ifndef PORTICO_ACCEPT_RAW
  tcp::endpoint peer;
#endif
  while (!sh->closed) {
    ++sh->waiting;
#ifdef PORTICO_ACCEPT_RAW
    // Not registered with the reactor until it has to wait (H1Connection), or given to Asio at
    // once for other services (Accepted::adopt).
    auto [ec, got] = co_await accept_raw(sh->acc, asio::as_tuple(asio::use_awaitable));
#else
    auto [ec, sock] = co_await sh->acc.async_accept(peer, asio::as_tuple(asio::use_awaitable));
#endif
    --sh->waiting;
    if (ec) {
      if (ec == asio::error::operation_aborted || !sh->acc.is_open()) break;
      log::error_log().warn("accept on {}: {}", sh->svc.name(), ec.message());
      if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
          ec.value() == ENFILE || ec == asio::error::no_memory) {
        // Out of descriptors: back off instead of spinning on the ready listener.
        asio::steady_timer t(sh->acc.get_executor(), std::chrono::milliseconds(100));
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      continue;
    }
    if (sh->waiting == 0)
      asio::co_spawn(sh->acc.get_executor(), accept_runner(sh),
                     [](std::exception_ptr e) { log::ended_by(e, "accept runner"); });
#ifdef PORTICO_ACCEPT_RAW
    Accepted a{
        std::move(sh->w.socket_prototype()),
        sh->listener,
        SocketAddr::from_sockaddr(reinterpret_cast<const sockaddr*>(&got.addr), got.addr_len),
        sh->local,
        sh->nodelay,
        0,
        nullptr,
        std::move(got.fd)};
#else
    own_descriptor(sock);
    Accepted a{std::move(sock),
               sh->listener,
               SocketAddr::from_sockaddr(peer.data(), static_cast<socklen_t>(peer.size())),
               sh->local,
               sh->nodelay,
               0,
               nullptr,
               {}};
#endif
    try {
      co_await sh->svc.run_connection(sh->w, a);
    } catch (...) {
      log::ended_by(std::current_exception(), "connection");
    }
    if (sh->waiting >= kMaxWaitingRunners) co_return;
  }
  sh->close();
}
}  // namespace

/// Accepts on one listening socket until it is closed, handing connections to `svc` (served by
/// accept_runner coroutines, which may outlive this one with their last connections).
task<void> accept_loop(tcp::acceptor& acc, Service& svc, Worker& w, std::size_t listener) {
  auto sh = std::make_shared<AcceptShared>(acc, svc, w, listener);
  // Learned once per listener instead of with two system calls per connection: the local
  // address (unless the listener is bound to a wildcard) and whether TCP_NODELAY is inherited.
  boost::system::error_code lec;
  const tcp::endpoint bound = acc.local_endpoint(lec);
  if (!lec && !bound.address().is_unspecified())
    sh->local = SocketAddr::from_sockaddr(bound.data(), static_cast<socklen_t>(bound.size()));
  asio::ip::tcp::no_delay nd;
  acc.get_option(nd, lec);
  sh->nodelay = !lec && nd.value();
#ifdef PORTICO_ACCEPT_RAW
  // accept_raw tries accept4 as soon as it is queued: the listener must not block.
  acc.non_blocking(true, lec);
  if (lec) log::error_log().warn("listener of {}: non-blocking: {}", svc.name(), lec.message());
#endif
  asio::co_spawn(acc.get_executor(), accept_runner(sh),
                 [](std::exception_ptr e) { log::ended_by(e, "accept runner"); });
  sh->done.expires_at(asio::steady_timer::time_point::max());
  while (!sh->closed) co_await sh->done.async_wait(asio::as_tuple(asio::use_awaitable));
}

bool Accepted::adopt() { return adopt_accepted(socket, raw, local, peer, false); }

}  // namespace detail

namespace {
struct WorkerThread {
  explicit WorkerThread(std::size_t i)
      : ctx(kWorkerConcurrency), guard(ctx->get_executor()), worker(ctx->get_executor(), i, true) {
    detail::SignalRegistry::single_thread(*ctx);  // one thread runs it: see below
  }
  // One thread runs a worker's io_context, and only it touches the worker's sockets: what other
  // threads ask of a worker is posted to it (drains, stops), and a connection handed to another
  // worker leaves as a bare descriptor (Pool::take_remote). So Asio need not lock each socket's
  // reactor state for every operation (about ten lock/unlock pairs per proxied request); posts
  // and timers keep their locks. Nor need the waiting Signals be listed under a lock (up to
  // four lock/unlock pairs per HTTP/2 request).
  static constexpr int kWorkerConcurrency = BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO;
  ~WorkerThread() {
    // Everything bound to the io_context goes before it: listeners, pooled connections, and
    // finally (in ctx's destructor) the frames of connections a hard stop left suspended, which
    // still refer to `worker`.
    guard.reset();
    listeners.clear();
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
  /// A listening socket of this worker: which service and listener (add_tcp order) it serves.
  /// A worker has one per listener, or several after an upgrade from a process with more
  /// workers.
  struct Listening {
    std::unique_ptr<tcp::acceptor> acc;
    Service* svc = nullptr;
    std::size_t k = 0;
  };
  std::vector<Listening> listeners;
  std::thread thread;
};

/// An inherited fd that is a listening TCP socket bound to `addr`, or -1 (closed).
bool is_listener_on(int fd, const SocketAddr& addr) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  int listening = 0;
  socklen_t ilen = sizeof listening;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return false;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ilen) != 0 || !listening) return false;
  return SocketAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len).to_string() ==
         addr.to_string();
}

Result<std::unique_ptr<tcp::acceptor>> open_listener(asio::io_context& ctx, const SocketAddr& a,
                                                     int backlog, std::chrono::seconds defer) {
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
  if (!ec && defer.count() > 0) {
    const int secs = static_cast<int>(defer.count());
    if (::setsockopt(acc->native_handle(), IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs) != 0)
      ec.assign(errno, boost::system::system_category());
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
      log::ended_by(e, s->name());
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
  // reload() may change them while wait() reads them.
  std::atomic<std::chrono::milliseconds::rep> grace_ms{0};
  std::atomic<std::chrono::milliseconds::rep> shutdown_timeout_ms{0};
  // What runs: the configuration minus the changes reload() could not apply. Under reload_mu.
  std::mutex reload_mu;
  ServerConfig running_config;
  // The listening sockets send_listeners() hands over. `upgrade_mu` keeps shutdown() from
  // closing them while they are being sent.
  std::mutex upgrade_mu;
  std::vector<detail::ListenerFd> listen_fds;
  // A daemon whose stderr is the error log file: SIGUSR1 points fd 2 at the new file as well.
  bool stderr_is_log = false;


  void stop_workers(bool graceful) {
    for (auto& wt : workers) {
      asio::post(*wt->ctx, [w = wt.get(), graceful] {
        boost::system::error_code ec;
        for (auto& l : w->listeners) l.acc->close(ec);
        if (graceful) {
          // Idle keep-alive connections close at once; one accepted just before whose first
          // request has not arrived yet gets a moment to send it (H1Connection::drain).
          w->worker.drain_all();
        } else {
          w->worker.abort_all();
          w->ctx->stop();
        }
        w->guard.reset();
      });
    }
  }

  /// Runs `fn` while every worker thread is parked in a handler, so that it may write what
  /// connections read without locks (service options). False when a worker did not park
  /// within `patience`; `fn` has not run then.
  bool with_workers_paused(const std::function<void()>& fn, std::chrono::milliseconds patience) {
    struct Gate {
      std::mutex mu;
      std::condition_variable cv;
      std::size_t parked = 0;
      bool open = false;
    };
    auto g = std::make_shared<Gate>();
    for (auto& wt : workers)
      asio::post(*wt->ctx, [g] {
        std::unique_lock lk(g->mu);
        ++g->parked;
        g->cv.notify_all();
        g->cv.wait(lk, [&] { return g->open; });
      });
    std::unique_lock lk(g->mu);
    const bool all =
        g->cv.wait_for(lk, patience, [&] { return g->parked == workers.size(); });
    if (all) fn();
    g->open = true;
    g->cv.notify_all();
    return all;
  }

  Result<void> bind_all(detail::ListenerHandover* handover);
  void record_listen_fds();
};

namespace {
/// The inherited sockets bound to `addr`, taken out of `h`.
std::vector<int> take_inherited(detail::ListenerHandover& h, const SocketAddr& addr) {
  std::vector<int> out;
  if (addr.port() == 0) return out;  // "any port" never names an old socket
  const std::string key = addr.to_string();
  for (auto& f : h.fds()) {
    if (f.fd < 0 || f.address != key) continue;
    if (is_listener_on(f.fd, addr)) {
      out.push_back(f.fd);
    } else {
      log::error_log().warn("upgrade: inherited fd for {} is not a socket listening there; "
                            "ignored", key);
      ::close(f.fd);
    }
    f.fd = -1;
  }
  return out;
}
}  // namespace

Result<void> Server::Impl::bind_all(detail::ListenerHandover* handover) {
  // Bind (or adopt) every listener on every worker (SO_REUSEPORT); port 0 resolves on the first
  // worker.
  for (auto& svc : services) {
    auto addrs = svc->listen_addrs();
    for (std::size_t k = 0; k < addrs.size(); ++k) {
      SocketAddr addr = addrs[k];
      const tcp proto = addr.family() == AF_INET6 ? tcp::v6() : tcp::v4();
      std::vector<int> inherited;
      if (handover) inherited = take_inherited(*handover, addr);
      if (!inherited.empty()) {
        // Every old socket keeps being accepted on (its queue holds connections the kernel
        // already assigned to it): spread them over the workers; with fewer sockets than
        // workers, workers share them through dup()s.
        const std::size_t n = std::max(inherited.size(), workers.size());
        for (std::size_t i = 0; i < n; ++i) {
          int fd = i < inherited.size() ? inherited[i] : ::fcntl(inherited[i % inherited.size()], F_DUPFD_CLOEXEC, 0);
          auto acc = std::make_unique<tcp::acceptor>(*workers[i % workers.size()]->ctx);
          boost::system::error_code ec;
          if (fd >= 0) acc->assign(proto, fd, ec);
          if (fd < 0 || ec) {
            if (fd >= 0) ::close(fd);
            for (std::size_t j = i + 1; j < inherited.size(); ++j) ::close(inherited[j]);
            return Error::internal(ErrorType::BindError,
                                   "upgrade: adopting the socket of " + addr.to_string() + ": " +
                                       (ec ? ec.message() : std::string(std::strerror(errno))));
          }
          workers[i % workers.size()]->listeners.push_back({std::move(acc), svc.get(), k});
        }
        log::error_log().info("upgrade: {} took over {} listening socket(s) on {}", svc->name(),
                              inherited.size(), addr.to_string());
      } else {
        for (auto& wt : workers) {
          auto acc = open_listener(*wt->ctx, addr, conf.backlog, conf.defer_accept);
          if (!acc) return acc.error();
          if (addr.port() == 0) {
            auto ep = (*acc)->local_endpoint();
            addr = SocketAddr::from_sockaddr(ep.data(), static_cast<socklen_t>(ep.size()));
          }
          wt->listeners.push_back({std::move(*acc), svc.get(), k});
        }
      }
      const WorkerThread::Listening* first = nullptr;
      for (auto& wt : workers)
        for (auto& l : wt->listeners)
          if (!first && l.svc == svc.get() && l.k == k) first = &l;
      auto ep = first->acc->local_endpoint();
      svc->set_local_endpoint(k, SocketAddr::from_sockaddr(ep.data(), static_cast<socklen_t>(ep.size())));
    }
  }
  if (handover)
    for (auto& f : handover->fds())
      if (f.fd >= 0)
        log::error_log().warn("upgrade: inherited listener {} is not configured here; closing it "
                              "(connections waiting on it are lost)",
                              f.address);
  return ok();
}

void Server::Impl::record_listen_fds() {
  // One entry per socket: after an upgrade, workers may share a socket through dup()s.
  std::set<std::pair<dev_t, ino_t>> seen;
  std::lock_guard lk(upgrade_mu);
  listen_fds.clear();
  for (auto& wt : workers)
    for (auto& l : wt->listeners) {
      struct stat st {};
      const int fd = l.acc->native_handle();
      if (::fstat(fd, &st) == 0 && !seen.insert({st.st_dev, st.st_ino}).second) continue;
      auto ep = l.acc->local_endpoint();
      listen_fds.push_back(
          {SocketAddr::from_sockaddr(ep.data(), static_cast<socklen_t>(ep.size())).to_string(), fd});
    }
}

Server::Server(ServerConf conf) : impl_(std::make_unique<Impl>()) {
  impl_->conf = std::move(conf);
  if (impl_->conf.threads == 0) impl_->conf.threads = 1;
  impl_->grace_ms = impl_->conf.grace_period.count();
  impl_->shutdown_timeout_ms = impl_->conf.graceful_shutdown_timeout.count();
  if (impl_->conf.config) impl_->running_config = *impl_->conf.config;
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
  std::optional<detail::ListenerHandover> handover;
  if (I.conf.upgrade) {
    log::error_log().info("upgrade: waiting for the listening sockets on {}", I.conf.upgrade_sock);
    auto h = detail::ListenerHandover::receive(
        I.conf.upgrade_sock, std::chrono::seconds(std::max<std::size_t>(I.conf.upgrade_retries, 1)),
        detail::uid_of(I.conf.user));
    if (!h) return h.error();
    log::error_log().info("upgrade: received {} listening socket(s)", h->fds().size());
    handover = std::move(*h);
  }
  for (std::size_t i = 0; i < I.conf.threads; ++i) I.workers.push_back(std::make_unique<WorkerThread>(i));
  if (auto b = I.bind_all(handover ? &*handover : nullptr); !b) {
    I.workers.clear();
    return b.error();
  }
  // Bound (privileged ports need it), no thread started yet: the moment to drop privileges.
  if (auto d = detail::drop_privileges(I.conf.user, I.conf.group); !d) {
    I.workers.clear();
    return d.error();
  }
  I.record_listen_fds();
  for (auto& wt : I.workers) {
    wt->worker.set_on_empty([&I] {
      std::lock_guard lk(I.idle_mu);
      I.idle_cv.notify_all();
    });
    for (auto& svc : I.services) svc->attach_worker(wt->worker);
    for (auto& l : wt->listeners)
      asio::co_spawn(*wt->ctx, detail::accept_loop(*l.acc, *l.svc, wt->worker, l.k), asio::detached);
  }
  I.running = I.workers.size();
  std::latch ready(static_cast<std::ptrdiff_t>(I.workers.size()));
  for (auto& wt : I.workers) {
    wt->thread = std::thread([this, w = wt.get(), &ready] {
      // Its io_uring ring for batched sends (batch_upstream_sends, batch_response_sends), made by
      // the thread that uses it (io_uring ties work to the task that set it up) and before start()
      // returns: a descriptor the worker holds for its life, not one that appears later.
      w->worker.send_batch();
      ready.count_down();
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
  ready.wait();
  I.control = std::make_unique<ControlThread>();
  for (auto& s : I.background) I.control->spawn(s);
  I.control->run();
  I.started = true;
  // The accept loops are posted to running workers: the old process may stop accepting.
  if (handover) handover->confirm();
  log::error_log().info("portico started with {} worker(s)", I.workers.size());
  return ok();
}

void Server::shutdown(bool graceful) {
  if (!impl_->started) return;
  {
    std::lock_guard lk(impl_->upgrade_mu);
    if (impl_->stopping.exchange(true) && graceful) return;
  }
  if (impl_->control) impl_->control->watch.trigger();
  impl_->stop_workers(graceful);
}

void Server::wait() {
  auto& I = *impl_;
  if (!I.started || I.joined) return;
  {
    std::unique_lock lk(I.mu);
    const std::chrono::milliseconds grace(I.grace_ms.load());
    if (!I.cv.wait_for(lk, grace, [&] { return I.running == 0; })) {
      log::error_log().warn("grace period ({} ms) over with requests in flight; stopping",
                            grace.count());
      for (auto& wt : I.workers) wt->ctx->stop();
    }
  }
  for (auto& wt : I.workers)
    if (wt->thread.joinable()) wt->thread.join();
  if (I.control) {
    I.control->stop(std::chrono::milliseconds(I.shutdown_timeout_ms.load()));
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

Result<void> Server::send_listeners(const std::string& path) {
  auto& I = *impl_;
  if (!I.started) return Error::internal(ErrorType::InternalError, "upgrade: server not started");
  // Held while sending so that shutdown() cannot close the sockets under sendmsg.
  std::lock_guard lk(I.upgrade_mu);
  if (I.stopping.load())
    return Error::internal(ErrorType::InternalError, "upgrade: server is stopping");
  return detail::send_listeners(path, I.listen_fds, I.conf.upgrade_retries,
                                std::chrono::seconds(10));
}

namespace {
/// The part of `next` a running server takes; everything else stays as in `running`.
ServerConfig reloadable_part(const ServerConfig& running, const ServerConfig& next) {
  ServerConfig out = running;
  out.log_level = next.log_level;
  out.error_log = next.error_log;
  out.grace_period = next.grace_period;
  out.graceful_shutdown_timeout = next.graceful_shutdown_timeout;
  // The upstream pools are built once per worker with their sizes: those need a restart.
  HttpServerOptions h = next.http;
  h.pool_max_idle_per_key = running.http.pool_max_idle_per_key;
  h.pool_max_idle_total = running.http.pool_max_idle_total;
  h.pool_cross_worker = running.http.pool_cross_worker;
  h.pool_steal_timeout = running.http.pool_steal_timeout;
  out.http = h;
  // Listener TLS: the files are re-read; the other TLS settings are fixed per listener.
  return out;
}
}  // namespace

Result<ReloadOutcome> Server::reload(const ServerConfig& next) {
  auto& I = *impl_;
  std::lock_guard lk(I.reload_mu);
  const ServerConfig target = reloadable_part(I.running_config, next);
  ReloadOutcome out;
  out.applied = changed_keys(I.running_config, target);
  out.need_restart = changed_keys(target, next);

  const std::string old_log = log::error_log_target();
  if (next.error_log != old_log)
    if (auto r = log::set_error_log(next.error_log); !r) return r.error();
  {
    auto apply = [&] {
      for (auto& svc : I.services)
        if (auto* h = dynamic_cast<HttpProxyService*>(svc.get())) h->mutable_options() = target.http;
    };
    if (!I.started || I.joined) {
      apply();
    } else if (!I.with_workers_paused(apply, std::chrono::milliseconds(2000))) {
      if (next.error_log != old_log) (void)log::set_error_log(old_log);
      return Error::internal(ErrorType::InternalError,
                             "reload: a worker did not pause within 2 s to take the new limits; "
                             "nothing changed");
    }
  }
  apply_logging(target);
  I.grace_ms = std::chrono::duration_cast<std::chrono::milliseconds>(target.grace_period).count();
  I.shutdown_timeout_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(target.graceful_shutdown_timeout).count();
  I.running_config = target;
  for (auto& svc : I.services) (void)svc->reload_tls();
  return out;
}

namespace {
std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& k : v) s += (s.empty() ? "" : ", ") + k;
  return s.empty() ? "none" : s;
}
}  // namespace

int Server::run_forever(std::function<void()> on_ready) {
  auto& I = *impl_;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGQUIT);
  sigaddset(&set, SIGUSR1);
  // Workers inherit the mask, so only this thread takes the signals.
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  if (!I.conf.error_log.empty() && log::error_log_target() != I.conf.error_log) {
    if (auto r = log::set_error_log(I.conf.error_log); !r) {
      log::error_log().critical("cannot start: {}", r.error().context());
      return 1;
    }
  }
  detail::DaemonReady ready;
  if (I.conf.daemon && !I.started) {
    detail::DaemonOptions d;
    d.pid_file = I.conf.pid_file;
    d.working_directory = I.conf.working_directory;
    d.error_log = I.conf.error_log;
    d.ready_timeout = I.conf.daemon_ready_timeout;
    auto r = detail::daemonize(d);  // returns in the daemon only
    if (!r) {
      log::error_log().critical("cannot start: {}", r.error().context());
      return 1;
    }
    ready = std::move(*r);
    I.stderr_is_log = !I.conf.error_log.empty() && I.conf.error_log != "syslog";
  }
  struct PidFile {
    const std::string* path;
    ~PidFile() {
      if (path) detail::remove_pid_file(*path);
    }
  } pid_file{I.conf.daemon ? &I.conf.pid_file : nullptr};
  if (auto r = start(); !r) {
    const std::string msg = "cannot start: " + std::string(r.error().context());
    log::error_log().critical("{}", msg);
    ready.failed(msg);
    return 1;
  }
  if (on_ready) on_ready();
  ready.ready();
  timespec tick{0, 200 * 1000 * 1000};
  while (!I.stopping.load()) {
    int sig = sigtimedwait(&set, nullptr, &tick);
    if (sig == SIGINT) {
      log::error_log().info("SIGINT: exiting now");
      shutdown(false);
    } else if (sig == SIGTERM) {
      log::error_log().info("SIGTERM: graceful shutdown, grace period {} ms", I.grace_ms.load());
      shutdown(true);
    } else if (sig == SIGHUP) {
      if (!I.conf.reload_config) {
        log::error_log().info("SIGHUP: reloading TLS certificates");
        for (auto& svc : I.services) (void)svc->reload_tls();
        continue;
      }
      log::error_log().info("SIGHUP: reloading the configuration");
      auto next = I.conf.reload_config();
      if (!next) {
        log::error_log().error("SIGHUP: configuration not reloaded, the running one stays:\n{}",
                               next.error().context());
        continue;
      }
      auto r = reload(*next);
      if (!r) {
        log::error_log().error("SIGHUP: reload failed, the running configuration stays: {}",
                               r.error().context());
        continue;
      }
      log::error_log().info("SIGHUP: configuration reloaded; changed: {}", joined(r->applied));
      if (!r->need_restart.empty())
        log::error_log().warn("SIGHUP: changed keys that need a restart (or an upgrade) and were "
                              "not applied: {}",
                              joined(r->need_restart));
    } else if (sig == SIGUSR1) {
      observe::reopen_access_logs();
      if (auto r = log::reopen_error_log(I.stderr_is_log); !r)
        log::error_log().error("SIGUSR1: {}", r.error().context());
      else
        log::error_log().info("SIGUSR1: error log reopened");
    } else if (sig == SIGQUIT) {
      log::error_log().info("SIGQUIT: handing the listening sockets over on {}",
                            I.conf.upgrade_sock);
      if (auto r = send_listeners(I.conf.upgrade_sock); !r) {
        log::error_log().error("SIGQUIT: {}; still serving", r.error().context());
        continue;
      }
      log::error_log().info("SIGQUIT: the new process accepts now; draining, grace period {} ms",
                            I.grace_ms.load());
      shutdown(true);
    }
  }
  wait();
  log::error_log().info("portico stopped");
  return 0;
}

}  // namespace portico
