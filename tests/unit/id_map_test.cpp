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
  m[5] = &a;
  m[1] = &b;  // out of order: goes before
  m[9] = &c;
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m.find(1)->second, &b);
  EXPECT_EQ(m.find(5)->second, &a);
  EXPECT_EQ(m.find(9)->second, &c);
  EXPECT_EQ(m.find(7), m.end());
  std::vector<std::int32_t> order;
  for (auto& [id, p] : m) order.push_back(id);
  EXPECT_EQ(order, (std::vector<std::int32_t>{1, 5, 9}));
  EXPECT_EQ(m[5], &a);  // present: not inserted again
  EXPECT_EQ(m.size(), 3u);
  EXPECT_EQ(m.erase(5), 1u);
  EXPECT_EQ(m.erase(5), 0u);
  m.erase(m.find(1));
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m.begin()->first, 9);
  m.release();
  EXPECT_TRUE(m.empty());
  EXPECT_EQ(m[3], nullptr);  // value-initialized
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
      auto& v = m[id];
      if (!v) v = std::make_unique<int>(id * 3);
      ref.emplace(id, id * 3);
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
