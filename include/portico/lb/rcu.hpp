// Read-copy-update for the load balancer's backend sets: readers never lock, never write a shared
// cache line, and never wait; writers publish a new immutable object and free the old one once no
// reader can still see it.
//
// Why not std::atomic<std::shared_ptr<T>>: libstdc++ 12 implements it with a lock bit in the
// control-block pointer, so every reader spins on a word that every other reader writes. Why not a
// plain shared_ptr copy under a mutex: that is a lock on the request path.
//
// The scheme is epoch-based reclamation:
//   - a global epoch counter, bumped by every retire;
//   - one slot per thread (its own cache line) holding the epoch the thread read when it entered
//     a read section, or 0 when it is outside one;
//   - a reader stores the current epoch into its slot (seq_cst), then loads the object pointer
//     (seq_cst), uses the object, and stores 0 (release) when done;
//   - a writer exchanges the pointer (seq_cst), takes E = epoch++ (seq_cst), and keeps the old
//     object on a retire list tagged E. It frees the object once every slot reads 0 or a value
//     greater than E.
// Why that is safe: a reader that loaded the old pointer stored its slot before that load, and the
// load came before the exchange in the single total order of seq_cst operations, so the writer's
// later scan sees the slot (unless the reader already stored 0, after its last use, with release
// semantics the scan's load synchronises with). A slot holding an epoch greater than E was entered
// after the bump, hence after the exchange, so its reader can only have loaded the new pointer.
//
// Readers cost one acquire load, one seq_cst store (an xchg on x86) and one release store. A
// thread's first read section registers its slot (lock-free list push, once per thread); the slot
// is given back when the thread exits.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace portico::detail::rcu {

struct alignas(64) Slot {
  /// The epoch the owning thread read when it entered its read section; 0 outside one.
  std::atomic<std::uint64_t> epoch{0};
  std::atomic<bool> in_use{false};
  /// Next slot in the registry; written once before the slot is published.
  Slot* next = nullptr;
};

/// The global epoch; starts at 1 so that 0 can mean "not reading".
inline std::atomic<std::uint64_t> g_epoch{1};

struct ThreadState {
  Slot* slot = nullptr;
  unsigned depth = 0;
};
/// Trivially destructible, so access is a plain TLS load; slot release at thread exit is done by
/// a separate thread_local registered in acquire_slot().
inline thread_local ThreadState t_state;

/// Registers the calling thread's slot (first read section of a thread only).
Slot* acquire_slot();

/// Hands `p` to the reclaimer, which calls `deleter(p)` once no reader can see it. Any thread.
void retire(void* p, void (*deleter)(void*));
/// Frees what no reader can still see. Any thread; called by retire() too.
void reclaim();
/// Blocks until everything retired before the call is freed (tests, orderly teardown). Must not be
/// called inside a read section.
void synchronize();
/// Objects retired and not freed yet (tests).
std::size_t pending();

/// A read section: objects loaded from an RcuCell stay valid while it lives. Nests. Keep it short
/// and never hold it across a co_await.
class ReadGuard {
 public:
  ReadGuard() {
    ThreadState& t = t_state;
    if (t.depth++ == 0) {
      if (!t.slot) t.slot = acquire_slot();
      t.slot->epoch.store(g_epoch.load(std::memory_order_acquire), std::memory_order_seq_cst);
    }
  }
  ~ReadGuard() {
    ThreadState& t = t_state;
    if (--t.depth == 0) t.slot->epoch.store(0, std::memory_order_release);
  }
  ReadGuard(const ReadGuard&) = delete;
  ReadGuard& operator=(const ReadGuard&) = delete;
};

/// One published immutable object. Readers load() inside a ReadGuard; writers store() a
/// replacement (writers serialise among themselves; the cell does not).
template <class T>
class Cell {
 public:
  Cell() = default;
  explicit Cell(std::unique_ptr<const T> first) : ptr_(first.release()) {}
  ~Cell() { retire_object(ptr_.exchange(nullptr, std::memory_order_seq_cst)); }
  Cell(const Cell&) = delete;
  Cell& operator=(const Cell&) = delete;

  /// The current object, or null. Valid until the caller's ReadGuard ends.
  const T* load() const noexcept { return ptr_.load(std::memory_order_seq_cst); }
  /// Publishes `next`; the previous object is freed once no reader can see it.
  void store(std::unique_ptr<const T> next) {
    retire_object(ptr_.exchange(next.release(), std::memory_order_seq_cst));
  }

 private:
  static void retire_object(const T* p) {
    if (p) retire(const_cast<T*>(p), [](void* q) { delete static_cast<T*>(q); });
  }
  std::atomic<const T*> ptr_{nullptr};
};

}  // namespace portico::detail::rcu
