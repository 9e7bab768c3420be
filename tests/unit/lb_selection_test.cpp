// Selection algorithms: weights, nginx-compatible Ketama, remapping, health and accept filters,
// in-flight counts, passive health, updates that keep state, the compatibility API.
#include <strings.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <portico/lb/load_balancer.hpp>

namespace {

using namespace portico;

Backend backend(const std::string& addr, std::uint32_t weight = 1, std::string name = {}) {
  auto b = Backend::parse(addr, weight);
  EXPECT_TRUE(b) << addr;
  b->name = std::move(name);
  return *b;
}

std::vector<Backend> weighted_set() {
  return {backend("10.0.0.1:80", 1), backend("10.0.0.2:80", 2), backend("10.0.0.3:80", 3),
          backend("10.0.0.4:80", 4)};
}

/// Share of picks per backend address over `n` selections with keys "key-0", "key-1", ...
std::map<std::string, double> shares(const LoadBalancerBase& lb, int n) {
  std::map<std::string, int> count;
  for (int i = 0; i < n; ++i) {
    auto b = lb.select_any("key-" + std::to_string(i));
    EXPECT_TRUE(b);
    if (b) ++count[b->addr.to_string()];
  }
  std::map<std::string, double> out;
  for (auto& [k, v] : count) out[k] = static_cast<double>(v) / n;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Weights: the share of each backend over 100,000 picks is within 1 percentage point of
// weight / total weight.

class Weights : public ::testing::TestWithParam<const char*> {};

TEST_P(Weights, RespectedWithinOnePercentOver100000Picks) {
  auto lb = make_load_balancer(GetParam(), weighted_set());
  ASSERT_TRUE(lb) << lb.error().to_string();
  auto s = shares(**lb, 100000);
  const double total = 10;
  for (const auto& b : weighted_set()) {
    const double want = b.weight / total;
    EXPECT_NEAR(s[b.addr.to_string()], want, 0.01) << GetParam() << " " << b.addr.to_string();
  }
}

INSTANTIATE_TEST_SUITE_P(Lb, Weights,
                         ::testing::Values("round_robin", "random", "hash", "least_conn", "p2c"));

TEST(LbKetama, WeightsAreApproximatelyRespected) {
  // Consistent hashing spreads by arcs of a ring with 160 points per weight unit, so a share is
  // close to, not exactly, its weight: nginx behaves the same.
  auto lb = make_load_balancer("ketama", weighted_set());
  ASSERT_TRUE(lb);
  auto s = shares(**lb, 100000);
  for (const auto& b : weighted_set()) {
    const double want = b.weight / 10.0;
    EXPECT_NEAR(s[b.addr.to_string()], want, 0.03) << b.addr.to_string();
    std::printf("ketama share %s: %.4f (weight share %.2f)\n", b.addr.to_string().c_str(),
                s[b.addr.to_string()], want);
  }
}

TEST(LbRoundRobin, SmoothOrderLikeNginx) {
  // nginx's documented example: weights 5, 1, 1 give a a b a c a a.
  LoadBalancer<RoundRobin> lb(
      {backend("10.0.0.1:80", 5), backend("10.0.0.2:80", 1), backend("10.0.0.3:80", 1)});
  std::string order;
  for (int i = 0; i < 14; ++i)
    order += static_cast<char>('a' + (lb.select()->addr.to_string()[7] - '1'));
  EXPECT_EQ(order, "aabacaaaabacaa");
}

TEST(LbRoundRobin, ADownBackendPassesItsTurnAndTheOthersKeepTheirWeights) {
  LoadBalancer<RoundRobin> lb(
      {backend("10.0.0.1:80", 5), backend("10.0.0.2:80", 1), backend("10.0.0.3:80", 1)});
  ASSERT_TRUE(lb.set_health(lb.find(*SocketAddr::parse("10.0.0.2:80")), false, "test"));
  std::map<std::string, int> count;
  for (int i = 0; i < 6000; ++i) ++count[lb.select()->addr.to_string()];
  EXPECT_EQ(count["10.0.0.1:80"], 5000);
  EXPECT_EQ(count["10.0.0.3:80"], 1000);
  EXPECT_EQ(count.count("10.0.0.2:80"), 0u);
}

TEST(LbRoundRobin, EqualWeightsRotate) {
  LoadBalancer<RoundRobin> lb(
      {backend("10.0.0.1:80"), backend("10.0.0.2:80"), backend("10.0.0.3:80")});
  std::vector<std::string> seen;
  for (int i = 0; i < 6; ++i) seen.push_back(lb.select()->addr.to_string());
  EXPECT_EQ(seen[0], seen[3]);
  EXPECT_EQ(seen[1], seen[4]);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 3u);
}

TEST(LbRoundRobin, LargeWeightsStillSpreadEvenly) {
  // Total weight beyond the exact nginx path (n * total > 2^24): the deadline-ordered cycle.
  std::vector<Backend> bs;
  for (int i = 0; i < 300; ++i)
    bs.push_back(
        backend("10.1." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1) + ":80",
                static_cast<std::uint32_t>(100 + i)));
  LoadBalancer<RoundRobin> lb(bs);
  std::map<std::string, int> count;
  std::uint64_t total = 0;
  for (auto& b : bs) total += b.weight;
  for (std::uint64_t i = 0; i < total; ++i) ++count[lb.select()->addr.to_string()];
  for (auto& b : bs) EXPECT_EQ(count[b.addr.to_string()], static_cast<int>(b.weight));
}

// ---------------------------------------------------------------------------------------------
// Ketama: an independent, straightforward transcription of nginx's ngx_http_upstream_hash_module
// (ngx_http_upstream_update_chash, ngx_http_upstream_find_chash_point,
// ngx_http_upstream_get_chash_peer) computes the expected server for each key.

namespace nginx {

/// Bit-by-bit CRC-32 (ngx_crc32_update without its table); `crc` is the running, unfinalised value.
std::uint32_t crc32_update(std::uint32_t crc, const void* data, std::size_t len) {
  auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < len; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return crc;
}

struct Point {
  std::uint32_t hash;
  const std::string* server;
};

int cmp_points(const void* one, const void* two) {
  auto* a = static_cast<const Point*>(one);
  auto* b = static_cast<const Point*>(two);
  return a->hash < b->hash ? -1 : a->hash > b->hash ? 1 : 0;
}

struct Server {
  std::string server;  // as written in `server ...;`
  unsigned weight;
};

std::vector<Point> build(const std::vector<Server>& servers) {
  std::vector<Point> points;
  for (const auto& s : servers) {
    const std::string& server = s.server;
    const char *host, *port;
    std::size_t host_len, port_len;
    if (server.size() >= 5 && strncasecmp(server.data(), "unix:", 5) == 0) {
      host = server.data() + 5;
      host_len = server.size() - 5;
      port = nullptr;
      port_len = 0;
      goto done;
    }
    for (std::size_t j = 0; j < server.size(); j++) {
      char c = server[server.size() - j - 1];
      if (c == ':') {
        host = server.data();
        host_len = server.size() - j - 1;
        port = server.data() + server.size() - j;
        port_len = j;
        goto done;
      }
      if (c < '0' || c > '9') break;
    }
    host = server.data();
    host_len = server.size();
    port = nullptr;
    port_len = 0;
  done:
    std::uint32_t base_hash = 0xffffffffu;
    base_hash = crc32_update(base_hash, host, host_len);
    base_hash = crc32_update(base_hash, "", 1);
    base_hash = crc32_update(base_hash, port, port_len);
    union {
      std::uint32_t value;
      unsigned char byte[4];
    } prev_hash;
    prev_hash.value = 0;
    for (unsigned j = 0; j < s.weight * 160; j++) {
      std::uint32_t hash = base_hash;
      unsigned char le[4] = {static_cast<unsigned char>(prev_hash.value & 0xff),
                             static_cast<unsigned char>((prev_hash.value >> 8) & 0xff),
                             static_cast<unsigned char>((prev_hash.value >> 16) & 0xff),
                             static_cast<unsigned char>((prev_hash.value >> 24) & 0xff)};
      hash = crc32_update(hash, le, 4);
      hash ^= 0xffffffffu;
      points.push_back(Point{hash, &server});
      prev_hash.value = hash;
    }
  }
  std::qsort(points.data(), points.size(), sizeof(Point), cmp_points);
  std::size_t i = 0;
  for (std::size_t j = 1; j < points.size(); j++)
    if (points[i].hash != points[j].hash) points[++i] = points[j];
  points.resize(i + 1);
  return points;
}

const std::string& pick(const std::vector<Point>& points, const std::string& key) {
  const std::uint32_t hash = crc32_update(0xffffffffu, key.data(), key.size()) ^ 0xffffffffu;
  std::size_t i = 0, j = points.size(), k;
  while (i < j) {
    k = (i + j) / 2;
    if (hash > points[k].hash)
      i = k + 1;
    else if (hash < points[k].hash)
      j = k;
    else {
      i = k;
      break;
    }
  }
  return *points[i % points.size()].server;
}

}  // namespace nginx

TEST(LbKetama, MapsKeysExactlyAsNginxHashConsistent) {
  // Servers as an nginx upstream block would list them, with weights; the Backend's name is the
  // server string (for IP:port backends it defaults to the address and need not be given).
  const std::vector<nginx::Server> servers = {
      {"10.0.0.1:80", 1},        {"10.0.0.2:8080", 2}, {"[2001:db8::7]:443", 3},
      {"app.example.com:80", 1}, {"10.0.0.9", 2},      {"unix:/run/app.sock", 1},
      {"192.168.10.20:9000", 5},
  };
  std::vector<Backend> bs = {
      backend("10.0.0.1:80", 1),  // name defaults to "10.0.0.1:80"
      backend("10.0.0.2:8080", 2),
      backend("[2001:db8::7]:443", 3),
      backend("172.16.0.5:80", 1, "app.example.com:80"),  // a resolved DNS name
      backend("10.0.0.9:80", 2, "10.0.0.9"),              // `server 10.0.0.9;` (port implied)
      backend("unix:/run/app.sock", 1),
      backend("192.168.10.20:9000", 5),
  };
  LoadBalancer<KetamaHashing> lb(bs);
  ASSERT_EQ(lb.backends().size(), servers.size());
  const auto ring = nginx::build(servers);
  std::map<std::string, std::string> server_of;  // hash name -> nginx server string
  for (std::size_t i = 0; i < bs.size(); ++i) server_of[bs[i].hash_name()] = servers[i].server;

  std::map<std::string, int> per_server;
  for (int i = 0; i < 5000; ++i) {
    // Keys of the shapes `hash $request_uri consistent` or `hash $remote_addr consistent` see.
    std::string key = i % 2 ? "/item/" + std::to_string(i * 7919) + "?v=" + std::to_string(i)
                            : "203.0." + std::to_string(i / 250) + "." + std::to_string(i % 250);
    auto got = lb.select(key);
    ASSERT_TRUE(got);
    const std::string& want = nginx::pick(ring, key);
    ASSERT_EQ(server_of[got->hash_name()], want) << "key " << key;
    ++per_server[want];
  }
  EXPECT_EQ(per_server.size(), servers.size()) << "every server got keys";
}

TEST(LbKetama, RingHas160PointsPerWeightUnit) {
  LoadBalancer<KetamaHashing> lb({backend("10.0.0.1:80", 1), backend("10.0.0.2:80", 3)});
  KetamaHashing k(std::span<const BackendRef>(lb.refs()));
  EXPECT_EQ(k.points(), 4u * 160u);  // no collision among these 640 points
}

TEST(LbKetama, AddingOneBackendToNRemapsAtMostItsShare) {
  for (int n : {3, 10, 50}) {
    std::vector<Backend> bs;
    for (int i = 0; i < n; ++i) bs.push_back(backend("10.2.0." + std::to_string(i + 1) + ":8080"));
    LoadBalancer<KetamaHashing> lb(bs);
    const int keys = 100000;
    std::vector<std::string> before(keys);
    for (int i = 0; i < keys; ++i)
      before[i] = lb.select("user-" + std::to_string(i))->addr.to_string();
    bs.push_back(backend("10.2.1.1:8080"));
    ASSERT_TRUE(lb.update(bs));
    int moved = 0, moved_elsewhere = 0;
    for (int i = 0; i < keys; ++i) {
      auto now = lb.select("user-" + std::to_string(i))->addr.to_string();
      if (now != before[i]) {
        ++moved;
        if (now != "10.2.1.1:8080") ++moved_elsewhere;
      }
    }
    const double frac = static_cast<double>(moved) / keys;
    std::printf("ketama: %d -> %d backends moved %.4f of keys (1/(N+1) = %.4f)\n", n, n + 1, frac,
                1.0 / (n + 1));
    EXPECT_LE(frac, 1.0 / (n + 1) + 0.02) << n;
    EXPECT_EQ(moved_elsewhere, 0) << "keys only move to the new backend";
  }
}

TEST(LbKetama, DownBackendKeysGoToTheNextOnTheRingOthersStay) {
  std::vector<Backend> bs;
  for (int i = 0; i < 5; ++i) bs.push_back(backend("10.3.0." + std::to_string(i + 1) + ":80"));
  LoadBalancer<KetamaHashing> lb(bs);
  std::vector<std::string> before;
  for (int i = 0; i < 2000; ++i)
    before.push_back(lb.select("k" + std::to_string(i))->addr.to_string());
  ASSERT_TRUE(lb.set_health(lb.find(bs[2].addr), false, "test"));
  std::set<std::string> receivers;
  for (int i = 0; i < 2000; ++i) {
    auto now = lb.select("k" + std::to_string(i))->addr.to_string();
    ASSERT_NE(now, bs[2].addr.to_string());
    if (before[i] != bs[2].addr.to_string())
      EXPECT_EQ(now, before[i]);
    else
      receivers.insert(now);
  }
  EXPECT_GE(receivers.size(), 2u) << "a down backend's keys spread over several others";
}

TEST(LbKetama, EmptyKeyRotates) {
  LoadBalancer<KetamaHashing> lb({backend("10.0.0.1:80"), backend("10.0.0.2:80")});
  std::set<std::string> seen;
  for (int i = 0; i < 4; ++i) seen.insert(lb.select("")->addr.to_string());
  EXPECT_EQ(seen.size(), 2u);
}

TEST(LbKetama, BackendsSharingANameShareItsPoints) {
  // Two addresses of one DNS name: keys of that name are split between them by key.
  LoadBalancer<KetamaHashing> lb({backend("10.0.0.1:80", 1, "api:80"),
                                  backend("10.0.0.2:80", 1, "api:80"), backend("10.0.0.3:80")});
  std::map<std::string, int> count;
  for (int i = 0; i < 10000; ++i) ++count[lb.select("k" + std::to_string(i))->addr.to_string()];
  EXPECT_GT(count["10.0.0.1:80"], 1500);
  EXPECT_GT(count["10.0.0.2:80"], 1500);
  // The shared name owns about half the ring, like one server in nginx.
  EXPECT_NEAR(count["10.0.0.1:80"] + count["10.0.0.2:80"], 5000, 1000);
}

// ---------------------------------------------------------------------------------------------
// Health, accept, budget.

class AnySelection : public ::testing::TestWithParam<const char*> {};

TEST_P(AnySelection, SkipsUnhealthyDisabledAndRejectedBackends) {
  auto lb = make_load_balancer(GetParam(), weighted_set());
  ASSERT_TRUE(lb);
  auto& l = **lb;
  ASSERT_TRUE(l.set_health(l.find(weighted_set()[3].addr), false, "test"));
  ASSERT_TRUE(l.set_enabled(weighted_set()[2].addr, false));
  auto reject = [](const Backend& b) { return b.addr.to_string() != "10.0.0.2:80"; };
  for (int i = 0; i < 2000; ++i) {
    auto b = l.select_any("k" + std::to_string(i), 256, reject);
    ASSERT_TRUE(b);
    ASSERT_EQ(b->addr.to_string(), "10.0.0.1:80");
  }
  // Nothing usable: empty.
  ASSERT_TRUE(l.set_health(l.find(weighted_set()[0].addr), false, "test"));
  EXPECT_FALSE(l.select_any("k", 256, reject));
  // Back up: selected again.
  ASSERT_TRUE(l.set_health(l.find(weighted_set()[3].addr), true, "test"));
  EXPECT_EQ(l.select_any("k", 256, reject)->addr.to_string(), "10.0.0.4:80");
}

TEST_P(AnySelection, BudgetBoundsTheSearch) {
  std::vector<Backend> bs;
  for (int i = 0; i < 600; ++i)
    bs.push_back(
        backend("10.4." + std::to_string(i / 200) + "." + std::to_string(i % 200 + 1) + ":80"));
  auto lb = make_load_balancer(GetParam(), bs);
  ASSERT_TRUE(lb);
  int calls = 0;
  auto none = [&](const Backend&) {
    ++calls;
    return false;
  };
  EXPECT_FALSE((*lb)->select_any("k", 10, none));
  EXPECT_EQ(calls, 10);
  calls = 0;
  EXPECT_FALSE((*lb)->select_any("k", 100000, none));
  EXPECT_EQ(calls, 600) << "each backend is asked once (beyond the 256 inline bits too)";
  EXPECT_FALSE((*lb)->select_any("k", 0));
}

TEST_P(AnySelection, EmptySetSelectsNothing) {
  auto lb = make_load_balancer(GetParam(), {});
  ASSERT_TRUE(lb);
  EXPECT_FALSE((*lb)->select_any("k"));
}

INSTANTIATE_TEST_SUITE_P(Lb, AnySelection,
                         ::testing::Values("round_robin", "random", "hash", "ketama", "least_conn",
                                           "p2c"));

TEST(LbHash, SameKeySameBackendAndDeterministicFallback) {
  LoadBalancer<FNVHash> lb(weighted_set());
  for (int i = 0; i < 100; ++i) {
    const std::string k = "k" + std::to_string(i);
    EXPECT_EQ(lb.select(k)->addr, lb.select(k)->addr);
  }
  const auto first = lb.select("user-42");
  ASSERT_TRUE(lb.set_health(first, false, "test"));
  const auto second = lb.select("user-42");
  EXPECT_NE(second->addr, first->addr);
  EXPECT_EQ(lb.select("user-42")->addr, second->addr);
}

// ---------------------------------------------------------------------------------------------
// In-flight counts.

TEST(LbLeastConn, BalancesRequestsInFlightByWeight) {
  LoadBalancer<LeastConnections> lb(
      {backend("10.0.0.1:80", 1), backend("10.0.0.2:80", 2), backend("10.0.0.3:80", 3)});
  std::vector<InFlight> held;
  for (int i = 0; i < 600; ++i) held.push_back(lb.select().track());
  for (const auto& st : lb.status()) {
    const int want = 100 * static_cast<int>(st.backend.weight);
    EXPECT_NEAR(st.inflight, want, 1) << st.backend.addr.to_string();
  }
  // Releasing one backend's requests makes it the choice until it catches up.
  const auto busiest = held.back().backend();
  std::erase_if(held, [&](const InFlight& f) { return f.backend() == busiest; });
  EXPECT_EQ(busiest.inflight(), 0);
  EXPECT_EQ(lb.select(), busiest);
  held.clear();
  for (const auto& st : lb.status()) EXPECT_EQ(st.inflight, 0);
}

TEST(LbP2c, AvoidsTheLoadedBackend) {
  LoadBalancer<PowerOfTwoChoices> lb({backend("10.0.0.1:80"), backend("10.0.0.2:80"),
                                      backend("10.0.0.3:80"), backend("10.0.0.4:80")});
  std::vector<InFlight> load;
  const auto hot = lb.find(*SocketAddr::parse("10.0.0.1:80"));
  for (int i = 0; i < 50; ++i) load.push_back(hot.track());
  int to_hot = 0;
  for (int i = 0; i < 10000; ++i) to_hot += lb.select() == hot;
  // Chosen only when both draws are the hot one, which the resampling rules out.
  EXPECT_EQ(to_hot, 0);
}

TEST(LbInFlight, GuardMovesAndSurvivesUpdates) {
  LoadBalancer<RoundRobin> lb({backend("10.0.0.1:80")});
  InFlight a = lb.select().track();
  InFlight b = std::move(a);
  EXPECT_EQ(lb.find(*SocketAddr::parse("10.0.0.1:80")).inflight(), 1);
  // Same address, new weight: the count follows the address.
  ASSERT_TRUE(lb.update({backend("10.0.0.1:80", 7), backend("10.0.0.2:80")}));
  EXPECT_EQ(lb.find(*SocketAddr::parse("10.0.0.1:80")).inflight(), 1);
  b.reset();
  EXPECT_EQ(lb.find(*SocketAddr::parse("10.0.0.1:80")).inflight(), 0);
}

// ---------------------------------------------------------------------------------------------
// Updates and passive health.

TEST(LbUpdate, KeepsHealthByAddressAndReportsChanges) {
  LoadBalancer<RoundRobin> lb({backend("10.0.0.1:80"), backend("10.0.0.2:80")});
  ASSERT_TRUE(lb.set_health(lb.find(*SocketAddr::parse("10.0.0.2:80")), false, "test"));
  auto same = lb.update({backend("10.0.0.2:80"), backend("10.0.0.1:80")});
  ASSERT_TRUE(same);
  EXPECT_FALSE(*same) << "a reordered set is not a change";
  auto changed =
      lb.update({backend("10.0.0.2:80"), backend("10.0.0.3:80"), backend("10.0.0.3:80")});
  ASSERT_TRUE(changed);
  EXPECT_TRUE(*changed);
  auto st = lb.status();
  ASSERT_EQ(st.size(), 2u) << "duplicates dropped";
  EXPECT_FALSE(st[0].healthy) << "10.0.0.2 stays down";
  EXPECT_TRUE(st[1].healthy) << "a new backend starts healthy";
  for (int i = 0; i < 10; ++i) EXPECT_EQ(lb.select()->addr.to_string(), "10.0.0.3:80");
  EXPECT_FALSE(lb.update({backend("10.0.0.1:80", 0)}));
  EXPECT_FALSE(lb.update({Backend{}}));
  EXPECT_EQ(lb.backends().size(), 2u) << "a rejected update changes nothing";
}

TEST(LbPassive, ConsecutiveFailuresMarkDownASuccessResets) {
  std::vector<std::pair<std::string, bool>> flips;
  LoadBalancerOptions o;
  o.passive_failures = 3;
  o.passive_retry_after = Millis(3600000);
  o.on_health_change = [&](const Backend& b, bool up) {
    flips.emplace_back(b.addr.to_string(), up);
  };
  LoadBalancer<RoundRobin> lb({backend("10.0.0.1:80"), backend("10.0.0.2:80")}, o);
  const auto a = *SocketAddr::parse("10.0.0.1:80");
  lb.report(a, false);
  lb.report(a, false);
  lb.report(a, true);  // resets
  lb.report(a, false);
  lb.report(a, false);
  EXPECT_TRUE(lb.find(a).healthy());
  lb.report(a, false);
  EXPECT_FALSE(lb.find(a).healthy());
  ASSERT_EQ(flips.size(), 1u);
  EXPECT_EQ(flips[0], std::make_pair(std::string("10.0.0.1:80"), false));
  EXPECT_EQ(lb.stats().passive_marked_down, 1u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(lb.select()->addr.to_string(), "10.0.0.2:80");
}

TEST(LbPassive, WithoutActiveChecksTrafficRetriesAfterTheDelay) {
  LoadBalancerOptions o;
  o.passive_failures = 1;
  o.passive_retry_after = Millis(30);
  LoadBalancer<RoundRobin> lb({backend("10.0.0.1:80")}, o);
  const auto a = *SocketAddr::parse("10.0.0.1:80");
  const auto t0 = std::chrono::steady_clock::now();
  lb.report(a, false);
  EXPECT_FALSE(lb.select()) << "down, nothing else";
  // The backend becomes eligible by itself once the delay passed (bounded wait on the clock).
  BackendRef b;
  while (!(b = lb.select()) && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5)) {
  }
  ASSERT_TRUE(b);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, Millis(30));
  EXPECT_FALSE(b.healthy()) << "on probation until a request succeeds";
  lb.report(b, true);
  EXPECT_TRUE(b.healthy());
}

TEST(LbPassive, OffByDefault) {
  LoadBalancer<RoundRobin> lb({backend("10.0.0.1:80")});
  for (int i = 0; i < 100; ++i) lb.report(*SocketAddr::parse("10.0.0.1:80"), false);
  EXPECT_TRUE(lb.select().healthy());
}

// ---------------------------------------------------------------------------------------------
// The API older code uses.

TEST(LbCompat, TryFromIterAndSelectPeer) {
  std::vector<std::string> addrs = {"127.0.0.1:8001", "127.0.0.1:8002"};
  auto lb = LoadBalancer<RoundRobin>::try_from_iter(addrs);
  ASSERT_TRUE(lb);
  auto p1 = (*lb)->select_peer(), p2 = (*lb)->select_peer(), p3 = (*lb)->select_peer();
  ASSERT_TRUE(p1 && p2 && p3);
  EXPECT_NE(p1->address, p2->address);
  EXPECT_EQ(p1, p3) << "the same shared peer, not a copy";
  EXPECT_EQ((*lb)->backends().size(), 2u);
  for (const auto& b : (*lb)->backends()) EXPECT_EQ(b.weight, 1u);
  auto bad = LoadBalancer<RoundRobin>::try_from_iter({"127.0.0.1:8001", "nope"});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().to_string().find("nope"), std::string::npos);

  RoundRobin rr(3);
  EXPECT_EQ(rr.next(), 0u);
  EXPECT_EQ(rr.next({}), 1u);
  EXPECT_EQ(rr.next(), 2u);
  EXPECT_EQ(rr.next(), 0u);
}

TEST(LbCompat, PeerFactoryBuildsThePeers) {
  LoadBalancerOptions o;
  o.peer_factory = [](const Backend& b) {
    auto p = std::make_shared<HttpPeer>(b.addr, false);
    p->options.connection_timeout = Millis(123);
    return p;
  };
  LoadBalancer<Random> lb({backend("10.0.0.1:80")}, o);
  EXPECT_EQ(lb.select_peer()->options.connection_timeout, Millis(123));
}

TEST(LbFactory, NamesAndErrors) {
  for (const char* n : {"round_robin", "random", "hash", "ketama", "least_conn", "p2c"}) {
    auto lb = make_load_balancer(n, weighted_set());
    ASSERT_TRUE(lb) << n;
    EXPECT_EQ((*lb)->selection_name(), n);
  }
  EXPECT_FALSE(make_load_balancer("fastest", weighted_set()));
  EXPECT_FALSE(make_load_balancer("random", {backend("10.0.0.1:80", 70000)}));
}

}  // namespace
