// Giving memory back to the system once connections go idle.
//
// A crowd of clients that all go idle (a burst answered, then nothing) frees, when their
// connections park or trim, memory the allocator keeps: glibc's malloc keeps freed chunks in its
// arenas until malloc_trim; mimalloc 2.0 marks freed spans to be decommitted after a delay
// (MIMALLOC_DECOMMIT_DELAY, 25 ms), but does so only when it next allocates a page in the same
// segment, which an idle process never does: after 10,000 connections were busy at once and went
// idle, ~100 MB stayed resident for good. So while connections go idle or leave in numbers (a
// release window, opened by a worker at its first park or trim of a burst, or when a crowd of
// connections has left, and closed a parking delay later) mimalloc's delay is 0 and what the
// connections free is decommitted as it is freed; outside a window (under load, where pages are
// freed and taken again all the time) the delay is the allocator's own.
#pragma once

namespace portico::detail::memory {

/// Opens a release window on this worker (one at a time per worker; windows of several workers
/// overlap). Until the last open window closes, memory mimalloc frees goes back to the system
/// at once. Without mimalloc (or its header at build time): nothing.
void release_begin() noexcept;

/// Closes a window release_begin() opened: returns the allocator's cached free memory to the
/// system (malloc_trim; mi_collect when mimalloc is linked), and gives mimalloc its delay back
/// when no other window is open.
void release_end() noexcept;

}  // namespace portico::detail::memory
