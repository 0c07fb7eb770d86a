// Rank-aware console helpers: rank-0-only printing, a TTY-aware progress bar with throughput and
// ETA (plain periodic lines when stdout is not a terminal), and run_main, which records an
// uncaught exception in TORCHELASTIC_ERROR_FILE (torchrun's JSON layout) so gpurun's failure
// summary can show it.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "gpurun/worker/worker.h"

namespace gpurun::worker {

// Prints on rank 0 only (one write per line, flushed).
void print_root(const Context& ctx, std::string_view text);
template <typename... Args>
void log0(const Context& ctx, fmt::format_string<Args...> f, Args&&... args) {
  if (ctx.rank() == 0) print_root(ctx, fmt::format(f, std::forward<Args>(args)...));
}

// A progress bar shown on rank 0 only; other ranks' instances are silent no-ops.
class ProgressBar {
 public:
  ProgressBar(const Context& ctx, std::string label, std::uint64_t total, std::string unit = "it");
  ~ProgressBar();  // finishes the line if not done
  // Advances by n units; `postfix` (e.g. "loss=0.31") is shown after the rate.
  void update(std::uint64_t n = 1, std::string_view postfix = {});
  void finish(std::string_view postfix = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Writes the torchrun error-file JSON for `message` to $TORCHELASTIC_ERROR_FILE, if set.
void write_error_file(std::string_view message, std::string_view traceback = {});

// Runs body(); on an uncaught exception prints "[host rank r/N] error: <what>" to stderr, writes
// the error file and returns 1. Returns body()'s result otherwise.
int run_main(const std::function<int()>& body);

}  // namespace gpurun::worker
