#include "gpurun/common/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "gpurun/common/env.h"
#include "gpurun/common/error.h"
#include "gpurun/common/io.h"

namespace gpurun::log {
namespace {

struct State {
  std::once_flag once;
  std::atomic<int> level{static_cast<int>(Level::kWarn)};
  std::vector<std::string> subsys;  // empty = all
  std::string prefix;
  std::mutex mu;
};

State& state() {
  static State* s = new State();  // never destroyed: logging may happen during static teardown
  return *s;
}

void init_from_env_once() {
  auto& s = state();
  std::call_once(s.once, [&] {
    if (const char* lvl = std::getenv("GPURUN_LOG_LEVEL")) {
      try {
        s.level = static_cast<int>(parse_level(lvl));
      } catch (const Error&) {
        s.level = static_cast<int>(Level::kWarn);
      }
    }
    if (const char* sub = std::getenv("GPURUN_LOG_SUBSYS"); sub && *sub) {
      for (auto& part : split(sub, ',')) {
        if (!part.empty()) s.subsys.push_back(part);
      }
    }
    if (s.prefix.empty()) s.prefix = fmt::format("[gpurun pid {}]", ::getpid());
  });
}

const char* level_name(Level l) {
  switch (l) {
    case Level::kError:
      return "ERROR";
    case Level::kWarn:
      return "WARN";
    case Level::kInfo:
      return "INFO";
    case Level::kDebug:
      return "DEBUG";
    case Level::kTrace:
      return "TRACE";
  }
  return "?";
}

}  // namespace

Level parse_level(std::string_view text) {
  if (text == "error" || text == "ERROR") return Level::kError;
  if (text == "warn" || text == "WARN" || text == "warning" || text == "WARNING")
    return Level::kWarn;
  if (text == "info" || text == "INFO") return Level::kInfo;
  if (text == "debug" || text == "DEBUG") return Level::kDebug;
  if (text == "trace" || text == "TRACE") return Level::kTrace;
  throw ConfigError(fmt::format(
      "invalid log level '{}' (unknown); use one of error, warn, info, debug, trace", text));
}

bool enabled(Level level, std::string_view subsys) {
  init_from_env_once();
  auto& s = state();
  if (static_cast<int>(level) > s.level.load(std::memory_order_relaxed)) return false;
  if (level == Level::kError || s.subsys.empty()) return true;
  for (const auto& f : s.subsys) {
    if (f == subsys || f == "all" || f == "ALL") return true;
  }
  return false;
}

void configure(Level level, std::string subsys_filter) {
  init_from_env_once();
  auto& s = state();
  std::lock_guard lock(s.mu);
  s.level = static_cast<int>(level);
  s.subsys.clear();
  for (auto& part : split(subsys_filter, ',')) {
    if (!part.empty()) s.subsys.push_back(part);
  }
}

void set_prefix(std::string p) {
  init_from_env_once();
  auto& s = state();
  std::lock_guard lock(s.mu);
  s.prefix = std::move(p);
}

const std::string& prefix() {
  init_from_env_once();
  return state().prefix;
}

void write(Level level, std::string_view subsys, std::string_view msg) {
  init_from_env_once();
  auto& s = state();
  std::string line;
  {
    std::lock_guard lock(s.mu);
    line = fmt::format("{} {} {}: {}\n", s.prefix, level_name(level), subsys, msg);
  }
  write_all(STDERR_FILENO, line);
}

}  // namespace gpurun::log
