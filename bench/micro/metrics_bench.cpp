// Cost of recording metrics and access-log lines on the request path: nanoseconds per counter
// increment, histogram observation, and per request for everything the proxy records at the end
// of a request (ProxyObserver::request_done), with and without an access log line.
//
//   build/bench/portico_micro --benchmark_filter=Metrics
#include <benchmark/benchmark.h>

#include <portico/observe/access_log.hpp>
#include <portico/observe/metrics.hpp>
#include <portico/proxy/session.hpp>

#include "observe/proxy_observer.hpp"

using namespace portico;
namespace obs = portico::observe;

namespace {

/// A finished proxied request as finish_request() hands it over.
class DoneSession final : public Session {
 public:
  DoneSession() {
    req_ = RequestHeader::build("GET", "/api/v1/items?id=42");
    req_.headers().append("Host", "example.com");
    req_.headers().append("User-Agent", "bench/1.0");
    client_addr_ = SocketAddr::loopback(40000);
    peer_ = make_peer(SocketAddr::loopback(8080));
    start_ = attempt_at_ = connected_at_ = resp_head_at_ = clock::now();
    resp_status_ = 200;
    head_sent_ = 120;
    body_sent_ = 512;
    upstream_reused_ = true;
  }
  task<Result<void>> write_response_header(ResponseHeader, bool) override { co_return ok(); }
  task<Result<void>> write_response_body(std::string_view, bool) override { co_return ok(); }
};

void BM_MetricsCounterInc(benchmark::State& st) {
  static obs::Registry r;
  auto& c = r.counter_family("bench_total", "b", {"k"}).with({"v"});
  for (auto _ : st) c.inc();
  benchmark::DoNotOptimize(c.value());
}
BENCHMARK(BM_MetricsCounterInc)->Threads(1)->Threads(2);

void BM_MetricsHistogramObserve(benchmark::State& st) {
  static obs::Registry r;
  auto& h = r.histogram_family("bench_seconds", "b", {"k"}).with({"v"});
  double v = 0.0001;
  for (auto _ : st) {
    h.observe(v);
    v = v < 20 ? v * 1.7 : 0.0001;  // walk over every bucket
  }
}
BENCHMARK(BM_MetricsHistogramObserve)->Threads(1)->Threads(2);

void BM_MetricsRequestDone(benchmark::State& st) {
  static auto r = std::make_shared<obs::Registry>();
  static detail::ProxyObserver o(r, "bench");
  DoneSession s;
  for (auto _ : st) o.request_done(s, nullptr);
}
BENCHMARK(BM_MetricsRequestDone);

void BM_MetricsRequestDoneWithAccessLog(benchmark::State& st) {
  auto r = std::make_shared<obs::Registry>();
  detail::ProxyObserver o(r, "bench");
  obs::AccessLogOptions opts;
  opts.path = "/dev/null";
  opts.buffer_bytes = 4 << 20;
  auto log = obs::AccessLog::open(opts);
  if (!log) {
    st.SkipWithError("cannot open /dev/null");
    return;
  }
  o.access_log = *log;
  DoneSession s;
  for (auto _ : st) o.request_done(s, nullptr);
  st.counters["dropped"] = static_cast<double>((*log)->lines_dropped());
}
BENCHMARK(BM_MetricsRequestDoneWithAccessLog);

}  // namespace
