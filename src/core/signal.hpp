// Signal: wakes one waiting coroutine, without a timer.
//
// A steady_timer that never expires and is cancelled to wake its waiter was the usual way to
// make a coroutine wait for an event; each wait cost a timer-queue insertion and removal under
// the reactor's mutex, and each timer a service lookup when it was made. A Signal holds the
// waiting coroutine's completion handler and posts it when notified: one queued completion,
// nothing else. Like the timer it replaces, a notification wakes a wait in progress only (it
// is not remembered): look at the state before waiting, with no suspension in between.
#pragma once

#include <optional>
#include <utility>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace portico::detail {

class Signal {
 public:
  using Handler = boost::asio::async_result<boost::asio::use_awaitable_t<>, void()>::handler_type;

  Signal() = default;
  /// A waiter left (there should be none) is woken, as a destroyed timer's would be.
  ~Signal() { wake(true); }
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
          h_.emplace(std::move(h));
        },
        boost::asio::use_awaitable);
  }

  /// Wakes the waiter (its completion is posted); nothing when none waits.
  void notify() noexcept { wake(true); }
  bool waiting() const noexcept { return h_.has_value(); }

 private:
  // `clear_slot` is false from within the slot's own handler, which must not be destroyed
  // while it runs.
  void wake(bool clear_slot) noexcept {
    if (!h_) return;
    Handler h = std::move(*h_);
    h_.reset();
    if (clear_slot) {
      auto slot = boost::asio::get_associated_cancellation_slot(h);
      if (slot.is_connected()) slot.clear();
    }
    boost::asio::post(std::move(h));
  }

  std::optional<Handler> h_;
};

}  // namespace portico::detail
