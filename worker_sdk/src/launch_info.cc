// read_launch_info: the rank/world facts from gpurun/torchrun variables, else mpirun's
// OMPI_COMM_WORLD_*, else srun's SLURM_*, else a 1-rank job. Pure apart from gethostname().
#include <fmt/format.h>
#include <unistd.h>

#include <array>

#include "gpurun/common/env.h"
#include "gpurun/common/error.h"
#include "gpurun/common/net.h"
#include "gpurun/common/slurm.h"
#include "gpurun/common/worker_env_contract.h"
#include "gpurun/worker/worker.h"

namespace gpurun::worker {
namespace {

constexpr const char* kHowGpurun =
    "launch with `gpurun --nproc-per-node=N prog` (or torchrun), which sets RANK, LOCAL_RANK, "
    "WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT";

std::string host_name() {
  std::array<char, 256> buf{};
  if (::gethostname(buf.data(), buf.size() - 1) != 0) return "localhost";
  return std::string(buf.data());
}

int read_int(const EnvMap& env, std::string_view key, std::string_view how) {
  auto v = env_get(env, key);
  if (!v) {
    throw ConfigError(fmt::format("environment variable {} is not set; {}", key, how));
  }
  long long x = 0;
  try {
    x = parse_int(*v, fmt::format("environment variable {}", key));
  } catch (const ConfigError&) {
    throw ConfigError(
        fmt::format("{}='{}' is not an integer (expected a whole number); {}", key, *v, how));
  }
  if (x < 0 || x > 1'000'000'000) {
    throw ConfigError(fmt::format("{}={} is out of range (expected 0..1e9); {}", key, x, how));
  }
  return static_cast<int>(x);
}

std::optional<int> read_opt_int(const EnvMap& env, std::string_view key, std::string_view how) {
  if (!env_get(env, key)) return std::nullopt;
  return read_int(env, key, how);
}

// SLURM_TASKS_PER_NODE is like "2(x3),1": tasks on node 0..2 = 2, node 3 = 1.
std::optional<int> slurm_tasks_on_node(const std::string& spec, int node) {
  int n = 0;
  for (const auto& part : split(spec, ',')) {
    if (part.empty()) return std::nullopt;
    int count = 0, rep = 1;
    auto paren = part.find('(');
    try {
      count = static_cast<int>(parse_int(part.substr(0, paren), "SLURM_TASKS_PER_NODE"));
      if (paren != std::string::npos) {
        auto x = part.find('x', paren);
        auto close = part.find(')', paren);
        if (x == std::string::npos || close == std::string::npos) return std::nullopt;
        rep =
            static_cast<int>(parse_int(part.substr(x + 1, close - x - 1), "SLURM_TASKS_PER_NODE"));
      }
    } catch (const ConfigError&) {
      return std::nullopt;
    }
    if (node < n + rep) return count;
    n += rep;
  }
  return std::nullopt;
}

// Where the ranks meet when the launcher gave no MASTER_ADDR (srun, mpirun on one host): rank 0
// hosts the store. Returns false when there is no such place (the caller then explains).
using SelfHost = bool (*)(const EnvMap& env, LaunchInfo& info, std::string_view how);

void read_port(const EnvMap& env, LaunchInfo& info, std::string_view how) {
  int p = read_int(env, worker_env::kMasterPort, how);
  if (p < 1 || p > 65535) {
    throw ConfigError(fmt::format("MASTER_PORT={} is not a TCP port (1..65535); {}", p, how));
  }
  info.master_port = static_cast<std::uint16_t>(p);
}

void read_master(const EnvMap& env, LaunchInfo& info, std::string_view how,
                 SelfHost self_host = nullptr) {
  auto addr = env_get(env, worker_env::kMasterAddr);
  auto port = env_get(env, worker_env::kMasterPort);
  if (info.world_size > 1 && (!addr || addr->empty()) && self_host != nullptr &&
      self_host(env, info, how)) {
    info.self_hosted_store = true;
    if (port) {
      read_port(env, info, how);
      info.master_origin += ", port from MASTER_PORT";
    }
    return;
  }
  if (info.world_size > 1 && (!addr || addr->empty() || !port)) {
    std::string_view missing =
        (!addr || addr->empty()) ? worker_env::kMasterAddr : worker_env::kMasterPort;
    throw ConfigError(
        fmt::format("{} is not set but WORLD_SIZE={} (the ranks need a store to meet at); {}",
                    missing, info.world_size, how));
  }
  if (addr) info.master_addr = *addr;
  if (port) read_port(env, info, how);
  info.master_origin = "MASTER_ADDR/MASTER_PORT";
}

// srun: the step's first node (rank 0 runs there) and a port derived from the job and step ids.
bool slurm_self_host(const EnvMap& env, LaunchInfo& info, std::string_view /*how*/) {
  auto h = slurm_step_host(env);
  if (!h) return false;
  info.master_addr = h->host;
  info.master_port = h->port;
  info.master_origin = fmt::format(
      "the first node of {} and a port derived from SLURM_JOB_ID={} and SLURM_STEP_ID={}", h->from,
      h->job_id, h->step_id);
  return true;
}

// mpirun: only when every rank runs on this host (no host list to pick from otherwise).
bool mpirun_self_host(const EnvMap& env, LaunchInfo& info, std::string_view /*how*/) {
  if (info.local_world_size != info.world_size) return false;
  const std::string job =
      env_get(env, "OMPI_MCA_ess_base_jobid").value_or(env_get(env, "PMIX_NAMESPACE").value_or(""));
  if (job.empty()) return false;
  // FNV-1a of the job id: the same on every rank, different for concurrent jobs (almost always;
  // a clash is a bind error on rank 0 that names MASTER_PORT as the fix).
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : job) h = (h ^ c) * 1099511628211ULL;
  info.master_addr = "127.0.0.1";
  info.master_port = static_cast<std::uint16_t>(kDerivedPortBase + h % kDerivedPortSpan);
  info.master_origin = fmt::format(
      "127.0.0.1 (every rank of this mpirun job is on this host) and a port derived from "
      "OMPI_MCA_ess_base_jobid={}",
      job);
  return true;
}

void validate(const LaunchInfo& info, std::string_view rank_var, std::string_view world_var,
              std::string_view local_rank_var, std::string_view local_world_var,
              std::string_view how) {
  if (info.world_size < 1) {
    throw ConfigError(
        fmt::format("{}={} (a job needs at least one rank); {}", world_var, info.world_size, how));
  }
  if (info.rank >= info.world_size) {
    throw ConfigError(fmt::format("{}={} but {}={}; {}, or set {} < {}", rank_var, info.rank,
                                  world_var, info.world_size, how, rank_var, world_var));
  }
  if (info.local_world_size < 1 || info.local_world_size > info.world_size) {
    throw ConfigError(fmt::format("{}={} but {}={} (expected 1..{}); {}", local_world_var,
                                  info.local_world_size, world_var, info.world_size,
                                  info.world_size, how));
  }
  if (info.local_rank >= info.local_world_size) {
    throw ConfigError(fmt::format("{}={} but {}={}; {}, or set {} < {}", local_rank_var,
                                  info.local_rank, local_world_var, info.local_world_size, how,
                                  local_rank_var, local_world_var));
  }
}

void read_common(const EnvMap& env, LaunchInfo& info, std::string_view how) {
  info.restart_count = read_opt_int(env, worker_env::kRestartCount, how).value_or(0);
}

}  // namespace

LaunchInfo read_launch_info(const EnvMap& env) {
  LaunchInfo info;
  info.hostname = host_name();

  const bool torch_vars = env_get(env, worker_env::kRank) || env_get(env, worker_env::kWorldSize);
  if (torch_vars) {
    // gpurun / torchrun (or a hand-made environment).
    const bool by_gpurun = env_get(env, worker_env::kLauncher) || env_get(env, worker_env::kGpu);
    info.launcher = by_gpurun ? Launcher::kGpurun : Launcher::kTorchrun;
    std::string how = kHowGpurun;
    if (!env_get(env, worker_env::kRank)) {
      throw ConfigError(fmt::format("WORLD_SIZE={} is set but RANK is not; {}, or set RANK too",
                                    *env_get(env, worker_env::kWorldSize), how));
    }
    if (!env_get(env, worker_env::kWorldSize)) {
      throw ConfigError(
          fmt::format("RANK={} is set but WORLD_SIZE is not; {}, or set WORLD_SIZE too",
                      *env_get(env, worker_env::kRank), how));
    }
    info.rank = read_int(env, worker_env::kRank, how);
    info.world_size = read_int(env, worker_env::kWorldSize, how);
    auto lws = read_opt_int(env, worker_env::kLocalWorldSize, how);
    auto lr = read_opt_int(env, worker_env::kLocalRank, how);
    info.local_world_size = lws.value_or(info.world_size);
    info.local_rank = lr.value_or(info.rank % std::max(1, info.local_world_size));
    validate(info, worker_env::kRank, worker_env::kWorldSize, worker_env::kLocalRank,
             worker_env::kLocalWorldSize, how);
    read_master(env, info, how);
    read_common(env, info, how);
    info.run_id = env_get(env, worker_env::kRunId).value_or("none");
    return info;
  }

  if (env_get(env, "OMPI_COMM_WORLD_RANK")) {
    info.launcher = Launcher::kMpirun;
    std::string how =
        "under mpirun across hosts, start a store (`gpurun store --host 0.0.0.0 --port 29500`) "
        "and pass `mpirun -x MASTER_ADDR=<store host> -x MASTER_PORT=29500 ...` (on one host "
        "nothing is needed: rank 0 hosts the store)";
    info.rank = read_int(env, "OMPI_COMM_WORLD_RANK", how);
    info.world_size = read_int(env, "OMPI_COMM_WORLD_SIZE", how);
    info.local_rank = read_opt_int(env, "OMPI_COMM_WORLD_LOCAL_RANK", how).value_or(0);
    info.local_world_size = read_opt_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", how).value_or(1);
    validate(info, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
             "OMPI_COMM_WORLD_LOCAL_SIZE", how);
    read_master(env, info, how, mpirun_self_host);
    read_common(env, info, how);
    info.run_id =
        env_get(env, worker_env::kRunId)
            .value_or(env_get(env, "PMIX_NAMESPACE")
                          .value_or(env_get(env, "OMPI_MCA_ess_base_jobid").value_or("mpirun")));
    return info;
  }

  // srun sets SLURM_STEP_ID; an sbatch script's batch step has SLURM_PROCID=0 but is one process.
  if (in_srun_step(env)) {
    info.launcher = Launcher::kSrun;
    std::string how =
        "under srun, rank 0 hosts the store on the step's first node (SLURM_STEP_NODELIST); "
        "or start one (`gpurun store --host 0.0.0.0 --port 29500`) and export "
        "MASTER_ADDR=<store host> MASTER_PORT=29500 before `srun ...`";
    info.rank = read_int(env, "SLURM_PROCID", how);
    info.world_size = env_get(env, "SLURM_NTASKS") ? read_int(env, "SLURM_NTASKS", how)
                                                   : read_int(env, "SLURM_NPROCS", how);
    info.local_rank = read_opt_int(env, "SLURM_LOCALID", how).value_or(0);
    std::optional<int> lws;
    if (auto per = env_get(env, "SLURM_STEP_TASKS_PER_NODE"); per && !lws) {
      lws = slurm_tasks_on_node(*per, read_opt_int(env, "SLURM_NODEID", how).value_or(0));
    }
    if (!lws) {
      if (auto per = env_get(env, "SLURM_TASKS_PER_NODE")) {
        lws = slurm_tasks_on_node(*per, read_opt_int(env, "SLURM_NODEID", how).value_or(0));
      }
    }
    if (!lws) lws = read_opt_int(env, "SLURM_NTASKS_PER_NODE", how);
    if (!lws) {
      auto nodes = read_opt_int(env, "SLURM_NNODES", how).value_or(1);
      lws = nodes == 1 ? info.world_size : info.local_rank + 1;
    }
    info.local_world_size = std::min(*lws, info.world_size);
    validate(info, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE", how);
    read_master(env, info, how, slurm_self_host);
    read_common(env, info, how);
    auto job = env_get(env, "SLURM_JOB_ID").value_or(env_get(env, "SLURM_JOBID").value_or("slurm"));
    auto step = env_get(env, "SLURM_STEP_ID").value_or(env_get(env, "SLURM_STEPID").value_or("0"));
    info.run_id = env_get(env, worker_env::kRunId).value_or(job + "." + step);
    return info;
  }

  // Nothing: a 1-rank job. MASTER_ADDR/PORT are still honoured (a store to share with tools).
  info.launcher = Launcher::kNone;
  read_master(env, info, kHowGpurun);
  read_common(env, info, kHowGpurun);
  info.run_id = env_get(env, worker_env::kRunId).value_or("local");
  return info;
}

}  // namespace gpurun::worker
