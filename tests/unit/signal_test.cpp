// detail::Signal: a coroutine waits for notify() without a timer; cancellation ends the wait;
// an event loop torn down with a waiter frees the waiter's frame (no leak, no resumption).
#include <gtest/gtest.h>

#include <memory>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/this_coro.hpp>

#include "core/signal.hpp"

namespace asio = boost::asio;
using portico::detail::Signal;

namespace {

asio::awaitable<void> wait_once(Signal& s, int& woken) {
  co_await s.wait();
  ++woken;
}

/// A waiter whose Signal lives in its own frame: `destroyed` when the frame goes, `resumed` if
/// the wait ever completes.
asio::awaitable<void> wait_in_own_frame(bool& destroyed, bool& resumed) {
  struct Owned {
    Signal s;
    bool* destroyed;
    ~Owned() { *destroyed = true; }
  };
  auto o = std::make_unique<Owned>();
  o->destroyed = &destroyed;
  co_await o->s.wait();
  resumed = true;
}

}  // namespace

TEST(Signal, NotifyWakesTheWaiterOnce) {
  asio::io_context ctx;
  Signal s;
  int woken = 0;
  asio::co_spawn(ctx, wait_once(s, woken), asio::detached);
  ctx.poll();
  EXPECT_TRUE(s.waiting());
  EXPECT_EQ(woken, 0);
  s.notify();
  EXPECT_FALSE(s.waiting());
  EXPECT_EQ(woken, 0) << "the completion is posted, not run inline";
  ctx.poll();
  EXPECT_EQ(woken, 1);
  s.notify();  // nobody waits: nothing happens
  ctx.poll();
  EXPECT_EQ(woken, 1);
}

TEST(Signal, ANotificationWithoutAWaiterIsNotRemembered) {
  asio::io_context ctx;
  Signal s;
  int woken = 0;
  s.notify();
  asio::co_spawn(ctx, wait_once(s, woken), asio::detached);
  ctx.poll();
  EXPECT_EQ(woken, 0);
  EXPECT_TRUE(s.waiting());
  s.notify();
  ctx.poll();
  EXPECT_EQ(woken, 1);
}

TEST(Signal, CancellingTheCoroutineEndsTheWait) {
  asio::io_context ctx;
  Signal s;
  asio::cancellation_signal cancel;
  bool cancelled = false, done = false;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        co_await s.wait();
        auto cs = co_await asio::this_coro::cancellation_state;
        cancelled = cs.cancelled() != asio::cancellation_type::none;
      },
      asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr) { done = true; }));
  ctx.poll();
  ASSERT_TRUE(s.waiting());
  cancel.emit(asio::cancellation_type::terminal);  // reaches the coroutine through its executor
  ctx.poll();
  EXPECT_FALSE(s.waiting());
  EXPECT_TRUE(done);
  EXPECT_TRUE(cancelled);
}

// The waiter owns the Signal it waits on (through its frame): when the event loop goes away
// first, the frame must still be destroyed.
TEST(Signal, ALoopTornDownWithAWaiterFreesItsFrame) {
  bool destroyed = false, resumed = false;
  {
    asio::io_context ctx;
    asio::co_spawn(ctx, wait_in_own_frame(destroyed, resumed), asio::detached);
    ctx.poll();
    EXPECT_FALSE(destroyed);
  }
  EXPECT_TRUE(destroyed);
  EXPECT_FALSE(resumed);
}

TEST(Signal, ASingleThreadedLoopListsItsWaitersWithoutALock) {
  // A server's worker marks its io_context single-threaded: waits, wakes and the tear-down of
  // waiters left behave as with the lock.
  bool left_destroyed = false, left_resumed = false;
  int woken = 0;
  {
    asio::io_context ctx(1);
    portico::detail::SignalRegistry::single_thread(ctx);
    Signal a, b, c;
    for (Signal* s : {&a, &b, &c}) asio::co_spawn(ctx, wait_once(*s, woken), asio::detached);
    asio::co_spawn(ctx, wait_in_own_frame(left_destroyed, left_resumed), asio::detached);
    ctx.poll();
    EXPECT_TRUE(a.waiting() && b.waiting() && c.waiting());
    b.notify();  // the middle of the list, then its ends
    ctx.poll();
    EXPECT_EQ(woken, 1);
    c.notify();
    a.notify();
    ctx.poll();
    EXPECT_EQ(woken, 3);
    asio::co_spawn(ctx, wait_once(a, woken), asio::detached);  // waits again
    ctx.poll();
    EXPECT_TRUE(a.waiting());
    a.notify();
    ctx.poll();
    EXPECT_EQ(woken, 4);
    EXPECT_FALSE(left_destroyed);
  }
  EXPECT_TRUE(left_destroyed);
  EXPECT_FALSE(left_resumed);
}
