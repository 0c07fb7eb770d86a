#include "gpurun/common/progress.h"

#include <array>

namespace gpurun {

std::chrono::milliseconds ProgressSchedule::at(std::size_t i) const {
  static constexpr std::array<long long, 5> kFirst{1, 3, 6, 30, 60};
  const long long factor =
      i < kFirst.size() ? kFirst[i] : 60 * static_cast<long long>(i - kFirst.size() + 2);
  return first_ * factor;
}

bool ProgressSchedule::due(std::chrono::milliseconds elapsed) {
  if (!enabled() || elapsed < at(step_)) return false;
  while (elapsed >= at(step_)) ++step_;
  return true;
}

std::chrono::milliseconds progress_after_from(const EnvMap& env) {
  if (auto d = env_duration(env, "GPURUN_WAIT_PROGRESS")) return *d;
  return kDefaultProgressAfter;
}

std::chrono::milliseconds round_to_seconds(std::chrono::milliseconds d) {
  if (d < std::chrono::seconds(1)) return d;
  return std::chrono::duration_cast<std::chrono::seconds>(d);
}

}  // namespace gpurun
