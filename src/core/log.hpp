// Internal logging front-end over spdlog; never included from public headers.
#pragma once

#include <spdlog/spdlog.h>

namespace portico::log {

/// The error log. Defaults to stderr; Server configuration may redirect it.
spdlog::logger& error_log();

}  // namespace portico::log
