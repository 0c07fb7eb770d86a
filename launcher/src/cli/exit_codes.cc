#include "cli/exit_codes.h"

#include <fmt/format.h>

#include <array>

namespace gpurun::launcher {
namespace {

constexpr std::array<ExitCodeDoc, 10> kTable{{
    {"0", "every worker succeeded"},
    {"N", "the first failing worker's own exit code (torchrun collapses this to 1)"},
    {"128+S", "the first failing worker was killed by signal S (SIGSEGV → 139, SIGKILL/OOM → 137)"},
    {"127", "a worker could not be executed (path, permissions)"},
    {"1", "gpurun could not create a worker (fork/pipe/log file) or an internal error"},
    {"2", "bad command line, flags or environment"},
    {"3",
     "the rendezvous store could not be set up (e.g. `--master-port` busy), or a node rendezvous "
     "timed out"},
    {"4", "`--nproc-per-node gpu` and no GPU visible"},
    {"124", "`--timeout` expired"},
    {"128+S",
     "gpurun itself was stopped by signal S and stopped the workers (Ctrl-C → 130, SIGTERM → 143)"},
}};

}  // namespace

std::span<const ExitCodeDoc> exit_code_table() { return kTable; }

std::string exit_codes_help() {
  std::string out;
  for (const auto& e : kTable) {
    std::string meaning;
    for (const char* p = e.meaning; *p != '\0'; ++p) {
      if (*p != '`') meaning += *p;
    }
    // Wrapped at 100 columns, continuation lines under the meaning.
    std::string line = fmt::format("  {:<6}", e.code);
    const std::size_t indent = line.size();
    std::size_t pos = 0;
    while (pos < meaning.size()) {
      std::size_t end = meaning.find(' ', pos);
      if (end == std::string::npos) end = meaning.size();
      const std::string word = meaning.substr(pos, end - pos);
      if (line.size() > indent && line.size() + 1 + word.size() > 100) {
        out += line + "\n";
        line = std::string(indent, ' ');
      }
      line += " " + word;
      pos = end + 1;
    }
    out += line + "\n";
  }
  return out;
}

}  // namespace gpurun::launcher
