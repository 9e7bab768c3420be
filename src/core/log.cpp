#include "core/log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/dist_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/syslog_sink.h>

namespace portico::log {

namespace {

constexpr const char* kPattern = "%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%t] %v";

/// The logger writes to one dist_sink whose single member is the current destination: swapping
/// the member is thread-safe (dist_sink locks), swapping the logger's own sinks is not.
struct State {
  std::shared_ptr<spdlog::sinks::dist_sink_mt> dist = std::make_shared<spdlog::sinks::dist_sink_mt>();
  std::shared_ptr<spdlog::logger> logger;
  std::mutex mu;       // serializes set_error_log / reopen_error_log
  std::string target;  // under mu
  State() {
    auto err = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    err->set_pattern(kPattern);
    dist->set_sinks({err});
    logger = std::make_shared<spdlog::logger>("portico", dist);
    logger->set_level(spdlog::level::info);
    // Error lines are few; each reaches the file at once (tests and tail -f read it).
    logger->flush_on(spdlog::level::trace);
  }
};

State& state() {
  static State s;
  return s;
}

Result<spdlog::sink_ptr> make_sink(const std::string& target) {
  spdlog::sink_ptr sink;
  if (target.empty()) {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    sink->set_pattern(kPattern);
    return sink;
  }
  if (target == "syslog") {
    // syslog stamps the time and the priority itself.
    sink = std::make_shared<spdlog::sinks::syslog_sink_mt>("portico", LOG_PID, LOG_DAEMON, true);
    sink->set_pattern("[%t] %v");
    return sink;
  }
  // Open (and create) the file here first: spdlog would throw, and this names the errno.
  int fd = ::open(target.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0)
    return Error::internal(ErrorType::InternalError,
                           "error_log '" + target + "': " + std::strerror(errno));
  ::close(fd);
  try {
    sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(target, false);
  } catch (const std::exception& e) {
    return Error::internal(ErrorType::InternalError, "error_log '" + target + "': " + e.what());
  }
  sink->set_pattern(kPattern);
  return sink;
}

}  // namespace

spdlog::logger& error_log() { return *state().logger; }

void ended_by(std::exception_ptr e, std::string_view what) noexcept {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    error_log().error("{} ended by an exception: {}", what, x.what());
  } catch (...) {
    error_log().error("{} ended by an unknown exception", what);
  }
}

Result<void> set_error_log(const std::string& target) {
  State& s = state();
  std::lock_guard lk(s.mu);
  auto sink = make_sink(target);
  if (!sink) return sink.error();
  s.dist->set_sinks({std::move(*sink)});
  s.target = target;
  return ok();
}

std::string error_log_target() {
  State& s = state();
  std::lock_guard lk(s.mu);
  return s.target;
}

Result<void> reopen_error_log(bool redirect_stderr) {
  State& s = state();
  std::lock_guard lk(s.mu);
  if (s.target.empty() || s.target == "syslog") return ok();
  auto sink = make_sink(s.target);
  if (!sink) return sink.error();
  s.dist->set_sinks({std::move(*sink)});
  if (redirect_stderr) {
    int fd = ::open(s.target.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
      return Error::internal(ErrorType::InternalError,
                             "error_log '" + s.target + "': " + std::strerror(errno));
    ::dup2(fd, 2);
    ::close(fd);
  }
  return ok();
}

}  // namespace portico::log
