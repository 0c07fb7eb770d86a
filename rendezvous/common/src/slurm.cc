#include "gpurun/common/slurm.h"

#include <fmt/format.h>

#include "gpurun/common/error.h"
#include "gpurun/common/hostlist.h"

namespace gpurun {
namespace {

long long id_of(const EnvMap& env, const char* name, const char* alias) {
  for (const char* var : {name, alias}) {
    if (auto v = env_get(env, var)) {
      const long long x = parse_int(*v, fmt::format("environment variable {}", var));
      if (x < 0) {
        throw ConfigError(
            fmt::format("{}={} is negative; Slurm sets a job or step id >= 0", var, x));
      }
      return x;
    }
  }
  return 0;
}

}  // namespace

std::uint16_t slurm_store_port(long long job_id, long long step_id) {
  return static_cast<std::uint16_t>(kDerivedPortBase + 4 * (job_id % 10000) + step_id % 4);
}

bool in_srun_step(const EnvMap& env) {
  return env_get(env, "SLURM_PROCID") &&
         (env_get(env, "SLURM_STEP_ID") || env_get(env, "SLURM_STEPID"));
}

std::optional<SlurmStepHost> slurm_step_host(const EnvMap& env) {
  for (const char* var : {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"}) {
    auto list = env_get(env, var);
    if (!list || list->empty()) continue;
    SlurmStepHost h;
    h.host = expand_hostlist(*list, var).front();
    h.from = var;
    h.job_id = id_of(env, "SLURM_JOB_ID", "SLURM_JOBID");
    h.step_id = id_of(env, "SLURM_STEP_ID", "SLURM_STEPID");
    h.port = slurm_store_port(h.job_id, h.step_id);
    return h;
  }
  return std::nullopt;
}

std::optional<SlurmJobNodes> slurm_job_nodes(const EnvMap& env) {
  for (const char* var : {"SLURM_JOB_NODELIST", "SLURM_NODELIST"}) {
    auto list = env_get(env, var);
    if (!list || list->empty()) continue;
    return SlurmJobNodes{expand_hostlist(*list, var), fmt::format("{}={}", var, *list)};
  }
  return std::nullopt;
}

}  // namespace gpurun
