#include <unistd.h>

#include <algorithm>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "upstream/connection.hpp"

namespace portico {

const char* to_string(PoolEviction why) noexcept {
  switch (why) {
    case PoolEviction::Closed: return "closed";
    case PoolEviction::StrayData: return "stray_data";
    case PoolEviction::IdleTimeout: return "idle_timeout";
    case PoolEviction::Limit: return "limit";
    case PoolEviction::Shutdown: return "shutdown";
  }
  return "unknown";
}

}  // namespace portico

namespace portico::detail {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

// ---- UpstreamConn -------------------------------------------------------------------------

ConnParts& ConnParts::operator=(ConnParts&& o) noexcept {
  if (this == &o) return *this;
  release();  // the members stay alive: each is moved into below
  fd = std::exchange(o.fd, -1);
  family = o.family;
  protocol = o.protocol;
  key = o.key;
  requests = o.requests;
  peer = o.peer;
  local = o.local;
  idle_timeout = o.idle_timeout;
  buf = std::move(o.buf);
  ssl = std::exchange(o.ssl, nullptr);
  tls_owner = std::move(o.tls_owner);
  return *this;
}

void ConnParts::release() noexcept {
  if (fd >= 0) ::close(fd);
  if (ssl) SSL_free(ssl);
  fd = -1;
  ssl = nullptr;
}

ConnParts::~ConnParts() { release(); }

UpstreamConn::~UpstreamConn() {
  // OpenSSL withdraws the session of a connection freed without a shutdown; a connection that
  // got past its handshake ends normally here, so its session stays good for resumption.
  if (tls && SSL_is_init_finished(tls->native_handle()))
    SSL_set_shutdown(tls->native_handle(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
}

ConnParts UpstreamConn::detach() {
  ConnParts p;
  p.family = family;
  p.protocol = protocol;
  p.key = key;
  p.requests = requests;
  p.peer = peer;
  p.local = local;
  p.idle_timeout = idle_timeout;
  p.buf = std::move(buf);
  if (tls) {
    // Keep the TLS state (and its BIO, which the adopting stream attaches to itself).
    p.ssl = tls->release();
    tls.reset();
    p.tls_owner = std::move(tls_owner);
  }
  boost::system::error_code ec;
  p.fd = sock.release(ec);  // cancels the idle watch, unregisters from this reactor
  if (ec) p.fd = -1;
  return p;
}

UpstreamConnPtr UpstreamConn::adopt(ConnParts&& p, const asio::any_io_executor& ex,
                                    http1::ParserLimits limits) {
  if (p.fd < 0) return nullptr;  // ~ConnParts frees what is left
  auto c = std::make_unique<UpstreamConn>(ex, limits);
  boost::system::error_code ec;
  c->sock.assign(asio::generic::stream_protocol(p.family, p.protocol), p.fd, ec);
  if (ec) return nullptr;
  p.fd = -1;  // the socket owns it now
  if (p.ssl) {
    c->tls = std::make_unique<tls_stream>(c->sock, std::exchange(p.ssl, nullptr));
    c->tls_owner = std::move(p.tls_owner);
  }
  c->family = p.family;
  c->protocol = p.protocol;
  c->key = p.key;
  c->requests = p.requests;
  c->peer = p.peer;
  c->local = p.local;
  c->idle_timeout = p.idle_timeout;
  c->buf = std::move(p.buf);
  return c;
}

// ---- counters and registry ----------------------------------------------------------------

void KeyWorkerStats::add_to(UpstreamPoolStats& s) const noexcept {
  s.opened += opened.load(std::memory_order_relaxed);
  s.reused += reused.load(std::memory_order_relaxed);
  s.reused_cross_worker += reused_cross.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < kPoolEvictionKinds; ++i)
    s.evicted[i] += evicted[i].load(std::memory_order_relaxed);
  s.idle += idle.load(std::memory_order_relaxed);
}

KeyEntry::~KeyEntry() {
  for (auto& w : workers) delete w.load(std::memory_order_relaxed);
}

KeyWorkerStats& KeyEntry::slot(std::size_t i) {
  KeyWorkerStats* s = workers[i].load(std::memory_order_acquire);
  if (!s) {
    s = new KeyWorkerStats;
    workers[i].store(s, std::memory_order_release);
  }
  return *s;
}

std::size_t PoolRegistry::add(const asio::any_io_executor& ex, Pool* pool, bool& share) {
  std::lock_guard lk(mu_);
  const std::size_t n = n_slots_.load(std::memory_order_relaxed);
  if (n + 1 >= kMaxSharingWorkers) {
    share = false;
    return kMaxSharingWorkers - 1;
  }
  slots_[n].ex = ex;
  slots_[n].pool = pool;
  slots_[n].active.store(share, std::memory_order_release);
  n_slots_.store(n + 1, std::memory_order_release);
  return n;
}

void PoolRegistry::remove(std::size_t slot) noexcept {
  if (slot + 1 >= kMaxSharingWorkers) return;
  slots_[slot].active.store(false, std::memory_order_release);
  slots_[slot].pool = nullptr;
}

KeyEntry& PoolRegistry::entry(std::uint64_t key, const std::string& label) {
  std::lock_guard lk(mu_);
  auto& e = keys_[key];
  if (!e) {
    e = std::make_unique<KeyEntry>();
    e->key = key;
    e->label = label;
  }
  return *e;
}

UpstreamPoolStats PoolRegistry::total() const {
  UpstreamPoolStats s;
  for (const auto& p : by_peer()) s += p.stats;
  return s;
}

std::vector<PeerPoolStats> PoolRegistry::by_peer() const {
  std::lock_guard lk(mu_);
  std::vector<PeerPoolStats> out;
  out.reserve(keys_.size());
  for (const auto& [key, e] : keys_) {
    PeerPoolStats p{e->label, {}};
    for (const auto& w : e->workers)
      if (const KeyWorkerStats* s = w.load(std::memory_order_acquire)) s->add_to(p.stats);
    out.push_back(std::move(p));
  }
  std::sort(out.begin(), out.end(),
            [](const PeerPoolStats& a, const PeerPoolStats& b) { return a.peer < b.peer; });
  return out;
}

// ---- Pool ---------------------------------------------------------------------------------

Pool::Pool(asio::any_io_executor ex, PoolLimits limits, http1::ParserLimits parser_limits,
           std::shared_ptr<PoolRegistry> registry, bool share)
    : ex_(std::move(ex)),
      limits_(limits),
      parser_limits_(parser_limits),
      registry_(std::move(registry)),
      share_(share && limits.cross_worker),
      sweep_(ex_),
      watch_later_(ex_, kWatchDelay) {
  slot_ = registry_->add(ex_, this, share_);
}

Pool::~Pool() {
  registry_->remove(slot_);
  evict_all(PoolEviction::Shutdown);
}

Pool::Bucket* Pool::find(std::uint64_t key) {
  auto it = buckets_.find(key);
  return it == buckets_.end() ? nullptr : &it->second;
}

Pool::Bucket& Pool::bucket(std::uint64_t key, const std::string& label) {
  Bucket& b = buckets_[key];
  if (!b.entry) {
    b.entry = &registry_->entry(key, label);
    b.stats = &b.entry->slot(slot_);
  }
  return b;
}

void Pool::opened(const HttpPeer& peer, std::uint64_t key) {
  Bucket* b = find(key);
  if (!b) b = &bucket(key, peer.to_string());
  KeyWorkerStats::bump(b->stats->opened);
}

void Pool::reused(std::uint64_t key) {
  if (Bucket* b = find(key)) KeyWorkerStats::bump(b->stats->reused);
}

UpstreamConnPtr Pool::pop(Bucket& b, Clock::time_point now) {
  while (!b.conns.empty()) {
    UpstreamConnPtr c = std::move(b.conns.back());
    b.conns.pop_back();
    --total_;
    KeyWorkerStats::drop(b.stats->idle);
    if (now - c->idle_since < c->idle_timeout && c->begin == c->end) {
      c->watch_later.cancel();
      if (c->watching) {
        c->watching = false;
        boost::system::error_code ec;
        c->sock.cancel(ec);  // the idle watch ends with operation_aborted
      }
      return c;
    }
    KeyWorkerStats::bump(b.stats->evicted[static_cast<std::size_t>(PoolEviction::IdleTimeout)]);
  }
  return nullptr;
}

UpstreamConnPtr Pool::take(std::uint64_t key, Clock::time_point now) {
  Bucket* b = find(key);
  if (!b || b->conns.empty()) return nullptr;
  // A close that the idle watch has not reported yet fails the request before any response
  // byte; it is then retried on a fresh connection (RetryType::ReusedOnly).
  UpstreamConnPtr c = pop(*b, now);
  if (c) KeyWorkerStats::bump(b->stats->reused);
  return c;
}

UpstreamConnPtr Pool::give(std::uint64_t key) {
  if (draining_) return nullptr;
  Bucket* b = find(key);
  if (!b || b->conns.empty()) return nullptr;
  return pop(*b, Clock::now());
}

namespace {
// One cross-worker hand-over. The giver fills `parts` and flips phase 0 -> 1; the taker gives
// up by flipping 0 -> 2 when its wait ends first. Whoever loses the race knows at once.
struct StealState {
  std::atomic<int> phase{0};
  ConnParts parts;
  // The taker's wait, touched on the taker's thread only; null once the taker moved on.
  asio::steady_timer* timer = nullptr;
};
}  // namespace

task<UpstreamConnPtr> Pool::take_remote(const HttpPeer& peer, std::uint64_t key) {
  if (!share_ || draining_) co_return nullptr;
  const std::size_t n = registry_->slots();
  if (n < 2) co_return nullptr;
  Bucket* b = find(key);
  if (!b) b = &bucket(key, peer.to_string());
  // The worker with the most idle connections of this key is the likeliest to still have one.
  std::size_t from = n;
  std::uint64_t most = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (i == slot_) continue;
    const KeyWorkerStats* s = b->entry->workers[i].load(std::memory_order_acquire);
    if (!s) continue;
    const std::uint64_t idle = s->idle.load(std::memory_order_relaxed);
    if (idle > most && registry_->slot(i).active.load(std::memory_order_acquire)) {
      most = idle;
      from = i;
    }
  }
  if (from == n) co_return nullptr;

  auto st = std::make_shared<StealState>();
  asio::steady_timer timer(ex_, limits_.steal_timeout);
  st->timer = &timer;
  struct Unhook {
    StealState& s;
    ~Unhook() { s.timer = nullptr; }
  } unhook{*st};
  asio::post(registry_->slot(from).ex, [st, reg = registry_, from, key, back = ex_] {
    // On the giving worker's thread.
    Pool* p = reg->slot(from).pool;
    if (p && st->phase.load(std::memory_order_acquire) == 0) {
      if (UpstreamConnPtr c = p->give(key)) {
        st->parts = c->detach();
        c.reset();
        int waiting = 0;
        if (!st->phase.compare_exchange_strong(waiting, 1, std::memory_order_acq_rel))
          st->parts = ConnParts();  // the taker stopped waiting meanwhile: close it
      }
    }
    asio::post(back, [st] {
      if (st->timer) st->timer->cancel();
    });
  });
  co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  int waiting = 0;
  if (st->phase.compare_exchange_strong(waiting, 2, std::memory_order_acq_rel)) co_return nullptr;
  UpstreamConnPtr c = UpstreamConn::adopt(std::move(st->parts), ex_, parser_limits_);
  if (c) {
    KeyWorkerStats::bump(b->stats->reused);
    KeyWorkerStats::bump(b->stats->reused_cross);
  }
  co_return c;
}

void Pool::put(UpstreamConnPtr c) {
  if (c->idle_timeout.count() <= 0) return;  // pooling disabled for this peer
  Bucket* b = find(c->key);
  if (!b) return;  // every pooled connection was counted by opened() or take_remote()
  if (draining_) {
    KeyWorkerStats::bump(b->stats->evicted[static_cast<std::size_t>(PoolEviction::Shutdown)]);
    return;
  }
  if (limits_.max_idle_per_key == 0 || limits_.max_idle_total == 0) {
    KeyWorkerStats::bump(b->stats->evicted[static_cast<std::size_t>(PoolEviction::Limit)]);
    return;
  }
  if (b->conns.size() >= limits_.max_idle_per_key) evict(*b, 0, PoolEviction::Limit);
  if (total_ >= limits_.max_idle_total) evict_oldest();
  c->idle_since = Clock::now();
  const auto expires = c->idle_since + c->idle_timeout;
  b->conns.push_back(std::move(c));
  ++total_;
  KeyWorkerStats::bump(b->stats->idle);
  UpstreamConn& pooled = *b->conns.back();
  pooled.idle_in = this;
  // Most pooled connections are taken again within microseconds; arming the watch costs a
  // system call (Asio's speculative receive), so only those that stay idle get one. A close
  // not yet seen fails a request on the reused connection, which is then retried.
  watch_later_.add(
      pooled.watch_later,
      [](void* arg) {
        auto* conn = static_cast<UpstreamConn*>(arg);
        conn->idle_in->watch(*conn);
      },
      &pooled, pooled.idle_since);
  arm_sweep(expires);
}

void Pool::watch(UpstreamConn& c) {
  c.watch_gen = ++gen_;
  c.watching = true;
  // A peek that stays pending while the connection is idle: it completes when the upstream
  // closes or sends anything. Peeking leaves a byte that races a take in the socket.
  c.sock.async_receive(
      asio::buffer(&c.peek_byte, 1), stream_socket::message_peek,
      [self = weak_from_this(), key = c.key, conn = &c, gen = c.watch_gen](
          const boost::system::error_code& ec, std::size_t n) {
        if (ec == asio::error::operation_aborted) return;  // taken, moved or closed
        if (auto pool = self.lock()) pool->on_watch(key, conn, gen, !ec && n > 0);
      });
}

void Pool::on_watch(std::uint64_t key, const UpstreamConn* c, std::uint64_t gen, bool stray) {
  Bucket* b = find(key);
  if (!b) return;
  for (std::size_t i = 0; i < b->conns.size(); ++i) {
    // Compare addresses first: `c` may be gone, and only a pooled connection is read.
    if (b->conns[i].get() == c && c->watch_gen == gen) {
      evict(*b, i, stray ? PoolEviction::StrayData : PoolEviction::Closed);
      return;
    }
  }
}

void Pool::evict(Bucket& b, std::size_t i, PoolEviction why) {
  if (i >= b.conns.size()) return;
  UpstreamConnPtr gone = std::move(b.conns[i]);
  b.conns.erase(b.conns.begin() + static_cast<std::ptrdiff_t>(i));
  --total_;
  // Counted before the socket closes, so whoever sees the close also sees the count.
  KeyWorkerStats::drop(b.stats->idle);
  KeyWorkerStats::bump(b.stats->evicted[static_cast<std::size_t>(why)]);
  gone.reset();
}

void Pool::evict_all(PoolEviction why) {
  for (auto& [key, b] : buckets_)
    while (!b.conns.empty()) evict(b, b.conns.size() - 1, why);
  boost::system::error_code ec;
  sweep_.cancel();
  sweep_at_ = Clock::time_point::max();
}

bool Pool::evict_oldest() {
  Bucket* oldest = nullptr;
  for (auto& [key, b] : buckets_)
    if (!b.conns.empty() && (!oldest || b.conns.front()->idle_since < oldest->conns.front()->idle_since))
      oldest = &b;
  if (!oldest) return false;
  evict(*oldest, 0, PoolEviction::Limit);
  return true;
}

void Pool::arm_sweep(Clock::time_point when) {
  if (when >= sweep_at_) return;
  sweep_at_ = when;
  sweep_.expires_at(when);  // a pending wait ends with operation_aborted
  sweep_.async_wait([self = weak_from_this()](const boost::system::error_code& ec) {
    if (ec == asio::error::operation_aborted) return;
    if (auto pool = self.lock()) pool->sweep();
  });
}

void Pool::sweep() {
  sweep_at_ = Clock::time_point::max();
  const auto now = Clock::now();
  auto next = Clock::time_point::max();
  for (auto& [key, b] : buckets_) {
    for (std::size_t i = 0; i < b.conns.size();) {
      const auto expires = b.conns[i]->idle_since + b.conns[i]->idle_timeout;
      if (expires <= now) {
        evict(b, i, PoolEviction::IdleTimeout);
      } else {
        next = std::min(next, expires);
        ++i;
      }
    }
  }
  if (next != Clock::time_point::max()) arm_sweep(next);
}

void Pool::drain() {
  draining_ = true;
  watch_later_.quiesce();
  registry_->remove(slot_);
  share_ = false;
  evict_all(PoolEviction::Shutdown);
}

}  // namespace portico::detail
