// AccessLog: one line per request, formatted from a template with nginx-like variables, queued
// per thread and written to a file by a background thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <portico/core/error.hpp>
#include <portico/core/result.hpp>
#include <portico/server/config.hpp>

namespace portico {

class Session;

namespace observe {

/// The format used when none is given: nginx's "combined" followed by the upstream details.
inline constexpr std::string_view kDefaultAccessLogFormat =
    "$remote_addr - - [$time_iso8601] \"$request\" $status $body_bytes_sent \"$http_referer\" "
    "\"$http_user_agent\" rt=$request_time ua=$upstream_addr uct=$upstream_connect_time "
    "uht=$upstream_header_time reused=$upstream_reused retries=$retries err=$error";

struct AccessLogOptions {
  /// File the lines are appended to (created with mode 0644). "", "-" or "stderr": standard error;
  /// "stdout": standard output.
  std::string path;
  /// The line template: literal text and variables (`$name` or `${name}`), listed in
  /// docs/observability.md. Empty: kDefaultAccessLogFormat. A newline is added to each line.
  std::string format;
  /// Bytes of formatted lines each recording thread may have queued; a line that does not fit is
  /// dropped and counted (lines_dropped()).
  std::size_t buffer_bytes = 256 * 1024;
  /// The writer thread writes what is queued at least this often.
  std::chrono::milliseconds flush_interval{200};
  /// A thread whose queue passes this many bytes wakes the writer before the interval; 0: only
  /// the interval (and flush()) wakes it. Capped at buffer_bytes / 2.
  std::size_t wake_bytes = 128 * 1024;
};

/// An access log. Recording (`log`, `write_line`) runs on the caller's thread: it formats the line
/// into a thread-local scratch buffer and copies it into the thread's own bounded queue, with no
/// lock, no system call and, after each thread's first line, no allocation. A writer thread of the
/// log's own empties the queues into the file.
///
/// Give it to a service with HttpProxyService::set_access_log(); one log may serve several
/// services. Destroying the log writes what is queued and stops its thread.
class AccessLog {
 public:
  /// Opens (creates) the file and checks the format: an unknown variable or an unreadable path
  /// is an error here.
  static Result<std::shared_ptr<AccessLog>> open(AccessLogOptions opts);
  static Result<std::shared_ptr<AccessLog>> open(std::string path, std::string format = {});

  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  /// Queues the line of a finished request. `err` is the error the request ended with (as the
  /// `logging` hook sees it), `service` the service's name ($service).
  void log(const Session& s, const Error* err, std::string_view service = {}) noexcept;
  /// Queues `line` as it is (a newline is added).
  void write_line(std::string_view line) noexcept;

  /// Blocks until every line queued before the call is written.
  void flush();
  /// Asks the writer to reopen the file (after logrotate moved it); asynchronous, the next write
  /// goes to the new file. reopen_access_logs() does it for every open log.
  void reopen() noexcept;

  /// Lines queued, and lines dropped because a queue was full, since the log was opened.
  std::uint64_t lines_queued() const noexcept;
  std::uint64_t lines_dropped() const noexcept;
  /// Write errors (a full disk, ...): the bytes of that write are lost.
  std::uint64_t write_errors() const noexcept;
  const AccessLogOptions& options() const noexcept;

  struct Impl;

 private:
  explicit AccessLog(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// Reopens the files of every open access log (SIGUSR1). Async-signal-safe: it only bumps an
/// atomic generation that each log's writer thread checks before writing, at the latest after
/// its flush interval.
void reopen_access_logs() noexcept;

/// The log the `access_log:` configuration block asks for: null when `path` is empty.
Result<std::shared_ptr<AccessLog>> open_access_log(const AccessLogConfig& cfg);

}  // namespace observe
}  // namespace portico
