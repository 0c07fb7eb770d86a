// OutputMux: what gpurun does with worker output that goes through it (pipes). Splits each
// (rank, stream) into whole lines so lines of different ranks never interleave mid-line, prefixes
// them ("[rank 3] ", torchrun's "[default3]:" on tee'd streams, or
// TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE), colours gpurun's own prefix on a TTY,
// copies the raw bytes to tee files, and keeps the last lines of every rank in a ring buffer for
// the failure summary. It does not decide which streams are piped (run.cc) and never blocks
// the supervisor except on a console that does not drain.
#pragma once

#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "gpurun/common/unique_fd.h"
#include "process/supervisor.h"

namespace gpurun::launcher {

struct OutputOptions {
  bool tag = true;               // prefix console lines
  bool color = false;            // colour the prefix (resolved from --color and isatty)
  std::string prefix_template;   // TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE; "" = "[rank ${rank}] "
  std::string role = "default";  // ${role_name}
  std::string host;              // non-empty (multi-node): "[host rank N] "
  int stdout_fd = 1;
  int stderr_fd = 2;
  std::size_t ring_lines = 10;              // last lines kept per rank and stream
  std::size_t max_line_bytes = 65536;       // a longer line without '\n' is emitted in pieces
  std::vector<std::string> stdout_filters;  // --duplicate-stdout-filters
  std::vector<std::string> stderr_filters;  // --duplicate-stderr-filters
};

// One rank's wiring for an attempt, as far as the mux is concerned.
struct RankOutput {
  int local_rank = 0;
  int rank = 0;
  bool console_stdout = true;
  bool console_stderr = true;
  std::string tee_stdout_path;  // non-empty: the mux appends the raw bytes there
  std::string tee_stderr_path;
};

class OutputMux final : public OutputSink {
 public:
  explicit OutputMux(OutputOptions options);
  ~OutputMux() override;

  // A new attempt: flushes what is left of the previous one, opens tee files (O_APPEND), resets
  // line buffers and ring buffers. Throws SpawnError when a tee file cannot be opened.
  // filtered_*_path (non-empty with OutputOptions::*_filters): the attempt's filtered file, where
  // tee'd lines that contain a filter go, prefixed as on the console, every rank together.
  void begin_attempt(const std::vector<RankOutput>& ranks,
                     const std::string& filtered_stdout_path = "",
                     const std::string& filtered_stderr_path = "");

  void on_output(int local_rank, Stream stream, std::string_view data) override;
  void on_closed(int local_rank, Stream stream) override;
  void on_exit(int local_rank) override;

  // Emits partial last lines (with a '\n' added) of every rank. Idempotent.
  void flush_all();

  // The last lines (without '\n') this rank wrote on `stream` in this attempt.
  std::vector<std::string> last_lines(int local_rank, Stream stream) const;

  // The console prefix for a rank, without colour: TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE when
  // set; else torchrun's "[<role><local_rank>]:" for a tee'd stream (-t, as torchrun prints
  // it), gpurun's "[rank 3] " ("[host rank 3] " multi-node) otherwise. Public for tests.
  std::string prefix_for(int local_rank, int rank, bool teed = false) const;

 private:
  struct Channel {
    std::string partial;
    std::deque<std::string> ring;
    UniqueFd tee;
    bool console = true;
    std::string prefix;        // coloured when enabled
    std::string plain_prefix;  // for the filtered files
  };
  struct Rank {
    RankOutput info;
    Channel out, err;
  };

  Channel& channel(Rank& r, Stream s) { return s == Stream::kStdout ? r.out : r.err; }
  void emit_lines(Rank& r, Stream s, bool flush_partial);
  void remember(Channel& c, std::string_view line);
  void write_console(Stream s, std::string_view text);

  OutputOptions options_;
  std::map<int, Rank> ranks_;
  UniqueFd filtered_out_, filtered_err_;  // this attempt's filtered_{stdout,stderr}.log
  bool stdout_broken_ = false;
  bool stderr_broken_ = false;
};

// The last `n` lines of a text file (for streams redirected straight to a file). Empty when the
// file cannot be read. Reads at most the last 64 KiB.
std::vector<std::string> tail_file(const std::string& path, std::size_t n);

}  // namespace gpurun::launcher
