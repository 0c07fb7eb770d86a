// The worker command, and internals of the worker planner shared with the --dry-run formatter
// and tests.
#pragma once

#include <string>
#include <vector>

#include "cli/config.h"
#include "gpurun/common/int_ranges.h"

namespace gpurun::launcher {

// The worker command before ${local_rank} substitution: `$PYTHON_EXEC -u [-m] PROGRAM args` for a
// .py program, -m, --run-path, or any other file torchrun would hand to Python; PROGRAM args for
// --no-python, an ELF binary, an executable #! script, or a name that is not a file here (a
// command found in PATH). torchrun runs everything through Python unless --no-python.
std::vector<std::string> base_command(const LaunchConfig& cfg);
bool runs_with_python(const LaunchConfig& cfg);
// The file-content part of that rule: an existing regular file that is neither an ELF binary
// nor an executable #! script.
bool file_needs_python(const std::string& program);

// torchrun's macro substitution (Python string.Template.safe_substitute): "${local_rank}" and
// "$local_rank" become the local rank, "$$" becomes "$", everything else is left alone.
std::string substitute_local_rank(const std::string& arg, int local_rank);

// The variables plan_workers() sets or may set on top of the inherited environment, in display
// order (the device-visibility variables are listed because they decide what a worker sees).
const std::vector<std::string>& worker_env_keys();

// torchrun's OMP_NUM_THREADS warning, printed once when gpurun sets OMP_NUM_THREADS=1.
extern const char* const kOmpWarning;

// format_rank_list ("2,3" / "4-7" / "0,2-5") is gpurun_common's (gpurun/common/int_ranges.h).
using gpurun::format_rank_list;

}  // namespace gpurun::launcher
