// SendBatch: the HTTP/1 upstream request heads a worker writes during one round of its event
// loop, and the ends of its keep-alive responses, handed to the kernel together with one
// io_uring_enter (HttpServerOptions::batch_upstream_sends, batch_response_sends).
//
// Why: a proxy that sends each request to its upstream with its own system call wakes the
// upstream once per request. When the upstream shares the proxy's CPU, the woken upstream runs
// as soon as the send returns to user space, serves that one request and sleeps again: on a
// benchmark with the origin on the proxy's CPU that is one involuntary switch every four
// requests and a quarter more CPU per request. Sent together, the heads of a round reach the
// upstream at once and it serves them in one run (docs/performance.md, session 12). It also
// saves a system call per head beyond the first. Responses sent one by one, with the proxy's
// work for the next request between two of them, each found a client on another CPU asleep
// again and paid a cross-CPU wake-up; sent together they leave back to back (session 19).
//
// The heads are queued by their coroutines, and the first one of a round posts the flush to the
// worker's executor: it runs after the handlers that were ready with it. A queuing coroutine
// does not wait for it: it goes on to read the response (the read completes after the flush,
// which runs before the reactor is next polled) and settles the send when the read returns. The
// flush calls the item's `incomplete` when the head did not go whole, to wake that read; a
// coroutine that must wait (a request body follows the head) posts its resumption to the same
// executor, which runs handlers in the order they were posted. A response's coroutine waits
// for the flush, which resumes it through the item's `done` when the sends are out. Each send
// is non-blocking (MSG_DONTWAIT): what the socket does not take whole is finished by the caller
// the usual way.
// Without liburing at build time, or where io_uring_setup is refused (an old kernel, a seccomp
// profile), make() returns null and callers send directly. One batch per worker, used by the
// worker's thread alone.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <sys/socket.h>
#include <sys/uio.h>

#include <boost/asio/any_io_executor.hpp>

namespace portico::detail {

class SendBatch {
 public:
  struct Item {
    int fd = -1;
    const void* data = nullptr;
    std::size_t size = 0;
    /// Instead of `data`: the bytes as a gather list of `iovcnt` pieces (a response head and
    /// its body), `size` their total. The list and the bytes stay valid until the flush.
    const iovec* iov = nullptr;
    unsigned iovcnt = 0;
    msghdr msg{};  // set by the flush for a gather list
    /// After the flush: the bytes sent, or -errno (-EAGAIN: the socket took nothing).
    int result = 0;
    /// After the flush: whether the socket took the whole head.
    bool sent_whole() const noexcept {
      return result >= 0 && static_cast<std::size_t>(result) == size;
    }
    /// The batch it waits in; null once flushed (or once the batch is gone).
    SendBatch* queued_in = nullptr;
    /// Called by the flush, with `ctx`, when the head did not go whole (optional). It must not
    /// queue anything (cancelling a socket's operations, which posts their completions, is
    /// what it is for).
    void (*incomplete)(void* ctx) noexcept = nullptr;
    /// Called by the flush, with `ctx`, once the item is settled (after `incomplete`), when its
    /// coroutine waits for the flush: it may resume that coroutine there and then, which may
    /// queue new items (for the next flush) or take others out.
    void (*done)(void* ctx) noexcept = nullptr;
    void* ctx = nullptr;
  };

  /// A batch with its ring; null when io_uring cannot be used. One per worker (Worker::
  /// send_batch), used by the worker's thread alone.
  static std::unique_ptr<SendBatch> make() noexcept;
  /// Whether make() would succeed here.
  static bool available() noexcept { return make() != nullptr; }
  /// False once its ring failed (nothing new is queued then).
  bool usable() const noexcept { return ring_ != nullptr; }

  ~SendBatch();
  SendBatch(const SendBatch&) = delete;
  SendBatch& operator=(const SendBatch&) = delete;

  /// Queues `it` (which must stay alive until it is flushed or removed); the first item of a
  /// round posts the flush to `ex`. A handler posted to `ex` after this call runs after the
  /// flush.
  void add(Item& it, const boost::asio::any_io_executor& ex);
  /// Takes `it` back from the batch it waits in, if any (its coroutine is being destroyed;
  /// the batch may be gone already).
  static void remove(Item& it) noexcept;
  /// Sends what is queued (the posted flush calls it).
  void flush_now() noexcept { flush(); }

  /// Heads sent through batches and io_uring_enter calls made, by every thread (for tests and
  /// benchmarks).
  static std::uint64_t sends() noexcept { return sends_.load(std::memory_order_relaxed); }
  static std::uint64_t submissions() noexcept {
    return submissions_.load(std::memory_order_relaxed);
  }
  /// Heads the socket did not take whole (finished by their callers).
  static std::uint64_t incomplete_sends() noexcept {
    return incomplete_.load(std::memory_order_relaxed);
  }

 private:
  SendBatch() = default;
  bool init() noexcept;
  void flush() noexcept;
  void settle() noexcept;  // the flushed items' callbacks

  struct Ring;
  Ring* ring_ = nullptr;
  // The posted flush holds it; nulled by ~SendBatch, so a flush that outlives the batch (its
  // io_context destroyed after the worker) does nothing.
  std::shared_ptr<SendBatch*> self_;
  std::vector<Item*> pending_;
  std::vector<Item*> settling_;  // flushed, their callbacks not yet called
  bool posted_ = false;
  static std::atomic<std::uint64_t> sends_;
  static std::atomic<std::uint64_t> submissions_;
  static std::atomic<std::uint64_t> incomplete_;
};

}  // namespace portico::detail
