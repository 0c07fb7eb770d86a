// run(): what one gpurun does with a job, given its GPUs (probed once, here) and how to start
// processes (main passes the POSIX runner, tests a fake):
//   - one node: run_node (node_job.cc), the job's phases: bind the store FIRST, plan, spawn,
//     supervise, summarize;
//   - several nodes: the static agent (multinode/run_multinode.cc) or the elastic one
//     (multinode/run_elastic.cc), which call run_node for this node's part;
//   - --dry-run: this node's plan, printed from the plan itself (nothing bound or started).
// Also here: the log tree (torchrun's layout) and how a worker's streams are wired.
#include "run/run.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "cli/config.h"
#include "gpurun/common/error.h"
#include "gpurun/common/io.h"
#include "gpurun/common/net.h"
#include "gpurun/rendezvous/job_access.h"
#include "probe/numa.h"
#include "run/run_internal.h"
#include "run/worker_env.h"

namespace gpurun::launcher {

namespace fs = std::filesystem;

void write_stderr(const std::string& text) {
  std::string t = text;
  if (t.empty() || t.back() != '\n') t += '\n';
  write_all(STDERR_FILENO, t);
}

void print_note(const std::string& note) {
  if (!note.empty() && note[0] == '*') {
    write_stderr(note);  // torchrun's OMP banner, verbatim (people grep it)
  } else if (note.rfind("info: ", 0) == 0) {
    write_stderr("gpurun: " + note.substr(6));  // what gpurun inferred (e.g. from Slurm)
  } else {
    write_stderr("gpurun: warning: " + note);
  }
}

namespace {

std::string random_suffix(std::size_t n) {
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789_";
  std::random_device rd;
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += kChars[rd() % (sizeof(kChars) - 1)];
  return s;
}

}  // namespace

// ---- log tree ----

LogTree LogTree::create(const LaunchConfig& cfg, const std::string& run_id, const EnvMap& env) {
  LogTree t;
  if (cfg.log_dir && *cfg.log_dir == "/dev/null") return t;  // torchrun: no files at all
  std::string base;
  if (cfg.log_dir) {
    base = *cfg.log_dir;
    std::error_code ec;
    fs::create_directories(base, ec);
    if (ec) {
      throw ConfigError(fmt::format("cannot create --log-dir '{}' ({}); pick a writable directory",
                                    base, ec.message()));
    }
  } else {
    std::string tmpl =
        env_get(env, "TMPDIR").value_or("/tmp") + "/gpurun_XXXXXX";  // torchrun: torchelastic_
    if (::mkdtemp(tmpl.data()) == nullptr) {
      throw ConfigError(
          fmt::format("cannot create a temporary log directory '{}' ({}); set "
                      "TMPDIR or pass --log-dir",
                      tmpl, std::strerror(errno)));
    }
    base = tmpl;
    t.temp_base_ = base;
  }
  // <base>/<run_id>_<random8>, created once per gpurun run (torchrun: mkdtemp(prefix=run_id_)).
  for (int tries = 0; tries < 100; ++tries) {
    std::string dir = fmt::format("{}/{}_{}", base, run_id, random_suffix(8));
    if (::mkdir(dir.c_str(), 0755) == 0) {
      t.run_dir_ = dir;
      return t;
    }
    if (errno != EEXIST) {
      throw ConfigError(fmt::format("cannot create log directory '{}' ({}); check --log-dir", dir,
                                    std::strerror(errno)));
    }
  }
  throw ConfigError("cannot create a unique log directory under " + base);
}

std::string LogTree::begin_attempt(int restart_count, int nproc) {
  if (run_dir_.empty()) return "";
  const std::string attempt = fmt::format("{}/attempt_{}", run_dir_, restart_count);
  std::error_code ec;
  fs::remove_all(attempt, ec);  // recreated at each attempt, as torchrun
  for (int lr = 0; lr < nproc; ++lr) {
    fs::create_directories(fmt::format("{}/{}", attempt, lr), ec);
    if (ec) {
      throw ConfigError(fmt::format("cannot create log directory '{}/{}' ({}); check --log-dir",
                                    attempt, lr, ec.message()));
    }
  }
  attempts_.emplace_back(attempt, nproc);
  return attempt;
}

void LogTree::finish() {
  // A temporary base that holds no file (no -r/-t, no error.json) leaves nothing behind:
  // rmdir bottom-up (N+3 syscalls); a directory holding a file stops it, and is kept.
  if (temp_base_.empty()) return;
  bool empty = true;
  for (const auto& [attempt, nproc] : attempts_) {
    for (int lr = 0; lr < nproc; ++lr) {
      empty = ::rmdir(fmt::format("{}/{}", attempt, lr).c_str()) == 0 && empty;
    }
    empty = ::rmdir(attempt.c_str()) == 0 && empty;
  }
  if (empty && ::rmdir(run_dir_.c_str()) == 0) ::rmdir(temp_base_.c_str());
}

// ---- stream wiring ----

std::pair<StreamSetup, StreamSetup> wire_streams(const WorkerSpec& w, bool pipe_console,
                                                 RankOutput* mux_out) {
  auto one = [&](const std::string& path, bool console, bool is_stderr, std::string* tee) {
    StreamSetup s;
    if (!path.empty() && console) {
      s.mode = StreamMode::kPipe;  // tee: gpurun copies to the file and the console
      *tee = path;
    } else if (!path.empty()) {
      s.mode = StreamMode::kFile;  // -r without -t: the child writes the file itself
      s.path = path;
    } else if (console) {
      s.mode = pipe_console ? StreamMode::kPipe : StreamMode::kInherit;
    } else {
      // Outside --local-ranks-filter: torchrun sends it to /dev/null. gpurun still reads stderr
      // (never shown) so the failure summary can quote it.
      s.mode = is_stderr ? StreamMode::kPipe : StreamMode::kNull;
    }
    return s;
  };
  RankOutput r;
  r.local_rank = w.local_rank;
  r.rank = w.rank;
  r.console_stdout = w.console_stdout;
  r.console_stderr = w.console_stderr;
  auto out = one(w.stdout_path, w.console_stdout, false, &r.tee_stdout_path);
  auto err = one(w.stderr_path, w.console_stderr, true, &r.tee_stderr_path);
  if (mux_out) *mux_out = r;
  return {out, err};
}

// ---- the run ----

int dry_run_node(const LaunchConfig& cfg, const EnvMap& env, const NodeFacts& node,
                 const GpuInventory& gpus) {
  for (const auto& n : cfg.notes) print_note(n);
  const int nproc = resolve_nproc(cfg, gpus, cpu_count());
  if (nproc < 1) throw ConfigError("--nproc-per-node must be at least 1");
  AttemptFacts facts;
  facts.run_id = cfg.rdzv_id;
  facts.master_addr = cfg.master_addr;
  facts.master_port = cfg.master_port.value_or(0);
  facts.attempt_log_dir = cfg.log_dir && *cfg.log_dir != "/dev/null"
                              ? fmt::format("{}/{}_XXXXXXXX/attempt_0", *cfg.log_dir, cfg.rdzv_id)
                              : "";
  facts.group_rank = node.group_rank;
  facts.group_world_size = node.group_world_size;
  facts.base_global_rank = node.group_rank * nproc;
  facts.world_size = nproc * node.group_world_size;
  std::vector<std::string> notes;
  auto workers = plan_workers(cfg, nproc, gpus, facts, env, &notes);
  apply_numa_binding(cfg, gpus, env, workers, &notes);
  for (const auto& n : notes) print_note(n);
  // Who may use the store, for the node that hosts it (node 0 of a static job, or one node).
  const std::string access =
      node.external_store || node.group_rank != 0
          ? ""
          : rendezvous::describe_job_access(env, cfg.rdzv_allow, node.group_world_size <= 1,
                                            is_loopback_name(cfg.master_addr));
  std::fputs(format_plan(cfg, facts, workers, gpus, access).c_str(), stdout);
  std::fflush(stdout);
  return 0;
}

int cpu_count() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

int run(const LaunchConfig& cfg, const EnvMap& env, GpuProbe& probe,
        const ProcessRunnerFactory& make_runner) {
  // Cheap (NVML is dlopen'ed, a missing driver is "0 GPUs") and done once: the multi-node agents
  // need nproc before the rendezvous, and their run_node uses the same inventory.
  const GpuInventory gpus = probe.probe(env);
  const NodeTools tools{gpus, make_runner};
  if (cfg.nnodes_max > 1 && cfg.action == Action::kDryRun) {
    // A multi-node dry run never touches the network (no store, no rendezvous): this node's plan
    // from what it knows, ranks as if every node ran as many workers as this one.
    NodeFacts node;
    node.group_world_size = cfg.nnodes_max;
    if (cfg.rdzv_backend != "static") {
      print_note(
          fmt::format("info: dry run: the group rank and the global ranks are assigned at "
                      "rendezvous on {} (shown for group rank 0 of {} nodes)",
                      cfg.rdzv_endpoint, cfg.nnodes_max));
    } else {
      node.group_rank = cfg.node_rank;
      print_note(
          fmt::format("info: dry run: node rank {} of {}; the global ranks assume every "
                      "node runs as many workers as this one (the real ranges come from "
                      "every node's count at rendezvous on {}:{})",
                      cfg.node_rank, cfg.nnodes_max, cfg.master_addr, cfg.master_port.value_or(0)));
    }
    return dry_run_node(cfg, env, node, gpus);
  }
  if (cfg.action == Action::kDryRun) return dry_run_node(cfg, env, NodeFacts{}, gpus);
  if (cfg.nnodes_max > 1) {
    return cfg.rdzv_backend == "static" ? run_multinode(cfg, env, tools)
                                        : run_elastic(cfg, env, tools);
  }
  return run_node(cfg, env, NodeFacts{}, tools);
}

}  // namespace gpurun::launcher
