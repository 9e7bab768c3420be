// coarse_now(): steady_clock time for deadlines and idle timestamps, cheaper to read.
//
// steady_clock reads CLOCK_MONOTONIC: a TSC read and its conversion in the vDSO (about 25 ns on
// the benchmark machine). CLOCK_MONOTONIC_COARSE, the same clock as of the last tick, is a few
// loads (about 7 ns). A request arms several deadlines (client read, upstream read, the watches
// of Deferred, the pool's idle stamps), none of which needs more than a tick's precision: the
// coarse time moved up by one tick is never before steady_clock::now() at the call, so a
// deadline set from it fires up to a tick (1–4 ms) late, never early. Durations that are
// reported (request, connect, time to the response head) keep reading steady_clock.
#pragma once

#include <time.h>

#include <chrono>

namespace portico::detail {

/// One tick of CLOCK_MONOTONIC_COARSE (the kernel's jiffy), read once.
inline std::chrono::nanoseconds coarse_tick() noexcept {
  static const std::chrono::nanoseconds tick = [] {
    timespec r{};
    if (::clock_getres(CLOCK_MONOTONIC_COARSE, &r) != 0) return std::chrono::nanoseconds(10'000'000);
    return std::chrono::seconds(r.tv_sec) + std::chrono::nanoseconds(r.tv_nsec);
  }();
  return tick;
}

/// A steady_clock time point at or after steady_clock::now(), at most a tick after it.
inline std::chrono::steady_clock::time_point coarse_now() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return std::chrono::steady_clock::time_point(
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec) + coarse_tick()));
}

}  // namespace portico::detail
