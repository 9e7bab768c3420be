// Signal: wakes one waiting coroutine, without a timer.
//
// A steady_timer that never expires and is cancelled to wake its waiter was the usual way to
// make a coroutine wait for an event; each wait cost a timer-queue insertion and removal under
// the reactor's mutex, and each timer a service lookup when it was made. A Signal holds the
// waiting coroutine's completion handler and posts it when notified: one queued completion,
// nothing else. Like the timer it replaces, a notification wakes a wait in progress only (it
// is not remembered): look at the state before waiting, with no suspension in between.
//
// The handler of a waiting coroutine often lives, through the Signal, inside that coroutine's
// own frame (an object the frame owns): a cycle nothing outside would ever break if the event
// loop went away first. Every waiting Signal is therefore listed by a service of its
// io_context (SignalRegistry), whose shutdown destroys the handlers left, as the io_context
// destroys the operations it holds, so the frames are unwound and freed.
#pragma once

#include <mutex>
#include <optional>
#include <utility>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace portico::detail {

class Signal;

/// The waiting Signals of one execution context (see above). Internal to Signal.
class SignalRegistry final : public boost::asio::execution_context::service {
 public:
  static inline boost::asio::execution_context::id id;
  explicit SignalRegistry(boost::asio::execution_context& ctx) : service(ctx) {}
  inline void link(Signal& s) noexcept;
  inline void unlink(Signal& s) noexcept;
  /// For an execution context only one thread ever runs (a server's worker): the list goes
  /// without its lock. Before any Signal of `ctx` waits.
  static void single_thread(boost::asio::execution_context& ctx) {
    boost::asio::use_service<SignalRegistry>(ctx).locking_ = false;
  }

 private:
  /// Holds m_ unless the context is single-threaded.
  struct Guard {
    explicit Guard(SignalRegistry& r) : m(r.locking_ ? &r.m_ : nullptr) {
      if (m) m->lock();
    }
    ~Guard() {
      if (m) m->unlock();
    }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    std::mutex* m;
  };
  inline void shutdown() override;
  std::mutex m_;  // an io_context may be run by several threads
  bool locking_ = true;
  Signal* head_ = nullptr;
};

class Signal {
 public:
  using Handler = boost::asio::async_result<boost::asio::use_awaitable_t<>, void()>::handler_type;

  Signal() = default;
  /// A waiter left is abandoned: its coroutine is destroyed without being resumed (there is
  /// none in practice; the owner of the Signal lives in or beyond the waiter's frame).
  ~Signal() { abandon(); }
  Signal(const Signal&) = delete;
  Signal& operator=(const Signal&) = delete;

  /// Completes at the next notify(), or when the awaiting coroutine is cancelled through its
  /// cancellation slot (check `this_coro::cancellation_state` after, as after a timer).
  boost::asio::awaitable<void> wait() {
    return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void()>(
        [this](Handler h) {
          auto slot = boost::asio::get_associated_cancellation_slot(h);
          if (slot.is_connected())
            slot.assign([this](boost::asio::cancellation_type) { wake(false); });
          // Looked up once: a Signal serves the one execution context its owner runs on.
          if (!reg_)
            reg_ = &boost::asio::use_service<SignalRegistry>(boost::asio::query(
                boost::asio::get_associated_executor(h), boost::asio::execution::context));
          h_.emplace(std::move(h));
          reg_->link(*this);
        },
        boost::asio::use_awaitable);
  }

  /// Wakes the waiter (its completion is posted); nothing when none waits.
  void notify() noexcept { wake(true); }
  /// Resumes the waiter here and now, inside the caller, which must be running on the waiter's
  /// executor (a handler of the same single-threaded io_context); nothing when none waits.
  void notify_now() noexcept { wake(true, true); }
  /// Takes the registry `o` found, when it has waited already: a Signal made per request on the
  /// execution context of a long-lived one then looks no service up.
  void share_registry(const Signal& o) noexcept {
    if (!reg_) reg_ = o.reg_;
  }
  bool waiting() const noexcept { return h_.has_value(); }

 private:
  friend class SignalRegistry;

  // `clear_slot` is false from within the slot's own handler, which must not be destroyed
  // while it runs.
  void wake(bool clear_slot, bool now = false) noexcept {
    if (!h_) return;
    Handler h = std::move(*h_);
    h_.reset();
    reg_->unlink(*this);
    if (clear_slot) {
      auto slot = boost::asio::get_associated_cancellation_slot(h);
      if (slot.is_connected()) slot.clear();
    }
    if (now)
      std::move(h)();
    else
      boost::asio::post(std::move(h));
  }

  /// Destroys the waiter's handler: the coroutine is unwound through its executor, not resumed.
  void abandon() noexcept {
    if (!h_) return;
    reg_->unlink(*this);
    std::optional<Handler> h = std::move(h_);
    h_.reset();
    h.reset();
  }

  std::optional<Handler> h_;
  SignalRegistry* reg_ = nullptr;
  Signal* prev_ = nullptr;  // in reg_'s list while waiting
  Signal* next_ = nullptr;
};

void SignalRegistry::link(Signal& s) noexcept {
  Guard lock(*this);
  s.prev_ = nullptr;
  s.next_ = head_;
  if (head_) head_->prev_ = &s;
  head_ = &s;
}

void SignalRegistry::unlink(Signal& s) noexcept {
  Guard lock(*this);
  if (s.prev_)
    s.prev_->next_ = s.next_;
  else
    head_ = s.next_;
  if (s.next_) s.next_->prev_ = s.prev_;
  s.prev_ = s.next_ = nullptr;
}

void SignalRegistry::shutdown() {
  // Before the scheduler's own shutdown (services stop newest first): the unwinding each
  // destroyed handler posts is destroyed with the scheduler's queue.
  for (;;) {
    Signal* s;
    {
      Guard lock(*this);
      s = head_;
    }
    if (!s) return;
    s->abandon();  // unlinks it; destroying a frame may abandon (unlink) others
  }
}

}  // namespace portico::detail
