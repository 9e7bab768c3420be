#include "proxy/parking.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>

#include <portico/proxy/service.hpp>

#include "observe/proxy_observer.hpp"
#include "proxy/request.hpp"
#include "server/worker.hpp"
#include "tls/tls_stream.hpp"

namespace portico::detail {

namespace asio = boost::asio;
using boost::system::error_code;
using clock = std::chrono::steady_clock;

ParkedConn::~ParkedConn() {
  if (ssl) SSL_free(ssl);
}

void ParkedConnDelete::operator()(ParkedConn* p) const noexcept { delete p; }

namespace {
/// Ends a parked connection the client did not come back to. HTTP/2: a GOAWAY (NO_ERROR) says
/// no stream was left behind (RFC 9113 §6.8). TLS: close_notify follows (clients such as
/// OpenSSL 3 report a close without one as an error). Both only if the socket takes them at
/// once. The state is freed.
void close_parked(ParkedConn* p, int fd, ProxyObserver& obs) noexcept {
  if (!p) return;
  std::string_view last;
  if (p->h2) {
    try {
      p->h2->terminate(h2::ErrorCode::NoError);
      last = p->h2->pending_output();
    } catch (...) {  // out of memory for the frame: the connection closes without it
      last = {};
    }
    if (!last.empty()) obs.h2_goaway_sent(0);
    obs.h2_connection(-1);
  }
  if (p->ssl && SSL_is_init_finished(p->ssl)) {
    TlsBio bio(std::exchange(p->ssl, nullptr));  // frees it when done
    bio.send_close_notify(fd, last);
  } else if (!last.empty()) {
    const asio::const_buffer b(last.data(), last.size());
    bool done = false;
    error_code ec;
    send_now(fd, &b, &b + 1, done, ec);
  }
  delete p;
}

std::uint64_t event_key(std::uint32_t index, std::uint32_t gen) noexcept {
  return (static_cast<std::uint64_t>(gen) << 32) | index;
}
constexpr std::uint32_t kV6 = 0x80000000u;

template <class V>
bool reserve_nothrow(V& v, std::size_t n) noexcept {
  try {
    v.reserve(n);
    return true;
  } catch (...) {  // std::bad_alloc: park() is noexcept, the connection is closed instead
    return false;
  }
}
}  // namespace

ParkingLot::ParkingLot(HttpProxyService& svc, ServiceWorkerState& state, Worker& w,
                       std::chrono::milliseconds timeout)
    : svc_(svc),
      state_(state),
      w_(w),
      obs_(svc.observer()),
      timeout_(timeout),
      token_(std::make_shared<Token>(Token{this})),
      epoll_(w.executor()),
      timer_(w.executor()) {
  const int fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (fd >= 0) {
    error_code ec;
    epoll_.assign(fd, ec);
    if (ec) ::close(fd);
  }
}

ParkingLot::~ParkingLot() {
  token_->lot = nullptr;
  drain();
}

std::uint32_t ParkingLot::take_slot() {
  if (free_ == kNone) {  // kNone when out of memory: the connection is closed instead
    const auto base = static_cast<std::uint32_t>(chunks_.size() * kChunk);
    if (chunks_.size() == chunks_.capacity()) {
      std::vector<std::unique_ptr<Slot[]>> more;
      if (!reserve_nothrow(more, chunks_.size() * 2 + 8)) return kNone;
      for (auto& c : chunks_) more.push_back(std::move(c));
      chunks_.swap(more);
    }
    std::unique_ptr<Slot[]> c(new (std::nothrow) Slot[kChunk]);
    if (!c) return kNone;
    chunks_.push_back(std::move(c));
    for (std::uint32_t i = kChunk; i-- > 0;) free_slot(base + i);
  }
  const std::uint32_t i = free_;
  free_ = at(i).next;
  return i;
}

void ParkingLot::free_slot(std::uint32_t i) noexcept {
  Slot& s = at(i);
  s.fd = -1;
  s.more = nullptr;
  s.prev = kNone;
  s.next = free_;
  free_ = i;
}

void ParkingLot::unlink(std::uint32_t i) noexcept {
  Slot& s = at(i);
  if (s.prev != kNone)
    at(s.prev).next = s.next;
  else
    head_ = s.next;
  if (s.next != kNone)
    at(s.next).prev = s.prev;
  else
    tail_ = s.prev;
  s.prev = s.next = kNone;
}

bool ParkingLot::park(asio::ip::tcp::socket& s, std::size_t listener, std::uint32_t served, bool v6,
                      ParkedConnPtr parked) noexcept {
  if (drained_ || !epoll_.is_open() || listener >= kV6) return false;
  const std::uint32_t i = take_slot();
  if (i == kNone) return false;
  error_code ec;
  const int fd = s.release(ec);  // leaves Asio's reactor
  if (ec) {
    free_slot(i);
    return false;
  }
  Slot& slot = at(i);
  ++slot.gen;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = event_key(i, slot.gen);
  if (::epoll_ctl(epoll_.native_handle(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    ::close(fd);
    free_slot(i);
    return false;
  }
  slot.fd = fd;
  slot.more = parked.release();
  slot.served = served;
  slot.listener = static_cast<std::uint32_t>(listener) | (v6 ? kV6 : 0);
  slot.due = (clock::now() + timeout_).time_since_epoch().count();
  slot.prev = tail_;
  slot.next = kNone;
  if (tail_ != kNone)
    at(tail_).next = i;
  else
    head_ = i;
  tail_ = i;
  ++size_;
  w_.hold();
  obs_->connection_parked(1);
  if (!waiting_) arm_wait();
  if (!timing_) arm_timer();
  return true;
}

void ParkingLot::left(bool closed) noexcept {
  --size_;
  obs_->connection_parked(-1);
  if (closed) obs_->connection_closed();
  if (size_ == 0) {  // the arrays go back too
    chunks_.clear();
    free_ = head_ = tail_ = kNone;
  }
  // (active() still counts this one.)
  if (closed) state_.connection_ended(w_.active() - 1, w_.executor(), std::chrono::milliseconds(0));
  w_.unhold();  // last: the worker may learn here that its last connection is gone
}

void ParkingLot::close(std::uint32_t i) noexcept {
  Slot& s = at(i);
  const int fd = s.fd;
  ParkedConn* more = s.more;
  unlink(i);
  free_slot(i);
  // (close() alone would leave the set only if no other process holds the socket too.)
  if (epoll_.is_open()) ::epoll_ctl(epoll_.native_handle(), EPOLL_CTL_DEL, fd, nullptr);
  close_parked(more, fd, *obs_);
  ::close(fd);
  left(true);
}

void ParkingLot::arm_wait() {
  waiting_ = true;
  epoll_.async_wait(asio::posix::descriptor_base::wait_read, [t = token_](const error_code& ec) {
    if (!t->lot) return;
    t->lot->waiting_ = false;
    if (!ec) t->lot->on_ready();
  });
}

void ParkingLot::arm_timer() {
  if (head_ == kNone) return;
  timing_ = true;
  timer_.expires_at(clock::time_point(clock::duration(at(head_).due)));
  timer_.async_wait([t = token_](const error_code& ec) {
    if (!t->lot) return;
    t->lot->timing_ = false;
    if (!ec) t->lot->on_timer();
  });
}

void ParkingLot::on_ready() noexcept {
  if (drained_) return;
  // One batch per readiness: the connections it wakes run (and take their buffers) before the
  // next batch is taken, so a crowd of clients all sending (or closing) at once does not make
  // as many connection objects at the same time. Re-arming the wait (an EPOLL_CTL_MOD of the
  // set in Asio's reactor) reports the set again at once while it holds ready descriptors.
  epoll_event evs[kWakeBatch];
  int n;
  do n = ::epoll_wait(epoll_.native_handle(), evs, kWakeBatch, 0);
  while (n < 0 && errno == EINTR);
  for (int k = 0; k < n; ++k) {
    const auto i = static_cast<std::uint32_t>(evs[k].data.u64);
    const auto gen = static_cast<std::uint32_t>(evs[k].data.u64 >> 32);
    if (i >= chunks_.size() * kChunk || at(i).fd < 0 || at(i).gen != gen) continue;
    Slot& s = at(i);
    const int fd = s.fd;
    const std::uint32_t served = s.served;
    const std::size_t listener = s.listener & ~kV6;
    const bool v6 = (s.listener & kV6) != 0;
    ParkedConnPtr more(s.more);
    ::epoll_ctl(epoll_.native_handle(), EPOLL_CTL_DEL, fd, nullptr);
    unlink(i);
    free_slot(i);
    // The client sent its next request (or closed): a new connection object serves it.
    Accepted a{
        std::move(w_.socket_prototype()), listener, {}, {}, true, served, std::move(more), {}};
    error_code ec;
    a.socket.assign(v6 ? asio::ip::tcp::v6() : asio::ip::tcp::v4(), fd, ec);
    if (ec) {
      close_parked(a.parked.release(), fd, *obs_);
      ::close(fd);
      left(true);
      continue;
    }
    svc_.serve_connection(w_, a);  // counted there before it stops counting here
    left(false);
    if (drained_) return;
  }
  if (size_ > 0 && !waiting_) arm_wait();
}

void ParkingLot::on_timer() noexcept {
  if (drained_) return;
  const auto now = clock::now().time_since_epoch().count();
  while (head_ != kNone && at(head_).due <= now) close(head_);
  if (head_ != kNone && !timing_) arm_timer();
}

void ParkingLot::drain() noexcept {
  drained_ = true;
  error_code ec;
  epoll_.close(ec);  // a pending wait ends (its handler does nothing); the set goes with it
  timer_.cancel();
  while (head_ != kNone) close(head_);
}

}  // namespace portico::detail
