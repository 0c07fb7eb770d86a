#include "cli/slurm_infer.h"

#include <fmt/format.h>

#include <vector>

#include "gpurun/common/error.h"
#include "gpurun/common/slurm.h"

namespace gpurun::launcher {
namespace {

std::optional<long long> int_of(const EnvMap& env, std::initializer_list<const char*> names,
                                std::string* from) {
  for (const char* n : names) {
    if (auto v = env_get(env, n); v && !v->empty()) {
      *from = n;
      return parse_int(*v, fmt::format("environment variable {}", n));
    }
  }
  return std::nullopt;
}

}  // namespace

void apply_slurm(LaunchConfig& cfg, const std::set<std::string>& given, const EnvMap& env) {
  if (!in_srun_step(env)) return;
  if (cfg.standalone || cfg.rdzv_backend != "static" || !cfg.rdzv_endpoint.empty()) return;
  std::string nodes_from, tasks_from, rank_from;
  const auto nodes =
      int_of(env, {"SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES"}, &nodes_from);
  const auto tasks =
      int_of(env, {"SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"}, &tasks_from);
  const auto node_id = int_of(env, {"SLURM_NODEID"}, &rank_from);
  if (!nodes || !node_id) return;
  if (tasks && *tasks > *nodes && !given.count("--nnodes")) {
    throw ConfigError(fmt::format(
        "srun started {} gpurun tasks on {} node{} ({}={}, {}={}); gpurun starts the workers of "
        "a node itself, so run one task per node: `srun --ntasks-per-node=1 gpurun "
        "--nproc-per-node=N ...` (or pass --nnodes/--node-rank to say what you mean)",
        *tasks, *nodes, *nodes == 1 ? "" : "s", tasks_from, *tasks, nodes_from, *nodes));
  }
  std::vector<std::string> took;
  if (!given.count("--nnodes")) {
    cfg.nnodes_min = cfg.nnodes_max = static_cast<int>(*nodes);
    took.push_back(fmt::format("{} node{} ({})", *nodes, *nodes == 1 ? "" : "s", nodes_from));
  }
  if (!given.count("--node-rank")) {
    cfg.node_rank = static_cast<int>(*node_id);
    took.push_back(fmt::format("node rank {} ({})", *node_id, rank_from));
  }
  if (cfg.nnodes_max > 1) {
    const auto host = slurm_step_host(env);
    if (host && !given.count("--master-addr")) {
      cfg.master_addr = host->host;
      took.push_back(
          fmt::format("rendezvous host {} (the first node of {})", host->host, host->from));
    }
    if (host && !given.count("--master-port")) {
      cfg.master_port = host->port;
      took.push_back(fmt::format("port {} (from SLURM_JOB_ID={} and step {})", host->port,
                                 host->job_id, host->step_id));
    }
  }
  if (!given.count("--rdzv-id")) {
    if (auto job = env_get(env, "SLURM_JOB_ID"); job && !job->empty()) {
      cfg.rdzv_id = *job;
      took.push_back(fmt::format("run id {} (SLURM_JOB_ID)", *job));
    }
  }
  if (!took.empty()) {
    cfg.notes.push_back(
        fmt::format("info: from Slurm: {}; flags override each of these", fmt::join(took, ", ")));
  }
}

}  // namespace gpurun::launcher
