#include "server/daemon.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace portico::detail {

namespace {

Error sys_error(const std::string& what, int err = errno) {
  return Error::internal(ErrorType::InternalError, what + ": " + std::strerror(err));
}

void write_all(int fd, const char* p, std::size_t n) noexcept {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

/// The original process: waits for the daemon's word and exits with it.
[[noreturn]] void wait_for_daemon(int fd, pid_t first_child, std::chrono::seconds timeout) {
  // The first child exits as soon as it forked the daemon.
  while (::waitpid(first_child, nullptr, 0) < 0 && errno == EINTR) {
  }
  std::string msg;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      std::fprintf(stderr, "daemon not ready after %lld s; giving up waiting\n",
                   static_cast<long long>(timeout.count()));
      std::_Exit(1);
    }
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    char buf[4096];
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    msg.append(buf, static_cast<std::size_t>(r));
  }
  // "0" = ready; "1" + message = failed; nothing = the daemon died first.
  if (!msg.empty() && msg[0] == '0') std::_Exit(0);
  if (!msg.empty() && msg[0] == '1') {
    std::fprintf(stderr, "%s\n", msg.c_str() + 1);
  } else {
    std::fprintf(stderr, "the daemon exited before it was ready (see its error log)\n");
  }
  std::_Exit(1);
}

Result<void> write_pid_file(const std::string& path) {
  if (path.empty()) return ok();
  if (::access(path.c_str(), F_OK) == 0) {
    const std::string old = path + ".old";
    if (::rename(path.c_str(), old.c_str()) != 0) return sys_error("pid file: renaming " + path);
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return sys_error("pid file " + path);
  const std::string text = std::to_string(::getpid()) + "\n";
  write_all(fd, text.data(), text.size());
  ::close(fd);
  return ok();
}

}  // namespace

DaemonReady& DaemonReady::operator=(DaemonReady&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

DaemonReady::~DaemonReady() {
  if (fd_ >= 0) ::close(fd_);
}

void DaemonReady::ready() noexcept {
  if (fd_ < 0) return;
  std::fflush(stdout);
  if (int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC); null >= 0) {
    ::dup2(null, 1);
    ::close(null);
  }
  write_all(fd_, "0", 1);
  ::close(fd_);
  fd_ = -1;
}

void DaemonReady::failed(const std::string& message) noexcept {
  if (fd_ < 0) return;
  const std::string m = "1" + message;
  write_all(fd_, m.data(), m.size());
  ::close(fd_);
  fd_ = -1;
}

Result<DaemonReady> daemonize(const DaemonOptions& o) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return sys_error("daemon: pipe");
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t first = ::fork();
  if (first < 0) {
    ::close(p[0]);
    ::close(p[1]);
    return sys_error("daemon: fork");
  }
  if (first > 0) {
    ::close(p[1]);
    wait_for_daemon(p[0], first, o.ready_timeout);
  }
  // First child: a new session without a controlling terminal, then a child that is not its
  // leader, so that it can never acquire one.
  ::close(p[0]);
  DaemonReady ready(p[1]);
  if (::setsid() < 0) {
    ready.failed(std::string("daemon: setsid: ") + std::strerror(errno));
    std::_Exit(1);
  }
  pid_t second = ::fork();
  if (second < 0) {
    ready.failed(std::string("daemon: fork: ") + std::strerror(errno));
    std::_Exit(1);
  }
  if (second > 0) std::_Exit(0);

  ::umask(007);
  const std::string dir = o.working_directory.empty() ? "/" : o.working_directory;
  if (::chdir(dir.c_str()) != 0) {
    auto e = sys_error("working_directory " + dir);
    ready.failed(std::string(e.context()));
    return e;
  }
  if (int null = ::open("/dev/null", O_RDWR | O_CLOEXEC); null >= 0) {
    ::dup2(null, 0);
    ::close(null);
  }
  // stdout stays until ready(): the daemon may announce its addresses on it first.
  if (!o.error_log.empty() && o.error_log != "syslog") {
    int fd = ::open(o.error_log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
      auto e = sys_error("error_log " + o.error_log);
      ready.failed(std::string(e.context()));
      return e;
    }
    ::dup2(fd, 2);
    ::close(fd);
  }
  if (auto w = write_pid_file(o.pid_file); !w) {
    ready.failed(std::string(w.error().context()));
    return w.error();
  }
  return ready;
}

void remove_pid_file(const std::string& path) noexcept {
  if (path.empty()) return;
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return;
  long pid = 0;
  const bool mine = std::fscanf(f, "%ld", &pid) == 1 && pid == static_cast<long>(::getpid());
  std::fclose(f);
  if (mine) ::unlink(path.c_str());
}

uid_t uid_of(const std::string& user) noexcept {
  if (user.empty()) return static_cast<uid_t>(-1);
  passwd* pw = ::getpwnam(user.c_str());
  return pw ? pw->pw_uid : static_cast<uid_t>(-1);
}

Result<void> drop_privileges(const std::string& user, const std::string& group) {
  if (user.empty() && group.empty()) return ok();
  gid_t gid = static_cast<gid_t>(-1);
  uid_t uid = static_cast<uid_t>(-1);
  errno = 0;
  if (!user.empty()) {
    passwd* pw = ::getpwnam(user.c_str());
    if (!pw)
      return Error::internal(ErrorType::InternalError,
                             "user '" + user + "': " + (errno ? std::strerror(errno) : "no such user"));
    uid = pw->pw_uid;
    gid = pw->pw_gid;
  }
  if (!group.empty()) {
    errno = 0;
    struct group* gr = ::getgrnam(group.c_str());
    if (!gr)
      return Error::internal(ErrorType::InternalError, "group '" + group + "': " +
                                                           (errno ? std::strerror(errno) : "no such group"));
    gid = gr->gr_gid;
  }
  // Groups first: once the uid is dropped, changing them is no longer allowed.
  if (!user.empty() && ::initgroups(user.c_str(), gid) != 0)
    return sys_error("user '" + user + "': initgroups");
  if (user.empty() && ::setgroups(0, nullptr) != 0 && errno != EPERM)
    return sys_error("group '" + group + "': setgroups");
  if (::setgid(gid) != 0)
    return sys_error(group.empty() ? "user '" + user + "': setgid" : "group '" + group + "': setgid");
  if (!user.empty() && ::setuid(uid) != 0) return sys_error("user '" + user + "': setuid");
  return ok();
}

}  // namespace portico::detail
