// The reclaimer behind portico::detail::rcu (see include/portico/lb/rcu.hpp for the argument).
#include <portico/lb/rcu.hpp>

#include <algorithm>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

namespace portico::detail::rcu {

namespace {

/// Every slot ever registered; nodes are never freed, only reused by later threads.
std::atomic<Slot*> g_slots{nullptr};

struct Retired {
  void* p;
  void (*deleter)(void*);
  std::uint64_t epoch;
};

/// Writer-side state. Deliberately leaked: thread_local destructors and static destructors of
/// other translation units may still retire objects during exit.
struct Domain {
  std::mutex mu;
  std::vector<Retired> retired;
};
Domain& domain() {
  static Domain* d = new Domain;
  return *d;
}

/// Gives the slot back when its thread exits.
struct SlotRelease {
  Slot* slot = nullptr;
  ~SlotRelease() {
    if (!slot) return;
    slot->epoch.store(0, std::memory_order_release);
    slot->in_use.store(false, std::memory_order_release);
    t_state.slot = nullptr;
  }
};
thread_local SlotRelease t_release;

/// The smallest epoch any reader is in, or max when nobody reads.
std::uint64_t oldest_reader() {
  std::uint64_t m = std::numeric_limits<std::uint64_t>::max();
  for (Slot* s = g_slots.load(std::memory_order_acquire); s; s = s->next) {
    const std::uint64_t e = s->epoch.load(std::memory_order_seq_cst);
    if (e != 0) m = std::min(m, e);
  }
  return m;
}

/// Frees, under d.mu, every retired object tagged below `oldest`; returns them removed.
void free_before(Domain& d, std::uint64_t oldest, std::vector<Retired>& out) {
  auto keep = std::partition(d.retired.begin(), d.retired.end(),
                             [oldest](const Retired& r) { return r.epoch >= oldest; });
  out.assign(keep, d.retired.end());
  d.retired.erase(keep, d.retired.end());
}

void run_deleters(std::vector<Retired>& v) {
  // Outside the lock: a deleter may release the last reference to something that retires more.
  for (auto& r : v) r.deleter(r.p);
  v.clear();
}

}  // namespace

Slot* acquire_slot() {
  for (Slot* s = g_slots.load(std::memory_order_acquire); s; s = s->next) {
    bool free = false;
    if (!s->in_use.load(std::memory_order_relaxed) &&
        s->in_use.compare_exchange_strong(free, true, std::memory_order_acquire)) {
      t_release.slot = s;
      return s;
    }
  }
  auto* s = new Slot;
  s->in_use.store(true, std::memory_order_relaxed);
  Slot* head = g_slots.load(std::memory_order_relaxed);
  do {
    s->next = head;
  } while (!g_slots.compare_exchange_weak(head, s, std::memory_order_release,
                                          std::memory_order_relaxed));
  t_release.slot = s;
  return s;
}

void retire(void* p, void (*deleter)(void*)) {
  Domain& d = domain();
  {
    std::lock_guard lk(d.mu);
    // The epoch is taken after the caller's pointer exchange (both seq_cst).
    const std::uint64_t e = g_epoch.fetch_add(1, std::memory_order_seq_cst);
    d.retired.push_back(Retired{p, deleter, e});
  }
  reclaim();
}

void reclaim() {
  Domain& d = domain();
  std::vector<Retired> done;
  {
    std::lock_guard lk(d.mu);
    if (d.retired.empty()) return;
    free_before(d, oldest_reader(), done);
  }
  run_deleters(done);
}

void synchronize() {
  std::uint64_t target;
  {
    std::lock_guard lk(domain().mu);
    target = g_epoch.load(std::memory_order_seq_cst);
  }
  // Read sections are short (a selection); a thread preempted inside one delays this a little.
  for (;;) {
    reclaim();
    {
      std::lock_guard lk(domain().mu);
      bool left = std::any_of(domain().retired.begin(), domain().retired.end(),
                              [target](const Retired& r) { return r.epoch < target; });
      if (!left) return;
    }
    std::this_thread::yield();
  }
}

std::size_t pending() {
  std::lock_guard lk(domain().mu);
  return domain().retired.size();
}

}  // namespace portico::detail::rcu
