// gpurun's exit codes, documented once: `gpurun --help` prints this table, and a unit test checks
// that the README's table says the same (exit_codes_test.cc). The codes themselves are
// gpurun::ExitCode (gpurun/common/error.h); a worker's own code passes through.
#pragma once

#include <span>
#include <string>

namespace gpurun::launcher {

struct ExitCodeDoc {
  const char* code;     // "0", "N", "128+S", "127", ...
  const char* meaning;  // one line, Markdown (backticks) as in the README
};

std::span<const ExitCodeDoc> exit_code_table();

// The table as --help prints it ("  127    a worker could not be executed ..."), backticks dropped.
std::string exit_codes_help();

}  // namespace gpurun::launcher
