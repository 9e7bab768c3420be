// IdMap: streams by id in a sorted vector, checked against std::map under random operations.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>

#include "core/id_map.hpp"

namespace {

using portico::detail::IdMap;

TEST(IdMap, FindsInsertsAndErasesLikeAMap) {
  IdMap<int*> m;
  int a = 1, b = 2, c = 3;
  EXPECT_TRUE(m.empty());
  m.insert(5, &a);
  m.insert(1, &b);  // out of order: goes before
  m.insert(9, &c);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m.find(1)->second, &b);
  EXPECT_EQ(m.find(5)->second, &a);
  EXPECT_EQ(m.find(9)->second, &c);
  EXPECT_EQ(m.find(7), m.end());
  std::vector<std::int32_t> order;
  for (auto& [id, p] : m) order.push_back(id);
  EXPECT_EQ(order, (std::vector<std::int32_t>{1, 5, 9}));
  m.insert(5, &c);  // present: its value replaced
  EXPECT_EQ(m.find(5)->second, &c);
  EXPECT_EQ(m.size(), 3u);
  EXPECT_EQ(m.erase(5), 1u);
  EXPECT_EQ(m.erase(5), 0u);
  m.erase(m.find(1));
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m.begin()->first, 9);
  m.release();
  EXPECT_TRUE(m.empty());
  m.insert(3, &a);
  EXPECT_EQ(m.size(), 1u);
  m.erase(3);
  m.insert(1, &a);
  m.insert(3, &b);
  m.insert(5, &c);
  m.erase(3);  // a hole in the middle, filled again
  EXPECT_EQ(m.size(), 2u);
  EXPECT_EQ(m.find(3), m.end());
  m.insert(3, &b);
  EXPECT_EQ(m.size(), 3u);
  EXPECT_EQ(m.find(3)->second, &b);
}

// Streams that end in the order they began, 100 open at a time: the erased entries become
// holes, squeezed out now and then; lookups and iteration never see one.
TEST(IdMap, OldestFirstErasuresLeaveNoVisibleHoles) {
  IdMap<int*> m;
  std::map<std::int32_t, int*> ref;
  int x = 0;
  std::int32_t next = 1, oldest = 1;
  for (int i = 0; i < 5000; ++i) {
    m.insert(next, &x);
    ref[next] = &x;
    next += 2;
    if (ref.size() > 100) {
      EXPECT_EQ(m.erase(oldest), ref.erase(oldest));
      oldest += 2;
    }
    if (i % 97 == 0) {  // one from the middle too
      const std::int32_t mid = oldest + 2 * static_cast<std::int32_t>(ref.size() / 2);
      EXPECT_EQ(m.erase(mid), ref.erase(mid));
    }
    ASSERT_EQ(m.size(), ref.size());
    ASSERT_EQ(m.find(oldest) == m.end(), ref.find(oldest) == ref.end());
  }
  std::vector<std::int32_t> a, b;
  for (auto& [id, v] : m) a.push_back(id);
  for (auto& [id, v] : ref) b.push_back(id);
  EXPECT_EQ(a, b);
}

TEST(IdMap, MatchesStdMapUnderRandomOperations) {
  std::mt19937 rng(12);
  IdMap<std::unique_ptr<int>> m;
  std::map<std::int32_t, int> ref;
  std::int32_t next = 1;
  for (int i = 0; i < 20000; ++i) {
    const unsigned op = rng() % 10;
    if (op < 4) {  // a new stream: mostly the next id, sometimes any
      const std::int32_t id = op == 0 ? static_cast<std::int32_t>(rng() % 400) : (next += 2);
      if (ref.emplace(id, id * 3).second) m.insert(id, std::make_unique<int>(id * 3));
    } else if (op < 8) {
      const std::int32_t id = static_cast<std::int32_t>(rng() % (next + 1));
      EXPECT_EQ(m.erase(id), ref.erase(id));
    } else {
      const std::int32_t id = static_cast<std::int32_t>(rng() % (next + 1));
      auto it = m.find(id);
      auto r = ref.find(id);
      ASSERT_EQ(it == m.end(), r == ref.end()) << id;
      if (r != ref.end()) EXPECT_EQ(*it->second, r->second);
    }
    ASSERT_EQ(m.size(), ref.size());
  }
  auto r = ref.begin();
  for (auto& [id, v] : m) {
    ASSERT_EQ(id, r->first);
    EXPECT_EQ(*v, r->second);
    ++r;
  }
}

}  // namespace
