// Deferred: work worth doing only when a wait lasts.
//
// Arming a read watch on a socket costs Asio a system call (a speculative recv, or an epoll_ctl),
// and most waits end long before the watch would report anything: an upstream answers in well
// under a millisecond, a pooled connection is taken again at once. An entry added here runs its
// callback once `delay` has passed, unless it was cancelled before; so only the waits that last
// pay for their watch. One timer per Deferred, running while entries are pending and, when the
// delay is short, for up to kLinger after the last one: connections that come one at a time
// would otherwise each restart it (a timerfd_settime and a wake-up of their own), and a ticking
// timer due within the delay also keeps the far-off deadlines of the connections' watchdogs from
// being the earliest, whose arming costs a system call too.
#pragma once

#include <chrono>
#include <memory>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

namespace portico::detail {

/// How long a wait lasts before the socket watch it would need is armed: the client watch while
/// a response head is awaited (Worker::deferred), the close watch of a pooled upstream
/// connection (Pool).
inline constexpr std::chrono::milliseconds kWatchDelay{20};

/// How long the timer of a Deferred with a short delay keeps ticking once it has no entry.
inline constexpr std::chrono::milliseconds kLinger{1000};

class Deferred {
 public:
  using clock = std::chrono::steady_clock;
  using Fn = void (*)(void*);

  /// A place in the queue, embedded in whatever waits. Unlinks itself when destroyed.
  class Entry {
   public:
    Entry() = default;
    ~Entry() { cancel(); }
    Entry(const Entry&) = delete;
    Entry& operator=(const Entry&) = delete;

    bool pending() const noexcept { return owner_ != nullptr; }
    void cancel() noexcept {
      if (owner_) owner_->unlink(*this);
    }

   private:
    friend class Deferred;
    Deferred* owner_ = nullptr;
    Entry* prev_ = nullptr;
    Entry* next_ = nullptr;
    clock::time_point due_{};
    Fn fn_ = nullptr;
    void* arg_ = nullptr;
  };

  Deferred(const boost::asio::any_io_executor& ex, std::chrono::milliseconds delay)
      : timer_(ex), delay_(delay), linger_ticks_(delay.count() > 0 ? kLinger / delay : 0) {}
  ~Deferred() {
    *alive_ = nullptr;  // a tick already queued (its wait done) finds no Deferred
    while (head_) unlink(*head_);
    timer_.cancel();
  }
  Deferred(const Deferred&) = delete;
  Deferred& operator=(const Deferred&) = delete;

  /// Runs fn(arg) once the delay has passed, unless `e` is cancelled (or re-added) first.
  /// `now`: the caller's reading of the clock, when it has just taken one.
  void add(Entry& e, Fn fn, void* arg, clock::time_point now = clock::now()) {
    e.cancel();
    e.owner_ = this;
    e.fn_ = fn;
    e.arg_ = arg;
    e.due_ = now + delay_;
    e.prev_ = tail_;
    e.next_ = nullptr;
    if (tail_)
      tail_->next_ = &e;
    else
      head_ = &e;
    tail_ = &e;
    idle_ticks_ = 0;
    if (!ticking_) start(e.due_);
  }

  std::chrono::milliseconds delay() const noexcept { return delay_; }

  /// The event loop is winding down: the timer stops as soon as no entry is pending (no
  /// lingering), so it does not keep the loop running.
  void quiesce() noexcept {
    linger_ticks_ = 0;
    if (!head_ && ticking_) {
      ticking_ = false;
      timer_.cancel();
    }
  }

 private:
  void unlink(Entry& e) noexcept {
    if (e.prev_)
      e.prev_->next_ = e.next_;
    else
      head_ = e.next_;
    if (e.next_)
      e.next_->prev_ = e.prev_;
    else
      tail_ = e.prev_;
    e.prev_ = e.next_ = nullptr;
    e.owner_ = nullptr;
  }

  void start(clock::time_point when) {
    ticking_ = true;
    timer_.expires_at(when);
    // Destroying the timer aborts a pending wait, but not one that completed and waits to
    // run: that one reaches the Deferred through `alive_`, which the destructor clears.
    timer_.async_wait([alive = alive_](const boost::system::error_code& ec) {
      if (!ec && *alive) (*alive)->tick();
    });
  }

  void tick() {
    ticking_ = true;  // entries added by callbacks do not start the timer; it restarts below
    const auto now = clock::now();
    // The delay is the same for all, so the queue is in due order. A callback may add entries
    // (due later, at the tail) or cancel others.
    while (head_ && head_->due_ <= now) {
      Entry& e = *head_;
      unlink(e);
      e.fn_(e.arg_);
    }
    ticking_ = false;
    if (head_)
      start(head_->due_);
    else if (idle_ticks_ < linger_ticks_) {
      ++idle_ticks_;
      start(now + delay_);
    }
  }

  boost::asio::steady_timer timer_;
  std::chrono::milliseconds delay_;
  Entry* head_ = nullptr;
  Entry* tail_ = nullptr;
  std::shared_ptr<Deferred*> alive_ = std::make_shared<Deferred*>(this);
  bool ticking_ = false;           // the timer is pending (or its handler runs)
  long linger_ticks_;               // ticks without entries before the timer stops
  long idle_ticks_ = 0;             // ticks without entries so far
};

}  // namespace portico::detail
