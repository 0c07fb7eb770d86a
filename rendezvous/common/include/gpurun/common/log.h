// One small logger for gpurun. Level from GPURUN_LOG_LEVEL (error|warn|info|debug|trace,
// default warn), optional subsystem filter from GPURUN_LOG_SUBSYS=store,launch (like NCCL_DEBUG /
// NCCL_DEBUG_SUBSYS). The level is checked before formatting. Lines go to stderr, whole lines at
// a time, with a process prefix such as "[gpurun host:pid]" or "[host rank 3/8]".
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>

namespace gpurun::log {

enum class Level : int { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3, kTrace = 4 };

// Reads GPURUN_LOG_LEVEL / GPURUN_LOG_SUBSYS once (first use) unless configure() was called.
bool enabled(Level level, std::string_view subsys);
void configure(Level level, std::string subsys_filter = "");
void set_prefix(std::string prefix);  // e.g. "[gpurun node0:1234]"
const std::string& prefix();

// Writes one line: "<prefix> <LEVEL> <subsys>: <msg>\n" atomically (one write()).
void write(Level level, std::string_view subsys, std::string_view msg);

Level parse_level(std::string_view text);  // throws ConfigError

}  // namespace gpurun::log

#define GPURUN_LOG(level, subsys, ...)                                     \
  do {                                                                     \
    if (::gpurun::log::enabled((level), (subsys)))                         \
      ::gpurun::log::write((level), (subsys), ::fmt::format(__VA_ARGS__)); \
  } while (0)
#define GPURUN_LOG_ERROR(subsys, ...) GPURUN_LOG(::gpurun::log::Level::kError, subsys, __VA_ARGS__)
#define GPURUN_LOG_WARN(subsys, ...) GPURUN_LOG(::gpurun::log::Level::kWarn, subsys, __VA_ARGS__)
#define GPURUN_LOG_INFO(subsys, ...) GPURUN_LOG(::gpurun::log::Level::kInfo, subsys, __VA_ARGS__)
#define GPURUN_LOG_DEBUG(subsys, ...) GPURUN_LOG(::gpurun::log::Level::kDebug, subsys, __VA_ARGS__)
#define GPURUN_LOG_TRACE(subsys, ...) GPURUN_LOG(::gpurun::log::Level::kTrace, subsys, __VA_ARGS__)
