// Watchdog: cheap per-connection timeouts. Arming is a store of a time point; the single timer
// only moves when a deadline comes earlier than the one it waits for.
#pragma once

#include <array>
#include <chrono>
#include <memory>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

namespace portico::detail {

class Watchdog : public std::enable_shared_from_this<Watchdog> {
 public:
  using clock = std::chrono::steady_clock;
  enum Slot : unsigned { DsRead = 0, DsWrite = 1, UsRead = 2, UsWrite = 3, Total = 4, kSlots = 5 };
  using CancelFn = void (*)(void*);
  /// The usual CancelFn: cancels what is pending on a socket of type S (never throws).
  template <class S>
  static void cancel_io(void* s) noexcept {
    boost::system::error_code ec;
    static_cast<S*>(s)->cancel(ec);
  }

  explicit Watchdog(const boost::asio::any_io_executor& ex) : timer_(ex) {}
  /// With a timer moved from `prototype` (unopened, left so): no service lookup.
  explicit Watchdog(boost::asio::steady_timer& prototype) : timer_(std::move(prototype)) {}

  /// Starts (or restarts) the deadline of `slot`. When it passes, `fn(arg)` runs once and
  /// expired(slot) becomes true until the next arm/disarm. `now`: the caller's reading of the
  /// clock, when it has just taken one.
  void arm(Slot slot, std::chrono::milliseconds d, CancelFn fn, void* arg,
           clock::time_point now = clock::now()) {
    auto& s = slots_[slot];
    s.deadline = d.count() > 0 ? now + d : clock::time_point::max();
    s.fn = fn;
    s.arg = arg;
    s.expired = false;
    if (s.deadline != clock::time_point::max()) schedule(s.deadline);
  }
  void disarm(Slot slot) noexcept {
    slots_[slot].deadline = clock::time_point::max();
    slots_[slot].expired = false;
  }
  bool expired(Slot slot) const noexcept { return slots_[slot].expired; }
  /// Forgets every slot; the timer is cancelled.
  void close() noexcept {
    for (auto& s : slots_) s = {};
    target_ = clock::time_point::max();
    timer_.cancel();
  }

 private:
  struct Entry {
    clock::time_point deadline = clock::time_point::max();
    CancelFn fn = nullptr;
    void* arg = nullptr;
    bool expired = false;
  };

  void schedule(clock::time_point when) {
    if (waiting_ && when >= target_) return;  // the pending wait fires first and re-checks
    target_ = when;
    timer_.expires_at(when);  // cancels a pending wait; its handler ignores operation_aborted
    waiting_ = true;
    timer_.async_wait([self = shared_from_this(), when](boost::system::error_code ec) {
      if (!ec) self->fire(when);
    });
  }

  void fire(clock::time_point when) {
    if (when != target_) return;
    waiting_ = false;
    target_ = clock::time_point::max();
    auto now = clock::now();
    clock::time_point next = clock::time_point::max();
    for (auto& s : slots_) {
      if (s.deadline <= now) {
        s.deadline = clock::time_point::max();
        s.expired = true;
        if (s.fn) s.fn(s.arg);
      } else if (s.deadline < next) {
        next = s.deadline;
      }
    }
    if (next != clock::time_point::max()) schedule(next);
  }

  boost::asio::steady_timer timer_;
  std::array<Entry, kSlots> slots_{};
  clock::time_point target_ = clock::time_point::max();
  bool waiting_ = false;
};

}  // namespace portico::detail
