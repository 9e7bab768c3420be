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
std::atomic<std::uint64_t> SendBatch::incomplete_{0};

namespace {
constexpr unsigned kRingEntries = 64;  // heads per io_uring_enter (more take several); ~6 KiB
constexpr int kNoCompletion = 1 << 30;  // a result no send returns
}

#if PORTICO_HAS_LIBURING
struct SendBatch::Ring {
  io_uring ring{};
};

bool SendBatch::init() noexcept {
  auto* r = new (std::nothrow) Ring;
  if (!r) return false;
  // Completions are run when the worker next enters the kernel for the ring (it waits for them
  // anyway), never by interrupting another of its system calls (COOP_TASKRUN); only the
  // worker's thread submits (SINGLE_ISSUER). Kernels older than 6.0 take neither flag.
  if (io_uring_queue_init(kRingEntries, &r->ring,
                          IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER) != 0 &&
      io_uring_queue_init(kRingEntries, &r->ring, 0) != 0) {
    delete r;
    return false;
  }
  ring_ = r;
  return true;
}

SendBatch::~SendBatch() {
  if (self_) *self_ = nullptr;
  for (auto* v : {&pending_, &settling_})
    for (Item* it : *v) it->queued_in = nullptr;  // their frames outlive the batch
  if (ring_) {
    io_uring_queue_exit(&ring_->ring);
    delete ring_;
  }
}

void SendBatch::flush() noexcept {
  posted_ = false;
  std::size_t i = 0;
  if (!ring_) {  // dropped after a failure: the usual way
    for (Item* it : pending_) it->result = -EAGAIN;
    i = pending_.size();
  }
  while (i < pending_.size()) {
    unsigned queued = 0;
    for (; i < pending_.size() && queued < kRingEntries; ++i) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_->ring);
      if (!sqe) break;  // cannot happen: the ring is empty at each pass
      Item* it = pending_[i];
      if (it->iov) {
        it->msg = msghdr{};
        it->msg.msg_iov = const_cast<iovec*>(it->iov);
        it->msg.msg_iovlen = it->iovcnt;
        io_uring_prep_sendmsg(sqe, it->fd, &it->msg, MSG_DONTWAIT | MSG_NOSIGNAL);
      } else {
        io_uring_prep_send(sqe, it->fd, it->data, it->size, MSG_DONTWAIT | MSG_NOSIGNAL);
      }
      io_uring_sqe_set_data(sqe, it);
      ++queued;
    }
    // Non-blocking sends complete while they are submitted: one system call for all of them.
    int r;
    do r = io_uring_submit_and_wait(&ring_->ring, queued);
    while (r == -EINTR);
    submissions_.fetch_add(1, std::memory_order_relaxed);
    for (std::size_t k = i - queued; k < i; ++k) pending_[k]->result = kNoCompletion;
    unsigned head, seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_->ring, head, cqe) {
      auto* it = static_cast<Item*>(io_uring_cqe_get_data(cqe));
      it->result = cqe->res;
      ++seen;
    }
    io_uring_cq_advance(&ring_->ring, seen);
    sends_.fetch_add(seen, std::memory_order_relaxed);
    if (r < 0 || seen < queued) {
      // The ring failed. Nothing submitted (r < 0): the heads go the usual way (-EAGAIN, nothing
      // sent). Submitted without a completion: whether they went out is unknown, so their
      // attempts fail (the connection is not reused) rather than send a head twice. The ring is
      // dropped, so no stale entry can surface later; this thread sends one by one from now on.
      for (std::size_t k = i - queued; k < i; ++k)
        if (pending_[k]->result == kNoCompletion) pending_[k]->result = r < 0 ? -EAGAIN : -EIO;
      for (std::size_t k = i; k < pending_.size(); ++k) pending_[k]->result = -EAGAIN;
      i = pending_.size();
      io_uring_queue_exit(&ring_->ring);
      delete ring_;
      ring_ = nullptr;
    }
  }
  settle();
}

void SendBatch::settle() noexcept {
  // The callbacks may resume coroutines that queue new items (in pending_, for the next flush)
  // or destroy items not yet settled (remove() takes them out of settling_).
  settling_.swap(pending_);
  while (!settling_.empty()) {
    Item* it = settling_.back();
    settling_.pop_back();
    it->queued_in = nullptr;
    if (!it->sent_whole()) {
      incomplete_.fetch_add(1, std::memory_order_relaxed);
      if (it->incomplete) it->incomplete(it->ctx);  // posts a completion at most: queues nothing
    }
    if (it->done) it->done(it->ctx);
  }
}
#else
struct SendBatch::Ring {};
bool SendBatch::init() noexcept { return false; }
SendBatch::~SendBatch() {
  if (self_) *self_ = nullptr;
  for (auto* v : {&pending_, &settling_})
    for (Item* it : *v) it->queued_in = nullptr;
}
void SendBatch::flush() noexcept {}
void SendBatch::settle() noexcept {}
#endif

std::unique_ptr<SendBatch> SendBatch::make() noexcept {
  std::unique_ptr<SendBatch> b(new (std::nothrow) SendBatch);
  if (!b || !b->init()) return nullptr;
  try {
    b->self_ = std::make_shared<SendBatch*>(b.get());
  } catch (...) {
    return nullptr;
  }
  return b;
}

namespace {
/// The posted flush (nothing once the batch is gone).
struct Flush {
  std::shared_ptr<SendBatch*> self;
  void operator()() const {
    if (*self) (*self)->flush_now();
  }
};
}  // namespace

void SendBatch::add(Item& it, const boost::asio::any_io_executor& ex) {
  it.result = 0;
  it.queued_in = this;
  pending_.push_back(&it);
  if (!posted_) {
    boost::asio::post(ex, Flush{self_});
    posted_ = true;
  }
}

void SendBatch::remove(Item& it) noexcept {
  SendBatch* b = std::exchange(it.queued_in, nullptr);
  if (!b) return;
  for (auto* v : {&b->pending_, &b->settling_})
    v->erase(std::remove(v->begin(), v->end(), &it), v->end());
}

}  // namespace portico::detail
