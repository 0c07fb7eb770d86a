// Durations as users type them ("30s", "5m", "100ms", "1h", "1.5s"; a bare number means seconds)
// and deadline arithmetic that treats kNoTimeout as "never".
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace gpurun {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// "No timeout": an explicit value, never a magic -1. Deadlines computed from it never expire.
inline constexpr milliseconds kNoTimeout = milliseconds::max();

// Parses "250ms", "30s", "5m", "2h", "1.5s" or a bare number of seconds ("30", "0.1").
// Throws ConfigError naming `what` (e.g. "--timeout") on malformed or negative input.
milliseconds parse_duration(std::string_view text, std::string_view what = "duration");

// "250ms", "30s", "5m", "1h30m" — short and exact enough for messages.
std::string format_duration(milliseconds d);

// now + timeout, saturating: kNoTimeout gives Clock::time_point::max().
Clock::time_point deadline_after(milliseconds timeout);

// Time left until `deadline`, never negative.
milliseconds remaining(Clock::time_point deadline);

}  // namespace gpurun
