// Daemon mode and privileges: the double fork with a readiness pipe back to the parent, the
// pid file, and switching to the configured user and group after binding.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>

#include <portico/core/result.hpp>

namespace portico::detail {

struct DaemonOptions {
  /// Written with the daemon's pid; an existing one is renamed "<pid_file>.old" first. Empty:
  /// no pid file.
  std::string pid_file;
  /// The daemon's working directory; empty: "/".
  std::string working_directory;
  /// When set (a file, not "syslog"), the daemon's stderr is appended to it.
  std::string error_log;
  /// How long the parent waits for the daemon to report that it is ready (or failed).
  std::chrono::seconds ready_timeout{600};
};

/// The daemon's end of the readiness pipe. The parent (the process that called daemonize())
/// exits 0 once ready() is called, or 1 with the message of failed(); it also exits 1 when the
/// daemon exits without either or the timeout passes.
class DaemonReady {
 public:
  DaemonReady() = default;
  explicit DaemonReady(int fd) : fd_(fd) {}
  DaemonReady(DaemonReady&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  DaemonReady& operator=(DaemonReady&& o) noexcept;
  ~DaemonReady();
  /// True in a daemon whose parent still waits.
  explicit operator bool() const noexcept { return fd_ >= 0; }
  /// Stdout goes to /dev/null from now on (it was kept so that the daemon could announce its
  /// addresses), then the parent exits 0.
  void ready() noexcept;
  /// The parent prints `message` on its stderr and exits 1.
  void failed(const std::string& message) noexcept;

 private:
  int fd_ = -1;
};

/// Detaches the process: fork, setsid, fork again, umask 007, chdir, stdin to /dev/null,
/// stderr to `error_log` when it is a file, pid file. Returns only in the daemon; the original
/// process waits on the readiness pipe and exits (it never returns). Call it before any thread
/// is started: threads do not survive fork. An error (a pid file that cannot be written, a
/// working directory that does not exist) is reported to the parent through the pipe as well.
Result<DaemonReady> daemonize(const DaemonOptions& o);

/// Removes the pid file when it still names this process (a newer instance may have replaced it).
void remove_pid_file(const std::string& path) noexcept;

/// Switches to `user` (its uid, its primary group unless `group` is set, its supplementary
/// groups) and/or `group`. Both empty: nothing. The error names the user or group.
Result<void> drop_privileges(const std::string& user, const std::string& group);

/// The uid of `user`, or -1 when it is empty or unknown.
uid_t uid_of(const std::string& user) noexcept;

}  // namespace portico::detail
