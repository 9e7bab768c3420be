// Metrics: counters, gauges and histograms with labels, recorded per thread without locks, and
// rendered in the Prometheus text exposition format (version 0.0.4).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace portico::observe {

namespace detail {

inline constexpr std::size_t kCacheLine = 64;

/// Cells each series is split into (a power of two, from the number of CPUs, 4..64). Cell 0 is
/// shared; each of the others belongs to one thread at a time, given on the thread's first
/// record and given back when it ends. A thread with a cell of its own updates it with a plain
/// read and write (no locked instruction); threads that found none left add to cell 0 with
/// atomic read-modify-writes. Either way the totals are exact.
std::size_t shard_count() noexcept;
/// tl_shard's flag: the cell is the calling thread's own.
inline constexpr std::uint32_t kOwnCell = 1u << 31;
/// The calling thread's cell (with kOwnCell when it is its own), assigned on first use.
std::uint32_t assign_shard() noexcept;
inline constinit thread_local std::uint32_t tl_shard = ~0u;
inline std::uint32_t shard_word() noexcept {
  const std::uint32_t s = tl_shard;
  return s != ~0u ? s : assign_shard();
}
/// Adds `n` to a word of the cell shard_word() named.
inline void cell_add(std::atomic<std::uint64_t>& w, std::uint64_t n, std::uint32_t word) noexcept {
  if (word & kOwnCell)
    w.store(w.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  else
    w.fetch_add(n, std::memory_order_relaxed);
}

struct alignas(kCacheLine) Line {
  std::atomic<std::uint64_t> w[kCacheLine / sizeof(std::uint64_t)];
};

}  // namespace detail

/// What a metric family is, as the `# TYPE` line says it.
enum class MetricType : std::uint8_t { Counter, Gauge, Histogram, Untyped };

/// "counter", "gauge", "histogram" or "untyped".
std::string_view to_string(MetricType t) noexcept;

/// A monotonically increasing count. Recording is one add on a cache line of the calling
/// thread's own (see detail::shard_count): no lock, no allocation, no sharing between workers.
class Counter {
 public:
  Counter();
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  void inc(std::uint64_t n = 1) noexcept {
    const std::uint32_t s = detail::shard_word();
    detail::cell_add(cells_[s & ~detail::kOwnCell].w[0], n, s);
  }
  /// The sum over threads. Concurrent increments may or may not be included.
  std::uint64_t value() const noexcept;

 private:
  std::unique_ptr<detail::Line[]> cells_;
};

/// A value that goes up and down (in-flight requests, open connections), as a sum of per-thread
/// deltas: inc/dec cost what Counter::inc costs. For values that live elsewhere (a queue length,
/// a ratio), register a collector instead (Registry::add_collector).
class Gauge {
 public:
  Gauge();
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void add(std::int64_t n) noexcept {
    const std::uint32_t s = detail::shard_word();
    detail::cell_add(cells_[s & ~detail::kOwnCell].w[0], static_cast<std::uint64_t>(n), s);
  }
  void inc() noexcept { add(1); }
  void dec() noexcept { add(-1); }
  /// The sum over threads.
  std::int64_t value() const noexcept;

 private:
  std::unique_ptr<detail::Line[]> cells_;
};

/// Observations counted into fixed buckets (upper bounds, ascending) plus their sum, rendered as
/// Prometheus' cumulative `_bucket{le="..."}`, `_sum` and `_count`. Recording finds the bucket by
/// a linear scan (bucket lists are short) and does two updates on the calling thread's own cache
/// lines.
class Histogram {
 public:
  /// `bounds`: ascending upper bounds; +Inf is implicit. Shared by every series of a family.
  explicit Histogram(std::span<const double> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void observe(double v) noexcept;
  /// Observes a duration in seconds.
  void observe(std::chrono::nanoseconds d) noexcept {
    observe(static_cast<double>(d.count()) * 1e-9);
  }

  struct Snapshot {
    /// Per bucket (the last is +Inf), not cumulative.
    std::vector<std::uint64_t> counts;
    double sum = 0;
    std::uint64_t count = 0;
  };
  Snapshot snapshot() const;
  std::span<const double> bounds() const noexcept { return bounds_; }

 private:
  std::atomic<std::uint64_t>& word(std::size_t shard, std::size_t i) const noexcept {
    return cells_[shard * lines_ + i / 8].w[i % 8];
  }
  std::span<const double> bounds_;
  std::size_t lines_;  // cache lines per shard: bucket counts, then the sum (as double bits)
  std::unique_ptr<detail::Line[]> cells_;
};

/// Seconds from 0.5 ms to 30 s, for request latencies.
std::vector<double> default_latency_buckets();

/// A label name and value, as collectors emit them.
struct Label {
  std::string_view name;
  std::string_view value;
};

/// Samples gathered for one scrape. Collectors add samples of any family; samples of the same
/// family (same name) from several places are rendered together under one HELP/TYPE header.
class Collection {
 public:
  /// Adds `name{labels} value`. The first sample of a family sets its type and help.
  void add(std::string_view name, MetricType type, std::string_view help,
           std::initializer_list<Label> labels, double value);
  void add(std::string_view name, MetricType type, std::string_view help,
           std::span<const Label> labels, double value);
  /// The exposition text: families sorted by name.
  std::string render() const;

  /// Engine: the body of family `name` (creating it), to append sample lines to.
  std::string& body(std::string_view name, MetricType type, std::string_view help);

 private:
  struct Family {
    MetricType type;
    std::string help;
    std::string body;
  };
  std::map<std::string, Family, std::less<>> families_;
};

/// The part of a family that does not depend on the metric kind.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, MetricType type, std::vector<std::string> labels);
  virtual ~FamilyBase();
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  const std::string& name() const noexcept { return name_; }
  const std::string& help() const noexcept { return help_; }
  MetricType type() const noexcept { return type_; }
  const std::vector<std::string>& label_names() const noexcept { return labels_; }
  /// Appends every series' samples.
  virtual void collect(Collection& out) const = 0;

 protected:
  std::string name_;
  std::string help_;
  MetricType type_;
  std::vector<std::string> labels_;
};

/// The series of one metric, one per combination of label values.
///
/// `with()` finds or creates a series; it takes the family's mutex and allocates the first time,
/// so look series up once (at setup, or the first time a label value is seen) and keep the
/// reference: it stays valid as long as the registry.
template <class M>
class Family final : public FamilyBase {
 public:
  Family(std::string name, std::string help, MetricType type, std::vector<std::string> labels,
         std::vector<double> bounds = {});
  ~Family() override;

  /// The series with these label values, in label_names() order. Throws std::invalid_argument
  /// when the number of values differs from the number of labels.
  M& with(std::initializer_list<std::string_view> values);
  M& with(std::span<const std::string> values);
  M& with(std::span<const std::string_view> values);
  /// The histogram bucket bounds (histogram families only).
  const std::vector<double>& bounds() const noexcept { return bounds_; }

  void collect(Collection& out) const override;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<M>, std::less<>> series_;
};

extern template class Family<Counter>;
extern template class Family<Gauge>;
extern template class Family<Histogram>;
using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

/// Metric families and collectors, rendered together for a scrape.
///
/// Registration (`counter_family`, ...) returns the existing family when one with the same name,
/// type, labels (and buckets) exists, and throws std::invalid_argument when the name is taken by
/// a different one or a name is not a valid Prometheus name. Families live as long as the
/// registry. Any thread may register, record and render at any time.
class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  CounterFamily& counter_family(std::string name, std::string help,
                                std::vector<std::string> labels);
  GaugeFamily& gauge_family(std::string name, std::string help, std::vector<std::string> labels);
  /// `bounds`: ascending, finite; empty means default_latency_buckets().
  HistogramFamily& histogram_family(std::string name, std::string help,
                                    std::vector<std::string> labels,
                                    std::vector<double> bounds = {});
  /// Unlabelled shorthands: the family's only series.
  Counter& counter(std::string name, std::string help);
  Gauge& gauge(std::string name, std::string help);
  Histogram& histogram(std::string name, std::string help, std::vector<double> bounds = {});

  /// Called at every scrape to add samples of values kept elsewhere (pool counters, backend
  /// health). It runs on the scraping thread with the registry locked: it must not call back
  /// into this registry. Returns an id for remove_collector.
  using CollectorFn = std::function<void(Collection&)>;
  std::uint64_t add_collector(CollectorFn fn);
  /// After this returns the collector is not running and will not run again.
  void remove_collector(std::uint64_t id);

  /// Every family and collector sample into `out`.
  void collect(Collection& out) const;
  /// The Prometheus text exposition format 0.0.4: `# HELP` and `# TYPE` per family, families
  /// sorted by name, label values escaped.
  std::string render_prometheus() const;

 private:
  template <class F, class... A>
  F& family(std::string name, std::string help, MetricType type, A&&... args);

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<FamilyBase>, std::less<>> families_;
  std::map<std::uint64_t, CollectorFn> collectors_;
  std::uint64_t next_collector_ = 1;
};

/// The process-wide registry: services record their built-in metrics here unless told otherwise
/// (HttpProxyService::set_metrics_registry), and prometheus_service() serves it by default.
std::shared_ptr<Registry> default_registry();

/// Label value escaping of the exposition format: backslash, double quote and newline.
void append_escaped_label_value(std::string& out, std::string_view v);
/// A sample value: integers without a fraction, "+Inf", "-Inf", "NaN", else the shortest form.
void append_sample_value(std::string& out, double v);

}  // namespace portico::observe
