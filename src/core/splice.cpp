// The per-thread cache of splice pipes; splices onto a socket without SIGPIPE.
#include "core/splice.hpp"

#include <signal.h>
#include <time.h>

namespace portico::detail {

namespace {

struct CachedPipe {
  int r, w;
  std::size_t cap;
};

// Closed when the thread ends.
struct PipeCache {
  CachedPipe pipes[SplicePipe::kCached];
  std::size_t n = 0;
  ~PipeCache() {
    for (std::size_t i = 0; i < n; ++i) {
      ::close(pipes[i].r);
      ::close(pipes[i].w);
    }
  }
};

thread_local PipeCache cache;

}  // namespace

SplicePipe SplicePipe::take() noexcept {
  if (cache.n > 0) {
    const CachedPipe& p = cache.pipes[--cache.n];
    return SplicePipe(p.r, p.w, p.cap);
  }
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return {};
  // Larger than the default, so one splice moves more; the per-user limit on pipe memory may
  // refuse it, and the pipe keeps what it has.
  int cap = ::fcntl(fds[1], F_SETPIPE_SZ, kBytes);
  if (cap < 0) cap = ::fcntl(fds[1], F_GETPIPE_SZ);
  if (cap <= 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return {};
  }
  return SplicePipe(fds[0], fds[1], static_cast<std::size_t>(cap));
}

SplicePipe::~SplicePipe() {
  if (r_ < 0) return;
  if (held == 0 && cache.n < kCached) {
    cache.pipes[cache.n++] = {r_, w_, cap_};
    return;
  }
  ::close(r_);
  ::close(w_);
}

namespace {

// A splice onto a socket whose peer is gone raises SIGPIPE: unlike send(), it takes no
// MSG_NOSIGNAL. The signal is blocked in each thread that splices (on the first splice; a
// process that ignores SIGPIPE, as Server::run makes it, never sees it either way), and one raised
// by a failed splice is taken back at once, so it is neither delivered nor left pending.
thread_local bool sigpipe_blocked = false;

sigset_t sigpipe_set() noexcept {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGPIPE);
  return s;
}

}  // namespace

std::size_t splice_out(SplicePipe& p, int fd, bool more, boost::system::error_code& ec) noexcept {
  if (!sigpipe_blocked) {
    const sigset_t s = sigpipe_set();
    sigpipe_blocked = ::pthread_sigmask(SIG_BLOCK, &s, nullptr) == 0;
  }
  ssize_t sent;
  do {
    sent = ::splice(p.read_end(), nullptr, fd, nullptr, p.held,
                    SPLICE_F_MOVE | SPLICE_F_NONBLOCK | (more ? SPLICE_F_MORE : 0u));
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) {
    const int err = errno;
    if (err == EPIPE) {
      const sigset_t s = sigpipe_set();
      const timespec now{0, 0};
      while (::sigtimedwait(&s, nullptr, &now) == SIGPIPE) {
      }
    }
    if (err != EAGAIN && err != EWOULDBLOCK)
      ec.assign(err, boost::asio::error::get_system_category());
    return 0;
  }
  p.held -= static_cast<std::size_t>(sent);
  return static_cast<std::size_t>(sent);
}

}  // namespace portico::detail
