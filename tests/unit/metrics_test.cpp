// The metrics registry (counters, gauges, histograms, labels, collectors, exposition text) and the
// access log's queues, without sockets.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <portico/observe/access_log.hpp>
#include <portico/observe/metrics.hpp>
#include <portico/testing/fake_session.hpp>

namespace {

namespace obs = portico::observe;

TEST(Metrics, CounterGaugeAndLabels) {
  obs::Registry r;
  auto& fam = r.counter_family("t_requests_total", "Requests.", {"code"});
  fam.with({"200"}).inc();
  fam.with({"200"}).inc(4);
  fam.with({"404"}).inc();
  EXPECT_EQ(fam.with({"200"}).value(), 5u);
  EXPECT_EQ(fam.with({"404"}).value(), 1u);
  EXPECT_EQ(&fam.with({"200"}), &fam.with({"200"}));  // one series per label set

  auto& g = r.gauge("t_active", "Active.");
  g.inc();
  g.inc();
  g.dec();
  g.add(-3);
  EXPECT_EQ(g.value(), -2);

  // Registering again returns the same family; a different shape is refused.
  EXPECT_EQ(&r.counter_family("t_requests_total", "Requests.", {"code"}), &fam);
  EXPECT_THROW(r.counter_family("t_requests_total", "x", {"other"}), std::invalid_argument);
  EXPECT_THROW(r.gauge_family("t_requests_total", "x", {"code"}), std::invalid_argument);
  EXPECT_THROW(r.counter("bad name", "x"), std::invalid_argument);
  EXPECT_THROW(r.counter_family("t_x", "x", {"__reserved"}), std::invalid_argument);
  EXPECT_THROW(r.histogram_family("t_h", "x", {"le"}), std::invalid_argument);
  EXPECT_THROW(r.histogram("t_h2", "x", {1, 0.5}), std::invalid_argument);
  EXPECT_THROW(fam.with({"1", "2"}), std::invalid_argument);
}

TEST(Metrics, HistogramBucketsAreCumulativeInTheExposition) {
  obs::Registry r;
  auto& h = r.histogram("t_latency_seconds", "Latency.", {0.1, 0.5, 1});
  for (double v : {0.05, 0.1, 0.2, 0.7, 3.0}) h.observe(v);
  h.observe(std::chrono::milliseconds(300));
  const auto snap = h.snapshot();
  ASSERT_EQ(snap.counts.size(), 4u);
  EXPECT_EQ(snap.counts[0], 2u);  // 0.05 and 0.1 (le is inclusive)
  EXPECT_EQ(snap.counts[1], 2u);  // 0.2, 0.3
  EXPECT_EQ(snap.counts[2], 1u);  // 0.7
  EXPECT_EQ(snap.counts[3], 1u);  // 3.0
  EXPECT_EQ(snap.count, 6u);
  EXPECT_NEAR(snap.sum, 4.35, 1e-9);
  EXPECT_EQ(r.render_prometheus(),
            "# HELP t_latency_seconds Latency.\n"
            "# TYPE t_latency_seconds histogram\n"
            "t_latency_seconds_bucket{le=\"0.1\"} 2\n"
            "t_latency_seconds_bucket{le=\"0.5\"} 4\n"
            "t_latency_seconds_bucket{le=\"1\"} 5\n"
            "t_latency_seconds_bucket{le=\"+Inf\"} 6\n"
            "t_latency_seconds_sum 4.35\n"
            "t_latency_seconds_count 6\n");
}

TEST(Metrics, ExpositionTextEscapesAndSortsFamilies) {
  obs::Registry r;
  r.counter_family("t_b_total", "Line one\nback\\slash.", {"path"})
      .with({"/a\"q\"\\\n"})
      .inc(3);
  r.gauge("t_a", "A gauge.").add(7);
  auto& h = r.histogram_family("t_c_seconds", "H.", {"svc"}, {0.5});
  h.with({"x"}).observe(0.25);
  r.add_collector([](obs::Collection& c) {
    c.add("t_b_total", obs::MetricType::Counter, "ignored, the family exists",
          {obs::Label{"path", "/collected"}}, 2);
    c.add("t_d_ratio", obs::MetricType::Gauge, "A ratio.", {}, 0.25);
  });
  EXPECT_EQ(r.render_prometheus(),
            "# HELP t_a A gauge.\n"
            "# TYPE t_a gauge\n"
            "t_a 7\n"
            "# HELP t_b_total Line one\\nback\\\\slash.\n"
            "# TYPE t_b_total counter\n"
            "t_b_total{path=\"/a\\\"q\\\"\\\\\\n\"} 3\n"
            "t_b_total{path=\"/collected\"} 2\n"
            "# HELP t_c_seconds H.\n"
            "# TYPE t_c_seconds histogram\n"
            "t_c_seconds_bucket{svc=\"x\",le=\"0.5\"} 1\n"
            "t_c_seconds_bucket{svc=\"x\",le=\"+Inf\"} 1\n"
            "t_c_seconds_sum{svc=\"x\"} 0.25\n"
            "t_c_seconds_count{svc=\"x\"} 1\n"
            "# HELP t_d_ratio A ratio.\n"
            "# TYPE t_d_ratio gauge\n"
            "t_d_ratio 0.25\n");
}

TEST(Metrics, CollectorsCanBeRemoved) {
  obs::Registry r;
  const auto id = r.add_collector([](obs::Collection& c) {
    c.add("t_x", obs::MetricType::Gauge, "X.", {}, 1);
  });
  EXPECT_NE(r.render_prometheus().find("t_x 1"), std::string::npos);
  r.remove_collector(id);
  EXPECT_EQ(r.render_prometheus(), "");
}

TEST(Metrics, ConcurrentRecordingFromManyThreadsGivesExactTotals) {
  // More threads than cells on small machines: shared cells must still count exactly.
  obs::Registry r;
  auto& fam = r.counter_family("t_total", "T.", {"k"});
  auto& g = r.gauge("t_g", "G.");
  auto& h = r.histogram("t_h", "H.", {1, 2});
  const int threads = static_cast<int>(obs::detail::shard_count()) + 4;
  constexpr int kPer = 50'000;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      auto& mine = fam.with({t % 2 ? "odd" : "even"});
      for (int i = 0; i < kPer; ++i) {
        mine.inc();
        g.inc();
        if (i % 2) g.dec();
        h.observe(static_cast<double>(i % 3));  // 0, 1, 2: buckets le=1 gets two of three
      }
    });
  }
  for (auto& t : ts) t.join();
  const std::uint64_t total = static_cast<std::uint64_t>(threads) * kPer;
  EXPECT_EQ(fam.with({"odd"}).value() + fam.with({"even"}).value(), total);
  EXPECT_EQ(fam.with({"even"}).value(), static_cast<std::uint64_t>((threads + 1) / 2) * kPer);
  EXPECT_EQ(g.value(), static_cast<std::int64_t>(total / 2));
  const auto snap = h.snapshot();
  EXPECT_EQ(snap.count, total);
  std::uint64_t ones = 0, twos = 0;
  for (int i = 0; i < kPer; ++i) (i % 3 == 2 ? twos : ones) += 1;
  EXPECT_EQ(snap.counts[0], ones * static_cast<std::uint64_t>(threads));
  EXPECT_EQ(snap.counts[1], twos * static_cast<std::uint64_t>(threads));
  EXPECT_EQ(snap.counts[2], 0u);
  EXPECT_DOUBLE_EQ(snap.sum, static_cast<double>(threads) * (kPer / 3 * 3.0 + 1.0 * (kPer % 3 > 1)));
}

TEST(Metrics, CellsPassFromThreadsThatEndToThreadsThatStartWithExactTotals) {
  // A thread with a cell of its own writes it without atomic read-modify-writes; when it ends
  // the cell goes to the next thread, which must go on from the last value written.
  obs::Registry r;
  auto& c = r.counter("t_total", "T.");
  auto& g = r.gauge("t_g", "G.");
  auto& h = r.histogram("t_h", "H.", {1});
  const int per_round = static_cast<int>(obs::detail::shard_count()) + 2;  // some share cell 0
  constexpr int kRounds = 6, kPer = 20'000;
  for (int round = 0; round < kRounds; ++round) {
    std::vector<std::thread> ts;
    for (int t = 0; t < per_round; ++t)
      ts.emplace_back([&] {
        for (int i = 0; i < kPer; ++i) {
          c.inc();
          g.add(2);
          g.dec();
          h.observe(0.5);  // exact in binary: the sum is exact too
        }
      });
    for (auto& t : ts) t.join();
    const auto total = static_cast<std::uint64_t>(round + 1) * per_round * kPer;
    ASSERT_EQ(c.value(), total) << "round " << round;
    ASSERT_EQ(g.value(), static_cast<std::int64_t>(total));
    const auto snap = h.snapshot();
    ASSERT_EQ(snap.count, total);
    ASSERT_EQ(snap.counts[0], total);
    ASSERT_EQ(snap.sum, 0.5 * static_cast<double>(total));
  }
}

TEST(Metrics, ScrapingWhileRecordingIsSafe) {
  obs::Registry r;
  auto& fam = r.counter_family("t_total", "T.", {"k"});
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; !stop.load(); ++i) fam.with({std::to_string(i % 50)}).inc();
  });
  for (int i = 0; i < 200; ++i) EXPECT_FALSE(r.render_prometheus().empty());
  stop = true;
  writer.join();
}

// -- access log ----------------------------------------------------------------------------------

std::string temp_path(const char* tag) {
  return ::testing::TempDir() + "portico_" + tag + "_" + std::to_string(::getpid()) + ".log";
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

TEST(AccessLog, UnknownVariableIsRefused) {
  auto r = obs::AccessLog::open(temp_path("bad"), "$status $no_such_thing");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().to_string().find("$no_such_thing"), std::string::npos);
}

TEST(AccessLog, FormatsASessionLine) {
  const std::string path = temp_path("fmt");
  std::remove(path.c_str());
  auto log = obs::AccessLog::open(
      path, "$method $request_uri $path $args $status $body_bytes_sent $upstream_addr "
            "$upstream_reused $retries $error ${service}! $http_user_agent $http_x_missing "
            "\"$request\" $request_time");
  ASSERT_TRUE(log) << log.error().to_string();
  portico::testing::FakeSession s(
      portico::RequestHeader::build("GET", "/a/b?x=1"));
  s.req_header().headers().append("User-Agent", "curl \"7\"");
  (*log)->log(s, nullptr, "svc");
  portico::Error e = portico::Error::upstream(portico::ErrorType::ConnectRefused);
  (*log)->log(s, &e, "svc");
  (*log)->flush();
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].substr(0, lines[0].rfind(' ')),
            "GET /a/b?x=1 /a/b x=1 0 0 - - 0 - svc! curl \\x227\\x22 - \"GET /a/b?x=1 HTTP/1.1\"");
  EXPECT_NE(lines[1].find(" ConnectRefused svc! "), std::string::npos);
  std::remove(path.c_str());
}

TEST(AccessLog, FullBufferDropsAndCountsLines) {
  const std::string path = temp_path("full");
  std::remove(path.c_str());
  obs::AccessLogOptions o;
  o.path = path;
  o.buffer_bytes = 1000;
  o.wake_bytes = 0;                           // only the interval or flush() empties the queue
  o.flush_interval = std::chrono::hours(1);
  auto log = obs::AccessLog::open(o);
  ASSERT_TRUE(log);
  const std::string line(99, 'x');  // 100 bytes with the newline: ten fit
  for (int i = 0; i < 25; ++i) (*log)->write_line(line);
  EXPECT_EQ((*log)->lines_queued(), 10u);
  EXPECT_EQ((*log)->lines_dropped(), 15u);
  (*log)->flush();
  EXPECT_EQ(read_lines(path).size(), 10u);
  // Emptied: room again.
  for (int i = 0; i < 5; ++i) (*log)->write_line(line);
  (*log)->flush();
  EXPECT_EQ(read_lines(path).size(), 15u);
  EXPECT_EQ((*log)->lines_dropped(), 15u);
  std::remove(path.c_str());
}

TEST(AccessLog, LinesFromManyThreadsAllArriveWhole) {
  const std::string path = temp_path("threads");
  std::remove(path.c_str());
  obs::AccessLogOptions o;
  o.path = path;
  o.buffer_bytes = 4096;  // small: the writer has to keep up through wakes
  o.flush_interval = std::chrono::milliseconds(5);
  std::uint64_t dropped = 0;
  {
    auto log = obs::AccessLog::open(o);
    ASSERT_TRUE(log);
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t)
      ts.emplace_back([&, t] {
        for (int i = 0; i < 2000; ++i) (*log)->write_line("thread " + std::to_string(t) + " line " + std::to_string(i));
      });
    for (auto& t : ts) t.join();
    dropped = (*log)->lines_dropped();
    EXPECT_EQ((*log)->lines_queued() + dropped, 8000u);
  }  // destruction writes the rest
  const auto lines = read_lines(path);
  EXPECT_EQ(lines.size() + dropped, 8000u);
  for (const auto& l : lines) ASSERT_EQ(l.rfind("thread ", 0), 0u) << l;
  std::remove(path.c_str());
}

TEST(AccessLog, ReopenWritesToTheNewFile) {
  const std::string path = temp_path("reopen");
  const std::string moved = path + ".1";
  std::remove(path.c_str());
  std::remove(moved.c_str());
  auto log = obs::AccessLog::open(path, "$status");
  ASSERT_TRUE(log);
  (*log)->write_line("before");
  (*log)->flush();
  ASSERT_EQ(std::rename(path.c_str(), moved.c_str()), 0);
  obs::reopen_access_logs();
  (*log)->write_line("after");
  (*log)->flush();
  EXPECT_EQ(read_lines(moved), std::vector<std::string>{"before"});
  EXPECT_EQ(read_lines(path), std::vector<std::string>{"after"});
  std::remove(path.c_str());
  std::remove(moved.c_str());
}

}  // namespace
