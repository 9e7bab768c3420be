#include "server/upgrade.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

namespace portico::detail {

namespace {

constexpr std::size_t kFdsPerMessage = 64;
constexpr std::string_view kMagic = "PORTICO-UPGRADE 1 ";
constexpr std::chrono::milliseconds kMessageTimeout{5000};

Error upgrade_error(const std::string& what) {
  return Error::internal(ErrorType::InternalError, "upgrade: " + what);
}
Error sys_error(const std::string& what, int err = errno) {
  return upgrade_error(what + ": " + std::strerror(err));
}

Result<sockaddr_un> unix_addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path)
    return upgrade_error("upgrade_sock '" + path + "' is empty or too long for a Unix socket");
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}

/// Waits for `events` on fd; false on timeout.
bool wait_for(int fd, short events, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

bool peer_allowed(int fd, uid_t also_allowed, uid_t* peer_uid) {
  ucred cr{};
  socklen_t len = sizeof cr;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) return false;
  *peer_uid = cr.uid;
  return cr.uid == 0 || cr.uid == ::geteuid() ||
         (also_allowed != static_cast<uid_t>(-1) && cr.uid == also_allowed);
}

}  // namespace

ListenerHandover::ListenerHandover(ListenerHandover&& o) noexcept
    : conn_(o.conn_), fds_(std::move(o.fds_)) {
  o.conn_ = -1;
  o.fds_.clear();
}

ListenerHandover& ListenerHandover::operator=(ListenerHandover&& o) noexcept {
  ListenerHandover tmp(std::move(o));
  std::swap(conn_, tmp.conn_);
  std::swap(fds_, tmp.fds_);
  return *this;
}

ListenerHandover::~ListenerHandover() {
  for (auto& f : fds_)
    if (f.fd >= 0) ::close(f.fd);
  fds_.clear();
  if (conn_ >= 0) ::close(conn_);
  conn_ = -1;
}

void ListenerHandover::confirm() noexcept {
  if (conn_ < 0) return;
  (void)::send(conn_, "OK\n", 3, MSG_NOSIGNAL | MSG_DONTWAIT);
  ::close(conn_);
  conn_ = -1;
}

Result<ListenerHandover> ListenerHandover::receive(const std::string& path,
                                                   std::chrono::milliseconds wait,
                                                   uid_t also_allowed) {
  auto addr = unix_addr(path);
  if (!addr) return addr.error();
  int ls = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (ls < 0) return sys_error("socket");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } close_ls{ls};
  ::unlink(path.c_str());
  if (::bind(ls, reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0)
    return sys_error("binding " + path);
  struct Unlinker {
    const std::string& p;
    ~Unlinker() { ::unlink(p.c_str()); }
  } unlink_at_end{path};
  // The old process may run as the configured `user` by now: let it connect; credentials are
  // checked once it does.
  ::chmod(path.c_str(), 0666);
  if (::listen(ls, 8) != 0) return sys_error("listen on " + path);

  const auto deadline = std::chrono::steady_clock::now() + wait;
  ListenerHandover h;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || !wait_for(ls, POLLIN, left))
      return upgrade_error("no listening sockets received on " + path + " within " +
                           std::to_string(wait.count() / 1000) +
                           " s (is the old process running with the same upgrade_sock, and was "
                           "it sent SIGQUIT?)");
    int c = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    uid_t uid = 0;
    if (!peer_allowed(c, also_allowed, &uid)) {
      ::close(c);
      continue;  // someone else; keep waiting for the old process
    }
    h.conn_ = c;
    break;
  }

  for (bool more = true; more;) {
    if (!wait_for(h.conn_, POLLIN, kMessageTimeout))
      return upgrade_error("the old process connected but sent no sockets");
    std::vector<char> data(64 * 1024);
    alignas(cmsghdr) char control[CMSG_SPACE(kFdsPerMessage * sizeof(int))];
    iovec iov{data.data(), data.size()};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(h.conn_, &m, MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return sys_error("receiving the sockets");
    if (n == 0) return upgrade_error("the old process closed the upgrade socket before sending");
    std::vector<int> got;
    for (cmsghdr* cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
      if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < k; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
        got.push_back(fd);
      }
    }
    // Owned from here on, whatever follows.
    std::vector<std::string> lines;
    std::string_view text(data.data(), static_cast<std::size_t>(n));
    const bool well_formed = !(m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) &&
                             text.starts_with(kMagic) && text.size() > kMagic.size() + 1;
    if (well_formed) {
      more = text[kMagic.size()] == '1';
      text.remove_prefix(kMagic.size() + 1);
      if (!text.empty() && text.front() == '\n') text.remove_prefix(1);
      while (!text.empty()) {
        auto nl = text.find('\n');
        lines.emplace_back(text.substr(0, nl));
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
      }
    }
    if (!well_formed || lines.size() != got.size()) {
      for (int fd : got) ::close(fd);
      return upgrade_error("malformed message from the old process on " + path);
    }
    for (std::size_t i = 0; i < got.size(); ++i) h.fds_.push_back({std::move(lines[i]), got[i]});
  }
  return h;
}

Result<void> send_listeners(const std::string& path, const std::vector<ListenerFd>& fds,
                            std::size_t retries, std::chrono::milliseconds confirm_timeout) {
  auto addr = unix_addr(path);
  if (!addr) return addr.error();
  int s = -1;
  for (std::size_t attempt = 1;; ++attempt) {
    s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0) return sys_error("socket");
    if (::connect(s, reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) == 0) break;
    const int err = errno;
    ::close(s);
    const bool later = err == ENOENT || err == ECONNREFUSED || err == EACCES || err == EAGAIN ||
                       err == EINTR;
    if (!later || attempt >= std::max<std::size_t>(retries, 1))
      return sys_error("connecting to " + path + " (" + std::to_string(attempt) +
                           " attempt(s); is the new process started with -u?)",
                       err);
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } close_s{s};
  uid_t uid = 0;
  if (!peer_allowed(s, static_cast<uid_t>(-1), &uid))
    return upgrade_error("the process listening on " + path + " runs as uid " +
                         std::to_string(uid) + ", neither root nor this process's user; not "
                         "sending it the listening sockets");
  timeval tv{static_cast<time_t>(kMessageTimeout.count() / 1000), 0};
  ::setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);

  for (std::size_t at = 0; at < fds.size() || at == 0; at += kFdsPerMessage) {
    const std::size_t end = std::min(fds.size(), at + kFdsPerMessage);
    std::string text(kMagic);
    text += end < fds.size() ? "1\n" : "0\n";
    for (std::size_t i = at; i < end; ++i) text += fds[i].address + "\n";
    alignas(cmsghdr) char control[CMSG_SPACE(kFdsPerMessage * sizeof(int))] = {};
    iovec iov{text.data(), text.size()};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (end > at) {
      m.msg_control = control;
      m.msg_controllen = CMSG_SPACE((end - at) * sizeof(int));
      cmsghdr* cm = CMSG_FIRSTHDR(&m);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN((end - at) * sizeof(int));
      for (std::size_t i = at; i < end; ++i)
        std::memcpy(CMSG_DATA(cm) + (i - at) * sizeof(int), &fds[i].fd, sizeof(int));
    }
    ssize_t n;
    do n = ::sendmsg(s, &m, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0) return sys_error("sending the listening sockets to " + path);
    if (end >= fds.size()) break;
  }
  if (!wait_for(s, POLLIN, confirm_timeout))
    return upgrade_error("the new process did not confirm within " +
                         std::to_string(confirm_timeout.count()) + " ms that it accepts on the "
                         "sockets");
  char buf[16];
  ssize_t n = ::recv(s, buf, sizeof buf, 0);
  if (n < 2 || std::string_view(buf, 2) != "OK")
    return upgrade_error("the new process did not take the sockets over (it failed to start; "
                         "see its error log)");
  return ok();
}

}  // namespace portico::detail
