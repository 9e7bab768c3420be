// The backend set changes while workers select from it: readers see the old set or the new one,
// never a torn or freed one, and retired sets are freed. Run under ThreadSanitizer too.
#include <atomic>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <portico/lb/load_balancer.hpp>
#include <portico/lb/rcu.hpp>

namespace {

using namespace portico;

std::vector<Backend> set_of(int first, int count, std::uint32_t weight) {
  std::vector<Backend> v;
  for (int i = first; i < first + count; ++i) {
    auto b = Backend::parse("10.9.0." + std::to_string(i) + ":80", weight);
    b->metadata.emplace("generation", std::to_string(first));
    v.push_back(*b);
  }
  return v;
}

template <class S>
void update_under_selection() {
  // Two alternating sets with no address in common: every selection must come from one of them,
  // and its metadata must match its address (a torn read would mix them).
  const auto a = set_of(1, 5, 1), b = set_of(101, 7, 3);
  LoadBalancerOptions o;
  o.passive_failures = 1000000;  // the counting path runs; flips come from the writer below
  auto lb = std::make_shared<LoadBalancer<S>>(a, o);
  std::atomic<bool> done{false};
  std::atomic<long> picks{0}, bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t)
    readers.emplace_back([&, t] {
      // Bounded: stops when the writer is done, or after 2,000,000 picks.
      for (long i = 0; i < 2000000 && !done.load(std::memory_order_relaxed); ++i) {
        BackendRef r = lb->select("key-" + std::to_string(i % 64));
        if (!r) continue;  // every backend of the set may be down at this instant
        InFlight f = r.track();
        const int last = std::stoi(r->addr.host().substr(7));
        const std::string gen = r->metadata.at("generation");
        if ((last <= 5 && gen != "1") || (last > 100 && gen != "101") || (last > 5 && last <= 100))
          bad.fetch_add(1);
        lb->report(r, (i + t) % 3 != 0);
        picks.fetch_add(1, std::memory_order_relaxed);
      }
    });
  // The sets must change while the readers select: on a busy machine the readers may not have
  // started before 2,000 updates are done, so wait (bounded) for their first picks.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (picks.load() < 3 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  for (int i = 0; i < 2000; ++i) {
    ASSERT_TRUE(lb->update(i % 2 ? a : b));
    if (i % 100 == 0) {
      auto refs = lb->refs();
      lb->set_health(refs[0], false, "test");
      lb->set_enabled(refs[1]->addr, false);
      lb->set_health(refs[0], true, "test");
      lb->set_enabled(refs[1]->addr, true);
    }
  }
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(picks.load(), 0);
  for (const auto& st : lb->status()) EXPECT_EQ(st.inflight, 0);
  lb.reset();
  detail::rcu::synchronize();
  EXPECT_EQ(detail::rcu::pending(), 0u) << "every retired set was freed";
}

TEST(LbConcurrency, RoundRobinUpdateUnderConcurrentSelection) {
  update_under_selection<RoundRobin>();
}
TEST(LbConcurrency, KetamaUpdateUnderConcurrentSelection) {
  update_under_selection<KetamaHashing>();
}
TEST(LbConcurrency, LeastConnUpdateUnderConcurrentSelection) {
  update_under_selection<LeastConnections>();
}
TEST(LbConcurrency, P2cUpdateUnderConcurrentSelection) {
  update_under_selection<PowerOfTwoChoices>();
}

TEST(LbRcu, NestedSectionsAndThreadExit) {
  detail::rcu::Cell<int> cell(std::make_unique<const int>(1));
  {
    detail::rcu::ReadGuard g1;
    const int* p = cell.load();
    {
      detail::rcu::ReadGuard g2;
      EXPECT_EQ(*cell.load(), 1);
    }
    // Still inside g1: a writer may publish, but the old object must stay valid.
    std::thread w([&] { cell.store(std::make_unique<const int>(2)); });
    w.join();
    EXPECT_EQ(*p, 1);
    EXPECT_GE(detail::rcu::pending(), 1u);
  }
  detail::rcu::synchronize();
  EXPECT_EQ(detail::rcu::pending(), 0u);
  // Threads come and go; their slots are reused rather than piling up.
  for (int i = 0; i < 50; ++i)
    std::thread([&] {
      detail::rcu::ReadGuard g;
      EXPECT_EQ(*cell.load(), 2);
    }).join();
}

}  // namespace
