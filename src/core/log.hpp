// Internal logging front-end over spdlog; never included from public headers.
#pragma once

#include <exception>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include <portico/core/result.hpp>

namespace portico::log {

/// The error log. Defaults to stderr; Server configuration may redirect it.
spdlog::logger& error_log();

/// Where the error log goes: "" (stderr), "syslog" (facility daemon, ident "portico"), or a file
/// path (appended to, created 0640 when missing). Replaces the current destination at once;
/// lines being written by other threads go to the old or the new one, never get lost or torn.
/// On failure (a file that cannot be opened) the current destination is kept and the error
/// names the path.
Result<void> set_error_log(const std::string& target);
/// The destination set last ("" for stderr).
std::string error_log_target();
/// Opens the error log file again under its name (after logrotate renamed it): SIGUSR1. With
/// `redirect_stderr` (a daemon whose stderr is the log file), fd 2 is pointed at the new file
/// too. No effect for stderr and syslog.
Result<void> reopen_error_log(bool redirect_stderr);

/// Logs the exception `e` ended `what` with ("<what> ended by an exception: <message>"); nothing
/// when `e` is null. For the completion handlers of coroutines spawned detached.
void ended_by(std::exception_ptr e, std::string_view what) noexcept;

}  // namespace portico::log
