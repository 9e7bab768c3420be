#include <portico/observe/metrics.hpp>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <stdexcept>
#include <thread>

namespace portico::observe {

namespace detail {

std::size_t shard_count() noexcept {
  static const std::size_t n = [] {
    std::size_t cpus = std::thread::hardware_concurrency();
    cpus = std::clamp<std::size_t>(cpus, 4, 64);
    return std::bit_ceil(cpus);
  }();
  return n;
}

namespace {
// Which of cells 1..63 a thread holds. Taken with acquire and given back with release: the next
// holder's plain reads see the last holder's writes.
std::atomic<bool> g_cell_taken[64];

// Gives the thread's cell back when the thread ends; records made after that (by other
// thread_local destructors) go to the shared cell.
struct CellHolder {
  std::uint32_t cell = 0;
  ~CellHolder() {
    tl_shard = 0;
    if (cell != 0) g_cell_taken[cell].store(false, std::memory_order_release);
  }
};
}  // namespace

std::uint32_t assign_shard() noexcept {
  static std::atomic<std::uint32_t> next{0};
  const auto own = static_cast<std::uint32_t>(shard_count() - 1);  // cells 1..own
  for (std::uint32_t k = 0; k < own; ++k) {
    const std::uint32_t c = 1 + next.fetch_add(1, std::memory_order_relaxed) % own;
    bool free = false;
    if (g_cell_taken[c].load(std::memory_order_relaxed) ||
        !g_cell_taken[c].compare_exchange_strong(free, true, std::memory_order_acquire))
      continue;
    static thread_local CellHolder holder;
    holder.cell = c;
    tl_shard = c | kOwnCell;
    return tl_shard;
  }
  tl_shard = 0;
  return 0;
}

}  // namespace detail

namespace {

std::unique_ptr<detail::Line[]> make_lines(std::size_t n) {
  auto p = std::make_unique<detail::Line[]>(n);
  for (std::size_t i = 0; i < n; ++i)
    for (auto& w : p[i].w) w.store(0, std::memory_order_relaxed);
  return p;
}

bool valid_metric_name(std::string_view n) {
  if (n.empty()) return false;
  for (std::size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool valid_label_name(std::string_view n) {
  if (n.empty() || n.starts_with("__")) return false;
  for (std::size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

void append_help(std::string& out, std::string_view h) {
  for (char c : h) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
}

/// `{a="x",b="y"` plus, when given, `extra="v"`, then `}`; nothing for no labels.
void append_labels(std::string& out, std::span<const std::string> names,
                   std::span<const std::string> values, std::string_view extra_name = {},
                   std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) return;
  out += '{';
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i) out += ',';
    out += names[i];
    out += "=\"";
    append_escaped_label_value(out, values[i]);
    out += '"';
  }
  if (!extra_name.empty()) {
    if (!names.empty()) out += ',';
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out += '"';
  }
  out += '}';
}

void append_u64(std::string& out, std::uint64_t v) {
  char b[24];
  auto r = std::to_chars(b, b + sizeof b, v);
  out.append(b, r.ptr);
}

}  // namespace

std::string_view to_string(MetricType t) noexcept {
  switch (t) {
    case MetricType::Counter: return "counter";
    case MetricType::Gauge: return "gauge";
    case MetricType::Histogram: return "histogram";
    case MetricType::Untyped: return "untyped";
  }
  return "untyped";
}

void append_escaped_label_value(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
}

void append_sample_value(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  char b[32];
  std::to_chars_result r;
  if (v == std::trunc(v) && std::fabs(v) < 1e15)
    r = std::to_chars(b, b + sizeof b, static_cast<std::int64_t>(v));
  else
    r = std::to_chars(b, b + sizeof b, v);
  out.append(b, r.ptr);
}

// ---------------------------------------------------------------------------------------------
// metrics

Counter::Counter() : cells_(make_lines(detail::shard_count())) {}

std::uint64_t Counter::value() const noexcept {
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < detail::shard_count(); ++i)
    sum += cells_[i].w[0].load(std::memory_order_relaxed);
  return sum;
}

Gauge::Gauge() : cells_(make_lines(detail::shard_count())) {}

std::int64_t Gauge::value() const noexcept {
  std::uint64_t sum = 0;  // wraps like two's complement: deltas of any sign add up
  for (std::size_t i = 0; i < detail::shard_count(); ++i)
    sum += cells_[i].w[0].load(std::memory_order_relaxed);
  return static_cast<std::int64_t>(sum);
}

Histogram::Histogram(std::span<const double> bounds)
    : bounds_(bounds),
      lines_((bounds.size() + 2 + 7) / 8),
      cells_(make_lines(lines_ * detail::shard_count())) {}

void Histogram::observe(double v) noexcept {
  const std::uint32_t sw = detail::shard_word();
  const std::size_t shard = sw & ~detail::kOwnCell;
  std::size_t i = 0;
  const std::size_t n = bounds_.size();
  while (i < n && !(v <= bounds_[i])) ++i;
  detail::cell_add(word(shard, i), 1, sw);
  auto& s = word(shard, n + 1);
  std::uint64_t old = s.load(std::memory_order_relaxed);
  const auto sum = [&] { return std::bit_cast<std::uint64_t>(std::bit_cast<double>(old) + v); };
  if (sw & detail::kOwnCell) {
    s.store(sum(), std::memory_order_relaxed);
  } else {
    while (!s.compare_exchange_weak(old, sum(), std::memory_order_relaxed)) {
    }
  }
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  const std::size_t n = bounds_.size();
  s.counts.assign(n + 1, 0);
  for (std::size_t sh = 0; sh < detail::shard_count(); ++sh) {
    for (std::size_t i = 0; i <= n; ++i) s.counts[i] += word(sh, i).load(std::memory_order_relaxed);
    s.sum += std::bit_cast<double>(word(sh, n + 1).load(std::memory_order_relaxed));
  }
  for (auto c : s.counts) s.count += c;
  return s;
}

std::vector<double> default_latency_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}

// ---------------------------------------------------------------------------------------------
// collection

std::string& Collection::body(std::string_view name, MetricType type, std::string_view help) {
  auto it = families_.find(name);
  if (it == families_.end())
    it = families_.emplace(std::string(name), Family{type, std::string(help), {}}).first;
  return it->second.body;
}

void Collection::add(std::string_view name, MetricType type, std::string_view help,
                     std::initializer_list<Label> labels, double value) {
  add(name, type, help, std::span<const Label>(labels.begin(), labels.size()), value);
}

void Collection::add(std::string_view name, MetricType type, std::string_view help,
                     std::span<const Label> labels, double value) {
  std::string& b = body(name, type, help);
  b += name;
  if (!labels.empty()) {
    b += '{';
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (i) b += ',';
      b += labels[i].name;
      b += "=\"";
      append_escaped_label_value(b, labels[i].value);
      b += '"';
    }
    b += '}';
  }
  b += ' ';
  append_sample_value(b, value);
  b += '\n';
}

std::string Collection::render() const {
  std::size_t size = 0;
  for (const auto& [name, f] : families_) size += f.body.size() + f.help.size() + 2 * name.size() + 32;
  std::string out;
  out.reserve(size);
  for (const auto& [name, f] : families_) {
    out += "# HELP ";
    out += name;
    out += ' ';
    append_help(out, f.help);
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += to_string(f.type);
    out += '\n';
    out += f.body;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// families

FamilyBase::FamilyBase(std::string name, std::string help, MetricType type,
                       std::vector<std::string> labels)
    : name_(std::move(name)), help_(std::move(help)), type_(type), labels_(std::move(labels)) {}

FamilyBase::~FamilyBase() = default;

template <class M>
Family<M>::Family(std::string name, std::string help, MetricType type,
                  std::vector<std::string> labels, std::vector<double> bounds)
    : FamilyBase(std::move(name), std::move(help), type, std::move(labels)),
      bounds_(std::move(bounds)) {}

template <class M>
Family<M>::~Family() = default;

template <class M>
M& Family<M>::with(std::initializer_list<std::string_view> values) {
  return with(std::span<const std::string_view>(values.begin(), values.size()));
}

template <class M>
M& Family<M>::with(std::span<const std::string> values) {
  std::vector<std::string_view> v(values.begin(), values.end());
  return with(std::span<const std::string_view>(v));
}

template <class M>
M& Family<M>::with(std::span<const std::string_view> values) {
  if (values.size() != labels_.size())
    throw std::invalid_argument("metric " + name_ + ": " + std::to_string(labels_.size()) +
                                " label values expected, got " + std::to_string(values.size()));
  std::vector<std::string> key(values.begin(), values.end());
  std::lock_guard lk(mu_);
  auto it = series_.find(key);
  if (it != series_.end()) return *it->second;
  std::unique_ptr<M> m;
  if constexpr (std::is_same_v<M, Histogram>)
    m = std::make_unique<M>(std::span<const double>(bounds_));
  else
    m = std::make_unique<M>();
  return *series_.emplace(std::move(key), std::move(m)).first->second;
}

template <class M>
void Family<M>::collect(Collection& out) const {
  std::string& b = out.body(name_, type_, help_);
  std::lock_guard lk(mu_);
  for (const auto& [values, m] : series_) {
    if constexpr (std::is_same_v<M, Histogram>) {
      const auto snap = m->snapshot();
      std::uint64_t cumulative = 0;
      std::string le;
      for (std::size_t i = 0; i < snap.counts.size(); ++i) {
        cumulative += snap.counts[i];
        le.clear();
        if (i < bounds_.size())
          append_sample_value(le, bounds_[i]);
        else
          le = "+Inf";
        b += name_;
        b += "_bucket";
        append_labels(b, labels_, values, "le", le);
        b += ' ';
        append_u64(b, cumulative);
        b += '\n';
      }
      b += name_;
      b += "_sum";
      append_labels(b, labels_, values);
      b += ' ';
      append_sample_value(b, snap.sum);
      b += '\n';
      b += name_;
      b += "_count";
      append_labels(b, labels_, values);
      b += ' ';
      append_u64(b, snap.count);
      b += '\n';
    } else {
      b += name_;
      append_labels(b, labels_, values);
      b += ' ';
      if constexpr (std::is_same_v<M, Counter>) {
        append_u64(b, m->value());
      } else {
        char buf[24];
        auto r = std::to_chars(buf, buf + sizeof buf, m->value());
        b.append(buf, r.ptr);
      }
      b += '\n';
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

// ---------------------------------------------------------------------------------------------
// registry

Registry::Registry() = default;
Registry::~Registry() = default;

template <class F, class... A>
F& Registry::family(std::string name, std::string help, MetricType type, A&&... args) {
  if (!valid_metric_name(name))
    throw std::invalid_argument("invalid metric name: \"" + name + "\"");
  auto f = std::make_unique<F>(name, std::move(help), type, std::forward<A>(args)...);
  std::lock_guard lk(mu_);
  auto it = families_.find(name);
  if (it == families_.end())
    return static_cast<F&>(*families_.emplace(std::move(name), std::move(f)).first->second);
  auto* existing = dynamic_cast<F*>(it->second.get());
  bool same = existing && existing->type() == type && existing->label_names() == f->label_names();
  if constexpr (std::is_same_v<F, HistogramFamily>)
    same = same && existing->bounds() == f->bounds();
  if (!same)
    throw std::invalid_argument("metric " + name +
                                " is already registered with another type, labels or buckets");
  return *existing;
}

namespace {
void check_labels(const std::string& metric, const std::vector<std::string>& labels,
                  bool histogram) {
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (!valid_label_name(labels[i]) || (histogram && labels[i] == "le"))
      throw std::invalid_argument("metric " + metric + ": invalid label name \"" + labels[i] + "\"");
    for (std::size_t j = 0; j < i; ++j)
      if (labels[j] == labels[i])
        throw std::invalid_argument("metric " + metric + ": label \"" + labels[i] + "\" twice");
  }
}
}  // namespace

CounterFamily& Registry::counter_family(std::string name, std::string help,
                                        std::vector<std::string> labels) {
  check_labels(name, labels, false);
  return family<CounterFamily>(std::move(name), std::move(help), MetricType::Counter,
                               std::move(labels));
}

GaugeFamily& Registry::gauge_family(std::string name, std::string help,
                                    std::vector<std::string> labels) {
  check_labels(name, labels, false);
  return family<GaugeFamily>(std::move(name), std::move(help), MetricType::Gauge,
                             std::move(labels));
}

HistogramFamily& Registry::histogram_family(std::string name, std::string help,
                                            std::vector<std::string> labels,
                                            std::vector<double> bounds) {
  check_labels(name, labels, true);
  if (bounds.empty()) bounds = default_latency_buckets();
  for (std::size_t i = 0; i < bounds.size(); ++i)
    if (!std::isfinite(bounds[i]) || (i > 0 && !(bounds[i - 1] < bounds[i])))
      throw std::invalid_argument("metric " + name + ": bucket bounds must be finite and ascending");
  return family<HistogramFamily>(std::move(name), std::move(help), MetricType::Histogram,
                                 std::move(labels), std::move(bounds));
}

Counter& Registry::counter(std::string name, std::string help) {
  return counter_family(std::move(name), std::move(help), {}).with({});
}

Gauge& Registry::gauge(std::string name, std::string help) {
  return gauge_family(std::move(name), std::move(help), {}).with({});
}

Histogram& Registry::histogram(std::string name, std::string help, std::vector<double> bounds) {
  return histogram_family(std::move(name), std::move(help), {}, std::move(bounds)).with({});
}

std::uint64_t Registry::add_collector(CollectorFn fn) {
  std::lock_guard lk(mu_);
  const std::uint64_t id = next_collector_++;
  collectors_.emplace(id, std::move(fn));
  return id;
}

void Registry::remove_collector(std::uint64_t id) {
  std::lock_guard lk(mu_);
  collectors_.erase(id);
}

void Registry::collect(Collection& out) const {
  std::lock_guard lk(mu_);
  for (const auto& [name, f] : families_) f->collect(out);
  for (const auto& [id, fn] : collectors_) fn(out);
}

std::string Registry::render_prometheus() const {
  Collection c;
  collect(c);
  return c.render();
}

std::shared_ptr<Registry> default_registry() {
  static const std::shared_ptr<Registry> r = std::make_shared<Registry>();
  return r;
}

}  // namespace portico::observe
