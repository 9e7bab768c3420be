#include "core/send_batch.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <utility>

#include <boost/asio/post.hpp>

#if PORTICO_HAS_LIBURING
#include <liburing.h>
#endif

namespace portico::detail {

std::atomic<std::uint64_t> SendBatch::sends_{0};
std::atomic<std::uint64_t> SendBatch::submissions_{0};

namespace {
constexpr unsigned kRingEntries = 64;  // heads per io_uring_enter (more take several); ~6 KiB
}

#if PORTICO_HAS_LIBURING
struct SendBatch::Ring {
  io_uring ring{};
};

bool SendBatch::init() noexcept {
  auto* r = new (std::nothrow) Ring;
  if (!r) return false;
  if (io_uring_queue_init(kRingEntries, &r->ring, 0) != 0) {
    delete r;
    return false;
  }
  ring_ = r;
  return true;
}

SendBatch::~SendBatch() {
  if (ring_) {
    io_uring_queue_exit(&ring_->ring);
    delete ring_;
  }
}

void SendBatch::flush() noexcept {
  posted_ = false;
  std::size_t i = 0;
  while (i < pending_.size()) {
    unsigned queued = 0;
    for (; i < pending_.size() && queued < kRingEntries; ++i) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_->ring);
      if (!sqe) break;  // cannot happen: the ring is empty at each pass
      Item* it = pending_[i];
      io_uring_prep_send(sqe, it->fd, it->data, it->size, MSG_DONTWAIT | MSG_NOSIGNAL);
      io_uring_sqe_set_data(sqe, it);
      ++queued;
    }
    // Non-blocking sends complete while they are submitted: one system call for all of them.
    int r;
    do r = io_uring_submit_and_wait(&ring_->ring, queued);
    while (r == -EINTR);
    submissions_.fetch_add(1, std::memory_order_relaxed);
    unsigned head, seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_->ring, head, cqe) {
      auto* it = static_cast<Item*>(io_uring_cqe_get_data(cqe));
      it->result = cqe->res;
      ++seen;
    }
    io_uring_cq_advance(&ring_->ring, seen);
    if (r < 0 || seen < queued) {
      // The ring failed (or lost completions): those without one report a failed send, which
      // their callers handle as any send error.
      for (std::size_t k = i - queued; k < i; ++k)
        if (pending_[k]->result == 0 && pending_[k]->size > 0) pending_[k]->result = -EIO;
    }
    sends_.fetch_add(queued, std::memory_order_relaxed);
  }
  for (Item* it : pending_) {
    it->queued = false;
    it->done->cancel();
  }
  pending_.clear();
}
#else
struct SendBatch::Ring {};
bool SendBatch::init() noexcept { return false; }
SendBatch::~SendBatch() = default;
void SendBatch::flush() noexcept {}
#endif

SendBatch* SendBatch::for_this_thread() noexcept {
  struct Holder {
    std::unique_ptr<SendBatch> batch;
    bool tried = false;
  };
  thread_local Holder h;
  if (!h.tried) {
    h.tried = true;
    std::unique_ptr<SendBatch> b(new (std::nothrow) SendBatch);
    if (b && b->init()) h.batch = std::move(b);
  }
  return h.batch.get();
}

namespace {
/// The posted flush. Destroyed without running (its io_context went away first), it lets the
/// next round post again.
struct Flush {
  SendBatch* batch;
  bool* posted;
  Flush(SendBatch* b, bool* p) noexcept : batch(b), posted(p) {}
  Flush(Flush&& o) noexcept : batch(std::exchange(o.batch, nullptr)), posted(o.posted) {}
  Flush& operator=(Flush&&) = delete;
  ~Flush() {
    if (batch) *posted = false;
  }
  void operator()() { std::exchange(batch, nullptr)->flush_now(); }
};
}  // namespace

void SendBatch::add(Item& it, const boost::asio::any_io_executor& ex) {
  it.result = 0;
  it.queued = true;
  pending_.push_back(&it);
  if (!posted_) {
    posted_ = true;
    boost::asio::post(ex, Flush(this, &posted_));
  }
}

void SendBatch::remove(Item& it) noexcept {
  if (!it.queued) return;
  it.queued = false;
  pending_.erase(std::remove(pending_.begin(), pending_.end(), &it), pending_.end());
}

}  // namespace portico::detail
