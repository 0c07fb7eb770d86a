#include "gpurun/common/duration.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <limits>

#include "gpurun/common/error.h"

namespace gpurun {

milliseconds parse_duration(std::string_view text, std::string_view what) {
  auto bad = [&](std::string_view why) {
    return ConfigError(
        fmt::format("invalid {} '{}' ({}); use a number with a unit, e.g. 250ms, 30s, 5m or 1h",
                    what, text, why));
  };
  if (text.empty()) throw bad("empty");
  std::size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
    ++i;
  if (i == 0) throw bad(text[0] == '-' ? "negative" : "no number");
  std::string number(text.substr(0, i));
  std::string_view unit = text.substr(i);
  char* end = nullptr;
  double value = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size() || !std::isfinite(value)) throw bad("not a number");
  double factor_ms;
  if (unit.empty() || unit == "s" || unit == "sec")
    factor_ms = 1000.0;
  else if (unit == "ms")
    factor_ms = 1.0;
  else if (unit == "m" || unit == "min")
    factor_ms = 60'000.0;
  else if (unit == "h")
    factor_ms = 3'600'000.0;
  else
    throw bad(fmt::format("unknown unit '{}'", unit));
  double ms = value * factor_ms;
  if (ms >= static_cast<double>(std::numeric_limits<milliseconds::rep>::max() / 2))
    return kNoTimeout;
  return milliseconds(static_cast<milliseconds::rep>(std::llround(ms)));
}

std::string format_duration(milliseconds d) {
  if (d == kNoTimeout) return "no timeout";
  auto ms = d.count();
  if (ms < 1000 || ms % 1000 != 0) {
    if (ms < 1000) return fmt::format("{}ms", ms);
    return fmt::format("{:.3g}s", static_cast<double>(ms) / 1000.0);
  }
  auto s = ms / 1000;
  if (s < 60) return fmt::format("{}s", s);
  if (s % 3600 == 0) return fmt::format("{}h", s / 3600);
  if (s < 3600) return s % 60 == 0 ? fmt::format("{}m", s / 60) : fmt::format("{}s", s);
  return fmt::format("{}h{}m", s / 3600, (s % 3600) / 60);
}

Clock::time_point deadline_after(milliseconds timeout) {
  auto now = Clock::now();
  if (timeout == kNoTimeout) return Clock::time_point::max();
  auto room = std::chrono::duration_cast<milliseconds>(Clock::time_point::max() - now);
  if (timeout >= room) return Clock::time_point::max();
  return now + timeout;
}

milliseconds remaining(Clock::time_point deadline) {
  if (deadline == Clock::time_point::max()) return kNoTimeout;
  auto now = Clock::now();
  if (deadline <= now) return milliseconds(0);
  return std::chrono::ceil<milliseconds>(deadline - now);
}

}  // namespace gpurun
