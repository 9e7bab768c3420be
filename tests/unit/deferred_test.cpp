// Deferred: callbacks run once their delay has passed, in order, unless cancelled first.
#include <gtest/gtest.h>

#include <chrono>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "core/deferred.hpp"

namespace {

using namespace std::chrono_literals;
using portico::detail::Deferred;

struct Waiter {
  Deferred::Entry entry;
  std::vector<int>* log = nullptr;
  int id = 0;
  static void fire(void* arg) {
    auto* w = static_cast<Waiter*>(arg);
    w->log->push_back(w->id);
  }
};

TEST(Deferred, RunsAfterTheDelayInOrderAndSkipsCancelled) {
  boost::asio::io_context io;
  Deferred d(io.get_executor(), 5ms);
  std::vector<int> log;
  Waiter a, b, c;
  a.log = b.log = c.log = &log;
  a.id = 1, b.id = 2, c.id = 3;
  const auto start = Deferred::clock::now();
  d.add(a.entry, &Waiter::fire, &a);
  d.add(b.entry, &Waiter::fire, &b);
  d.add(c.entry, &Waiter::fire, &c);
  EXPECT_TRUE(b.entry.pending());
  b.entry.cancel();
  EXPECT_FALSE(b.entry.pending());
  d.quiesce();     // no lingering:
  io.run_for(2s);  // returns as soon as the queue is empty: the timer stops with it
  EXPECT_EQ(log, (std::vector<int>{1, 3}));
  EXPECT_GE(Deferred::clock::now() - start, 5ms);
  EXPECT_FALSE(a.entry.pending());
  EXPECT_FALSE(c.entry.pending());
}

TEST(Deferred, EntryDestroyedWhilePendingNeverRuns) {
  boost::asio::io_context io;
  Deferred d(io.get_executor(), 1ms);
  std::vector<int> log;
  {
    Waiter gone;
    gone.log = &log;
    d.add(gone.entry, &Waiter::fire, &gone);
  }
  Waiter kept;
  kept.log = &log;
  kept.id = 7;
  d.add(kept.entry, &Waiter::fire, &kept);
  d.quiesce();
  io.run_for(2s);
  EXPECT_EQ(log, (std::vector<int>{7}));
}

TEST(Deferred, ReAddingRestartsTheDelayAndACallbackMayAddMore) {
  boost::asio::io_context io;
  Deferred d(io.get_executor(), 2ms);
  std::vector<int> log;
  struct Chain {
    Deferred* d;
    Deferred::Entry entry;
    std::vector<int>* log;
    int left;
    static void fire(void* arg) {
      auto* c = static_cast<Chain*>(arg);
      c->log->push_back(c->left);
      if (--c->left > 0) c->d->add(c->entry, &Chain::fire, c);
    }
  } chain{&d, {}, &log, 3};
  d.add(chain.entry, &Chain::fire, &chain);
  d.add(chain.entry, &Chain::fire, &chain);  // re-added: still runs once per add in effect
  d.quiesce();
  io.run_for(2s);
  EXPECT_EQ(log, (std::vector<int>{3, 2, 1}));
}

TEST(Deferred, DestroyingTheQueueDetachesItsEntries) {
  boost::asio::io_context io;
  std::vector<int> log;
  Waiter w;
  w.log = &log;
  {
    Deferred d(io.get_executor(), 1ms);
    d.add(w.entry, &Waiter::fire, &w);
    EXPECT_TRUE(w.entry.pending());
  }
  EXPECT_FALSE(w.entry.pending());
  io.run_for(50ms);
  EXPECT_TRUE(log.empty());
}

TEST(Deferred, ShortDelayTimerLingersAfterTheLastEntryThenStops) {
  boost::asio::io_context io;
  Deferred d(io.get_executor(), 100ms);  // kLinger / 100 ms = 10 ticks without entries
  std::vector<int> log;
  Waiter w, late;
  w.log = late.log = &log;
  late.id = 9;
  const auto start = Deferred::clock::now();
  d.add(w.entry, &Waiter::fire, &w);
  // One more entry while the timer lingers: it runs after its own delay, and the lingering
  // starts again after it.
  boost::asio::steady_timer t(io, 250ms);
  Deferred::clock::time_point late_added{};
  t.async_wait([&](const boost::system::error_code&) {
    late_added = Deferred::clock::now();
    d.add(late.entry, &Waiter::fire, &late);
  });
  io.run_for(10s);  // returns when the timer stops
  const auto took = Deferred::clock::now() - start;
  EXPECT_EQ(log, (std::vector<int>{0, 9}));
  EXPECT_GE(took, 250ms + 100ms + portico::detail::kLinger);
  EXPECT_LT(took, 8s);
  EXPECT_FALSE(late.entry.pending());
}

TEST(Deferred, QuiesceStopsALingeringTimer) {
  boost::asio::io_context io;
  Deferred d(io.get_executor(), 10ms);
  std::vector<int> log;
  Waiter w;
  w.log = &log;
  d.add(w.entry, &Waiter::fire, &w);
  boost::asio::steady_timer t(io, 50ms);  // after the entry ran: the timer lingers
  t.async_wait([&](const boost::system::error_code&) { d.quiesce(); });
  const auto start = Deferred::clock::now();
  io.run_for(10s);
  EXPECT_EQ(log, (std::vector<int>{0}));
  EXPECT_LT(Deferred::clock::now() - start, portico::detail::kLinger);
}

}  // namespace
