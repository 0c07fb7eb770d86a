// Internals of the worker planner shared with the --dry-run formatter and tests.
#pragma once

#include <string>
#include <vector>

namespace gpurun::launcher {

// The variables plan_workers() sets or may set on top of the inherited environment, in display
// order (the device-visibility variables are listed because they decide what a worker sees).
const std::vector<std::string>& worker_env_keys();

// torchrun's OMP_NUM_THREADS warning, printed once when gpurun sets OMP_NUM_THREADS=1.
extern const char* const kOmpWarning;

// "2,3" / "4-7" / "0,2-5": compact list of ranks for messages.
std::string format_rank_list(const std::vector<int>& ranks);

}  // namespace gpurun::launcher
