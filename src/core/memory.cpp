#include "core/memory.hpp"

#include <malloc.h>

#include <mutex>

#if __has_include(<mimalloc.h>)
#include <mimalloc.h>
#endif

// mimalloc's functions, when the program links it (the proxy examples do): weak, so the library
// needs none and links against whatever allocator the program has.
#if defined(MI_MALLOC_VERSION)
#pragma weak mi_collect
#pragma weak mi_option_get
#pragma weak mi_option_set
// 2.0's delayed decommit (2.1 renamed it purge_delay and keeps this name as an alias).
#define PORTICO_MI_DELAY 1
#else
extern "C" void mi_collect(bool force) __attribute__((weak));
#endif

namespace portico::detail::memory {

namespace {
#ifdef PORTICO_MI_DELAY
// Window opening and closing is rare (at most once per parking delay and worker): a mutex keeps
// the count and the saved delay together.
std::mutex windows_mutex;
int open_windows = 0;
long saved_delay = 0;
bool have_mimalloc() noexcept { return mi_option_get && mi_option_set; }
#endif
}  // namespace

void release_begin() noexcept {
#ifdef PORTICO_MI_DELAY
  if (!have_mimalloc()) return;
  std::lock_guard lock(windows_mutex);
  if (open_windows++ == 0) {
    // mimalloc reads its options without synchronisation; a thread reading the old value frees
    // one span more with the delay, nothing worse.
    saved_delay = mi_option_get(mi_option_decommit_delay);
    mi_option_set(mi_option_decommit_delay, 0);
  }
#endif
}

void release_end() noexcept {
  // glibc sets its allocator up at its first use, and that set-up must not race: a second
  // thread entering malloc_trim meanwhile walks bins not yet initialised (a crash, seen with
  // two workers draining at once when glibc's malloc was never used before: under
  // AddressSanitizer, or with mimalloc in its place). The first call runs alone.
  static std::once_flag glibc_ready;
  bool first = false;
  std::call_once(glibc_ready, [&] {
    ::malloc_trim(0);
    first = true;
  });
  if (!first) ::malloc_trim(0);
  if (mi_collect) mi_collect(true);  // the pages still held empty go now, without delay
#ifdef PORTICO_MI_DELAY
  if (!have_mimalloc()) return;
  std::lock_guard lock(windows_mutex);
  if (open_windows > 0 && --open_windows == 0) mi_option_set(mi_option_decommit_delay, saved_delay);
#endif
}

}  // namespace portico::detail::memory
