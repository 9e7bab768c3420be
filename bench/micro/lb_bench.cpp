// Load balancer selection: nanoseconds per select() for each algorithm, over 10 and 1,000
// weighted backends, all healthy (the common case) and with every other backend down (fallbacks).
//
//   build/bench/portico_micro --benchmark_filter=Lb
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include <portico/lb/load_balancer.hpp>

using namespace portico;

namespace {

std::vector<Backend> backends(int n) {
  std::vector<Backend> v;
  for (int i = 0; i < n; ++i) {
    auto b =
        Backend::parse("10." + std::to_string(i / 65536) + "." + std::to_string(i / 256 % 256) +
                           "." + std::to_string(i % 256) + ":8080",
                       static_cast<std::uint32_t>(1 + i % 4));
    v.push_back(*b);
  }
  return v;
}

const std::vector<std::string>& keys() {
  static const std::vector<std::string> k = [] {
    std::vector<std::string> v;
    for (int i = 0; i < 1024; ++i) v.push_back("/api/v1/users/" + std::to_string(i * 7919));
    return v;
  }();
  return k;
}

template <class S>
void BM_LbSelect(benchmark::State& st) {
  LoadBalancer<S> lb(backends(static_cast<int>(st.range(0))));
  if (st.range(1)) {
    auto refs = lb.refs();
    // Straight to the state: set_health would log every flip.
    for (std::size_t i = 0; i < refs.size(); i += 2) refs[i].state().healthy.store(false);
  }
  const auto& k = keys();
  std::size_t i = 0;
  for (auto _ : st) {
    BackendRef b = lb.select(k[i++ & 1023]);
    benchmark::DoNotOptimize(b);
  }
  st.SetLabel(st.range(1) ? "half down" : "all up");
}

#define LB_ARGS ->Args({10, 0})->Args({1000, 0})->Args({10, 1})->Args({1000, 1})
BENCHMARK_TEMPLATE(BM_LbSelect, RoundRobin) LB_ARGS;
BENCHMARK_TEMPLATE(BM_LbSelect, Random) LB_ARGS;
BENCHMARK_TEMPLATE(BM_LbSelect, FNVHash) LB_ARGS;
BENCHMARK_TEMPLATE(BM_LbSelect, KetamaHashing) LB_ARGS;
BENCHMARK_TEMPLATE(BM_LbSelect, LeastConnections) LB_ARGS;
BENCHMARK_TEMPLATE(BM_LbSelect, PowerOfTwoChoices) LB_ARGS;

/// select() plus the in-flight guard a least_conn / p2c proxy keeps per request.
template <class S>
void BM_LbSelectTracked(benchmark::State& st) {
  LoadBalancer<S> lb(backends(static_cast<int>(st.range(0))));
  for (auto _ : st) {
    InFlight f = lb.select().track();
    benchmark::DoNotOptimize(f);
  }
}
BENCHMARK_TEMPLATE(BM_LbSelectTracked, LeastConnections)->Arg(10)->Arg(1000);
BENCHMARK_TEMPLATE(BM_LbSelectTracked, PowerOfTwoChoices)->Arg(10)->Arg(1000);

/// Two threads selecting from one balancer (shared counters and reference counts).
template <class S>
void BM_LbSelectShared(benchmark::State& st) {
  static LoadBalancer<S>* lb = nullptr;
  if (st.thread_index() == 0) lb = new LoadBalancer<S>(backends(10));
  const auto& k = keys();
  std::size_t i = static_cast<std::size_t>(st.thread_index()) * 512;
  for (auto _ : st) {
    BackendRef b = lb->select(k[i++ & 1023]);
    benchmark::DoNotOptimize(b);
  }
  if (st.thread_index() == 0) {
    delete lb;
    lb = nullptr;
  }
}
BENCHMARK_TEMPLATE(BM_LbSelectShared, RoundRobin)->Threads(2);
BENCHMARK_TEMPLATE(BM_LbSelectShared, PowerOfTwoChoices)->Threads(2);

/// The read-side cost of the RCU scheme alone.
void BM_LbRcuReadSection(benchmark::State& st) {
  detail::rcu::Cell<int> cell(std::make_unique<const int>(7));
  for (auto _ : st) {
    detail::rcu::ReadGuard g;
    benchmark::DoNotOptimize(*cell.load());
  }
}
BENCHMARK(BM_LbRcuReadSection);

/// Rebuilding the selection when the set changes (control plane).
template <class S>
void BM_LbUpdate(benchmark::State& st) {
  LoadBalancer<S> lb;
  const auto a = backends(static_cast<int>(st.range(0)));
  auto b = a;
  b.pop_back();
  bool flip = false;
  for (auto _ : st) {
    benchmark::DoNotOptimize(lb.update((flip = !flip) ? a : b));
  }
}
BENCHMARK_TEMPLATE(BM_LbUpdate, RoundRobin)->Arg(1000)->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_LbUpdate, KetamaHashing)->Arg(1000)->Unit(benchmark::kMicrosecond);

}  // namespace
