// Internals of run.cc and node_job.cc shared with their tests and the multi-node agents: the log
// tree, how a worker's streams are wired, and one node's part of a job.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "cli/config.h"
#include "output/output_mux.h"
#include "process/process_runner.h"
#include "process/supervisor.h"
#include "run/run.h"

namespace gpurun::launcher {

// One line on stderr in one write (a newline added when missing); EINTR retried, other errors
// dropped (there is nowhere left to report them).
void write_stderr(const std::string& text);

// A note found while resolving or planning: torchrun's OMP banner verbatim, "info: ..." as
// "gpurun: ...", anything else as "gpurun: warning: ...".
void print_note(const std::string& note);

// CPUs this host runs threads on (at least 1), for --nproc-per-node cpu/auto.
int cpu_count();

// torchrun's log tree: <log_dir or $TMPDIR/gpurun_XXXXXX>/<run_id>_<random8>/attempt_<k>/<lr>/.
// --log-dir /dev/null: no tree (no error files either). A temporary base that ends up holding
// no file is removed by finish().
class LogTree {
 public:
  static LogTree create(const LaunchConfig& cfg, const std::string& run_id, const EnvMap& env);
  // (Re)creates attempt_<k>/<0..nproc-1>/ and returns the attempt dir ("" without a tree).
  std::string begin_attempt(int restart_count, int nproc);
  void finish();
  const std::string& run_dir() const { return run_dir_; }
  // The mkdtemp base (/tmp/gpurun_*) when no --log-dir was given, else "".
  const std::string& temp_base() const { return temp_base_; }

 private:
  std::string run_dir_;
  std::string temp_base_;
  std::vector<std::pair<std::string, int>> attempts_;  // (attempt dir, nproc)
};

// A worker's stdout/stderr wiring from its spec: tee (pipe + file), redirect (file), console
// (pipe when `pipe_console`, else inherited), or off-console (/dev/null; stderr still piped for
// the failure summary). Fills what the OutputMux needs for this rank.
std::pair<StreamSetup, StreamSetup> wire_streams(const WorkerSpec& w, bool pipe_console,
                                                 RankOutput* mux_out);

// One node's facts in a (possibly multi-node) job.
struct NodeFacts {
  int group_rank = 0;
  int group_world_size = 1;
  int base_global_rank = 0;
  int world_size = 0;           // 0 = this node's nproc
  bool external_store = false;  // the store runs elsewhere (node 0); connect to master_*
  std::string master_addr;
  std::uint16_t master_port = 0;
  std::string bind_host;  // where node 0 binds its store ("" = master_addr)

  // ---- the elastic agent (run_elastic.cc) ----
  int restart_count = 0;  // TORCHELASTIC_RESTART_COUNT of this round (the job-wide count)
  // false: a later round of the same agent; the one-time notes (OMP banner, warnings) were
  // printed by its first round and are not repeated.
  bool print_notes = true;
  // Set: polled while workers run (see SupervisorOptions); restarts are then the caller's (the
  // supervisor's own --max-restarts is not used).
  std::function<bool()> stop_requested;
  SupervisorResult* result_out = nullptr;  // where the supervisor's result goes, if set
  std::string* summary_out = nullptr;      // the failure summary goes here instead of stderr
};

// What a node's job takes from its caller: the GPUs, probed once by run() (the multi-node agents
// need nproc before the rendezvous), and how to start processes.
struct NodeTools {
  const GpuInventory& gpus;
  ProcessRunnerFactory make_runner;
};

// One node's job, in phases (node_job.cc): bind the store (unless node.external_store) -> plan
// each attempt (log tree, worker env, streams) -> spawn -> supervise (restarts, signals,
// timeouts) -> summarize (failure report, --summary-json, the exit code). A store that cannot be
// bound is exit 3 with bind_error.h's message (and --summary-json).
int run_node(const LaunchConfig& cfg, const EnvMap& env, const NodeFacts& node,
             const NodeTools& tools);
// --dry-run: this node's plan, printed (nothing bound, nothing started). Returns 0.
int dry_run_node(const LaunchConfig& cfg, const EnvMap& env, const NodeFacts& node,
                 const GpuInventory& gpus);
int run_multinode(const LaunchConfig& cfg, const EnvMap& env, const NodeTools& tools);
int run_elastic(const LaunchConfig& cfg, const EnvMap& env, const NodeTools& tools);

}  // namespace gpurun::launcher
