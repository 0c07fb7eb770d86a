// When a long wait reports that it is still waiting: at growing intervals after the wait began
// (10 s, 30 s, 1 min, 5 min, 10 min, then every 10 min with the default first step), so a hang
// says what it waits for without flooding the log. GPURUN_WAIT_PROGRESS sets the first step
// (the others scale with it); 0 turns the reports off. Pure: the caller supplies the elapsed time.
#pragma once

#include <chrono>
#include <cstddef>

#include "gpurun/common/env.h"

namespace gpurun {

inline constexpr std::chrono::milliseconds kDefaultProgressAfter{10'000};

class ProgressSchedule {
 public:
  explicit ProgressSchedule(std::chrono::milliseconds first = kDefaultProgressAfter)
      : first_(first) {}

  bool enabled() const { return first_.count() > 0; }
  // True once for each step that `elapsed` has passed since the last reset (several steps passed
  // at once report once).
  bool due(std::chrono::milliseconds elapsed);
  // A new wait begins.
  void reset() { step_ = 0; }
  // The elapsed time of step `i` (0-based): first x 1, 3, 6, 30, 60, 120, 180, ...
  std::chrono::milliseconds at(std::size_t i) const;

 private:
  std::chrono::milliseconds first_;
  std::size_t step_ = 0;
};

// GPURUN_WAIT_PROGRESS (a duration; 0 = off), else kDefaultProgressAfter. Throws ConfigError on
// a malformed value.
std::chrono::milliseconds progress_after_from(const EnvMap& env);

// For messages: whole seconds from 1 s on ("12s" rather than "12.034s").
std::chrono::milliseconds round_to_seconds(std::chrono::milliseconds d);

}  // namespace gpurun
