// resolve_nproc() and plan_workers(): config + GPUs + attempt facts -> one WorkerSpec per local
// rank (argv, the complete environment, GPU, log paths, console flags), and the worker command
// they start (base_command: python -u / -m / --no-python / --run-path, ${local_rank}). Pure
// functions: no environment reads, and no filesystem but the first bytes of PROGRAM that
// file_needs_python() reads, so every rule here is unit-tested with plain values.
#include "run/worker_env.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "cli/config.h"
#include "gpurun/common/unique_fd.h"
#include "gpurun/common/worker_env_contract.h"

namespace gpurun::launcher {

const char* const kOmpWarning =
    "*****************************************\n"
    "Setting OMP_NUM_THREADS environment variable for each process to be 1 in default, to avoid "
    "your system being overloaded, please further tune the variable for optimal performance in "
    "your application as needed. \n"
    "*****************************************";

const std::vector<std::string>& worker_env_keys() {
  static const std::vector<std::string> kKeys(worker_env::kWorkerEnvVars.begin(),
                                              worker_env::kWorkerEnvVars.end());
  return kKeys;
}

bool file_needs_python(const std::string& program) {
  // The file Python would open: the path as given, relative to the working directory.
  UniqueFd fd(::open(program.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd) return false;  // not here: a command in PATH, or missing (exec will say which)
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  char head[4] = {};
  const ssize_t n = ::read(fd.get(), head, sizeof head);
  if (n == 4 && std::memcmp(head,
                            "\x7f"
                            "ELF",
                            4) == 0)
    return false;  // a native binary
  const bool shebang = n >= 2 && head[0] == '#' && head[1] == '!';
  return !(shebang && ::access(program.c_str(), X_OK) == 0);  // an executable script runs as is
}

bool runs_with_python(const LaunchConfig& cfg) {
  if (cfg.run_path) return true;
  if (cfg.no_python) return false;
  if (cfg.module) return true;
  const std::string& p = cfg.program;
  if (p.size() >= 3 && p.compare(p.size() - 3, 3, ".py") == 0) return true;
  return file_needs_python(p);
}

std::vector<std::string> base_command(const LaunchConfig& cfg) {
  std::vector<std::string> cmd;
  if (runs_with_python(cfg)) {
    cmd.push_back(cfg.python);
    cmd.push_back("-u");
    if (cfg.module) cmd.push_back("-m");
  }
  cmd.push_back(cfg.program);
  cmd.insert(cmd.end(), cfg.program_args.begin(), cfg.program_args.end());
  return cmd;
}

std::string substitute_local_rank(const std::string& arg, int local_rank) {
  // string.Template's pattern (case-insensitive identifiers): $$ | $identifier | ${identifier};
  // safe_substitute leaves unknown names and a lone '$' as they are.
  auto is_start = [](char c) { return c == '_' || std::isalpha(static_cast<unsigned char>(c)); };
  auto is_cont = [](char c) { return c == '_' || std::isalnum(static_cast<unsigned char>(c)); };
  const std::string value = std::to_string(local_rank);
  std::string out;
  out.reserve(arg.size());
  std::size_t i = 0;
  while (i < arg.size()) {
    if (arg[i] != '$' || i + 1 >= arg.size()) {
      out += arg[i++];
      continue;
    }
    char next = arg[i + 1];
    if (next == '$') {
      out += '$';
      i += 2;
    } else if (is_start(next)) {
      std::size_t j = i + 1;
      while (j < arg.size() && is_cont(arg[j])) ++j;
      std::string name = arg.substr(i + 1, j - i - 1);
      out += name == "local_rank" ? value : arg.substr(i, j - i);
      i = j;
    } else if (next == '{') {
      auto close = arg.find('}', i + 2);
      std::string name = close == std::string::npos ? "" : arg.substr(i + 2, close - i - 2);
      bool ident =
          !name.empty() && is_start(name[0]) && std::all_of(name.begin(), name.end(), is_cont);
      if (ident) {
        out += name == "local_rank" ? value : arg.substr(i, close - i + 1);
        i = close + 1;
      } else {
        out += arg[i++];
      }
    } else {
      out += arg[i++];
    }
  }
  return out;
}

int resolve_nproc(const LaunchConfig& cfg, const GpuInventory& gpus, int cpu_count) {
  const int n_gpus = static_cast<int>(gpus.gpus.size());
  const int n_cpus = std::max(1, cpu_count);
  switch (cfg.nproc_kind) {
    case NprocKind::kNumber:
      return cfg.nproc_per_node;
    case NprocKind::kCpu:
      return n_cpus;
    case NprocKind::kAuto:
      return n_gpus > 0 ? n_gpus : n_cpus;
    case NprocKind::kGpu:
      if (n_gpus == 0) {
        std::string why = gpus.notes.empty() ? "no NVIDIA or AMD GPU found" : gpus.notes.front();
        for (std::size_t i = 1; i < gpus.notes.size(); ++i) why += "; " + gpus.notes[i];
        throw NoGpuError(fmt::format(
            "--nproc-per-node gpu found no GPU ({}); check the driver and CUDA_VISIBLE_DEVICES "
            "with `gpurun info`, or pass a number (--nproc-per-node 2) or cpu",
            why));
      }
      return n_gpus;
  }
  return cfg.nproc_per_node;
}

std::vector<WorkerSpec> plan_workers(const LaunchConfig& cfg, int nproc, const GpuInventory& gpus,
                                     const AttemptFacts& facts, const EnvMap& base_env,
                                     std::vector<std::string>* notes) {
  const int n_gpus = static_cast<int>(gpus.gpus.size());
  const int world_size = facts.world_size > 0 ? facts.world_size : nproc * facts.group_world_size;
  const bool narrow = cfg.narrow_visible_devices || cfg.virtual_local_rank;
  const std::vector<std::string> command = base_command(cfg);

  auto note = [&](std::string text) {
    if (notes) notes->push_back(std::move(text));
  };

  const bool set_omp = nproc > 1 && base_env.find(worker_env::kOmpNumThreads) == base_env.end();
  if (set_omp) note(kOmpWarning);

  if (n_gpus > 0 && nproc > n_gpus) {
    std::vector<int> without;
    for (int lr = n_gpus; lr < nproc; ++lr) without.push_back(facts.base_global_rank + lr);
    note(fmt::format(
        "{} {} will have no GPU and may fall back to CPU ({} workers, {} GPU{} visible via {})",
        without.size() == 1 ? "rank" : "ranks", format_rank_list(without), nproc, n_gpus,
        n_gpus == 1 ? "" : "s", gpus.source));
  }

  // Env vars torchrun passes through when set and defaults otherwise.
  auto inherited_or = [&](const char* key, const char* fallback) {
    auto it = base_env.find(key);
    return it != base_env.end() ? it->second : std::string(fallback);
  };

  std::vector<WorkerSpec> workers;
  workers.reserve(static_cast<std::size_t>(std::max(nproc, 0)));
  for (int lr = 0; lr < nproc; ++lr) {
    WorkerSpec w;
    w.local_rank = lr;
    w.rank = facts.base_global_rank + lr;
    if (lr < n_gpus) w.gpu = lr;

    w.argv.reserve(command.size());
    for (std::size_t k = 0; k < command.size(); ++k) {
      // torchrun substitutes in the args, never in the executable itself.
      w.argv.push_back(k == 0 ? command[k] : substitute_local_rank(command[k], lr));
    }

    EnvMap& env = w.env;
    env = base_env;
    auto set = [&](const char* key, std::string value) { env[key] = std::move(value); };
    set(worker_env::kRank, std::to_string(w.rank));
    set(worker_env::kLocalRank, std::to_string(cfg.virtual_local_rank ? 0 : lr));
    set(worker_env::kWorldSize, std::to_string(world_size));
    set(worker_env::kLocalWorldSize, std::to_string(nproc));
    set(worker_env::kGroupRank, std::to_string(facts.group_rank));
    set(worker_env::kGroupWorldSize, std::to_string(facts.group_world_size));
    set(worker_env::kRoleRank,
        std::to_string(w.rank));  // one role per job: role rank = global rank
    set(worker_env::kRoleName, cfg.role);
    set(worker_env::kRoleWorldSize, std::to_string(world_size));
    set(worker_env::kMasterAddr, facts.master_addr);
    set(worker_env::kMasterPort, std::to_string(facts.master_port));
    set(worker_env::kRunId, facts.run_id);
    set(worker_env::kRestartCount, std::to_string(facts.restart_count));
    set(worker_env::kMaxRestarts, std::to_string(cfg.max_restarts));
    set(worker_env::kErrorFile, facts.attempt_log_dir.empty()
                                    ? std::string()
                                    : fmt::format("{}/{}/error.json", facts.attempt_log_dir, lr));
    set(worker_env::kUseAgentStore, "True");
    // 2.x name and the pre-2.2 name (1.13 reads the latter); each passed through if set.
    set(worker_env::kTorchNcclAsyncErrorHandling,
        inherited_or(worker_env::kTorchNcclAsyncErrorHandling, "1"));
    set(worker_env::kNcclAsyncErrorHandling,
        inherited_or(worker_env::kNcclAsyncErrorHandling, "1"));
    if (set_omp) set(worker_env::kOmpNumThreads, "1");
    // Not torchrun's, deliberately ours: gpurun reads worker output through pipes (for the
    // [rank N] prefix and tee), where a Python started indirectly (a shell wrapper, --no-python
    // python3 x.py, a subprocess) would block-buffer and lose its last lines on a crash. A value
    // the user set is kept; native programs ignore it.
    set(worker_env::kPythonUnbuffered, inherited_or(worker_env::kPythonUnbuffered, "1"));

    // Devices. Default (torchrun): *_VISIBLE_DEVICES inherited unchanged; the worker uses GPU
    // LOCAL_RANK. Narrowed: the worker sees only its own GPU (as index 0), or none at all.
    std::optional<int> gpu_in_worker = w.gpu;
    if (narrow) {
      const bool amd = n_gpus > 0 && gpus.gpus.front().vendor == "amd";
      std::string visible = w.gpu ? gpus.gpus[static_cast<std::size_t>(*w.gpu)].id : "";
      if (amd) {
        // The ids are ROCR-level (physical) ids; HIP/CUDA_VISIBLE_DEVICES would re-filter them.
        set(worker_env::kRocrVisibleDevices, visible);
        env.erase(worker_env::kHipVisibleDevices);
        env.erase(worker_env::kCudaVisibleDevices);
      } else {
        set(worker_env::kCudaVisibleDevices, visible);
      }
      if (w.gpu) gpu_in_worker = 0;
    }
    set(worker_env::kLauncher, "gpurun");
    set(worker_env::kGpu, gpu_in_worker ? std::to_string(*gpu_in_worker) : std::string());
    set(worker_env::kGpuId, w.gpu ? gpus.gpus[static_cast<std::size_t>(*w.gpu)].id : std::string());
    set(worker_env::kNumGpusVisible, std::to_string(n_gpus));

    // Logs (torchrun's layout) and console (torchrun's redirect/tee/filter rules).
    const int redirect = cfg.redirects.for_rank(lr);
    const int tee = cfg.tee.for_rank(lr);
    const int to_file = redirect | tee;  // tee implies a redirect
    if (!facts.attempt_log_dir.empty()) {
      if (to_file & kStdOut)
        w.stdout_path = fmt::format("{}/{}/stdout.log", facts.attempt_log_dir, lr);
      if (to_file & kStdErr)
        w.stderr_path = fmt::format("{}/{}/stderr.log", facts.attempt_log_dir, lr);
    }
    const bool in_filter = !cfg.local_ranks_filter || cfg.local_ranks_filter->count(lr) > 0;
    // A redirected stream reaches the console only when tee'd; a rank outside the filter reaches
    // it never (its un-redirected streams go to /dev/null, as torchrun).
    w.console_stdout = in_filter && (!(redirect & kStdOut) || (tee & kStdOut));
    w.console_stderr = in_filter && (!(redirect & kStdErr) || (tee & kStdErr));
    workers.push_back(std::move(w));
  }
  return workers;
}

}  // namespace gpurun::launcher
