#include "core/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>

namespace portico::log {

spdlog::logger& error_log() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::stderr_logger_mt("portico");
    l->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%t] %v");
    l->set_level(spdlog::level::info);
    return l;
  }();
  return *logger;
}

}  // namespace portico::log
