#include "upstream/connection.hpp"

#include <sys/socket.h>

#include <cerrno>

namespace portico::detail {

namespace {
constexpr auto kProbeAfter = std::chrono::milliseconds(200);
}

bool UpstreamConn::still_usable() noexcept {
  if (begin != end) return false;  // bytes the previous response did not account for
  char b;
  ssize_t n = ::recv(fd(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

UpstreamConnPtr Pool::take(std::uint64_t key) {
  auto it = idle_.find(key);
  if (it == idle_.end()) return nullptr;
  auto& v = it->second;
  const auto now = std::chrono::steady_clock::now();
  while (!v.empty()) {
    UpstreamConnPtr c = std::move(v.back());
    v.pop_back();
    --total_;
    const auto idle = now - c->idle_since;
    // A connection idle for a moment is trusted without a probe (a syscall per request); the
    // rare one the upstream closed meanwhile fails before any response byte and the request is
    // retried on a fresh connection (RetryType::ReusedOnly).
    if (idle < c->idle_timeout && c->begin == c->end &&
        (idle < kProbeAfter || c->still_usable())) {
      PoolStats::bump(stats_->reused);
      return c;
    }
    PoolStats::bump(stats_->evicted);  // closed by the destructor
  }
  return nullptr;
}

void Pool::put(UpstreamConnPtr c) {
  if (c->idle_timeout.count() <= 0) return;
  auto& v = idle_[c->key];
  if (v.size() >= limits_.max_idle_per_key) {
    v.erase(v.begin());  // the coldest one
    --total_;
    PoolStats::bump(stats_->evicted);
  }
  if (total_ >= limits_.max_idle_total) {
    PoolStats::bump(stats_->evicted);
    return;
  }
  c->idle_since = std::chrono::steady_clock::now();
  v.push_back(std::move(c));
  ++total_;
}

}  // namespace portico::detail
