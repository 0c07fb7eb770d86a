// What a process started by srun can learn from Slurm's variables, shared by the launcher (srun
// gpurun: nodes, node rank, rendezvous host) and the worker SDK (srun ./app: where rank 0 hosts
// the store). Pure functions of the environment.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "gpurun/common/env.h"
#include "gpurun/common/net.h"

namespace gpurun {

// Ports a Slurm step uses when nobody chose one: kDerivedPortBase (net.h, 20000) + 4 x (job mod
// 10000) + step mod 4, in 20000..59999: the same on every task of the step, distinct for
// concurrent jobs (ids less than 10000 apart) and for up to 4 concurrent steps of one job on a
// node.
std::uint16_t slurm_store_port(long long job_id, long long step_id);

// Inside an srun step (SLURM_STEP_ID and SLURM_PROCID set; an sbatch script's batch step is not).
bool in_srun_step(const EnvMap& env);

struct SlurmStepHost {
  std::string host;        // the step's first node
  std::string from;        // the variable it came from, e.g. "SLURM_STEP_NODELIST"
  long long job_id = 0;    // SLURM_JOB_ID (or SLURM_JOBID)
  long long step_id = 0;   // SLURM_STEP_ID (or SLURM_STEPID)
  std::uint16_t port = 0;  // slurm_store_port(job_id, step_id)
};

// The first node of SLURM_STEP_NODELIST (else SLURM_JOB_NODELIST, SLURM_NODELIST) and the derived
// port; nullopt without a node list. Throws ConfigError for a malformed list or id.
std::optional<SlurmStepHost> slurm_step_host(const EnvMap& env);

// The job's nodes: SLURM_JOB_NODELIST (else SLURM_NODELIST) expanded, with the variable's name
// and value for messages; nullopt outside a Slurm job. Throws ConfigError for a malformed list.
struct SlurmJobNodes {
  std::vector<std::string> nodes;
  std::string from;  // "SLURM_JOB_NODELIST=n[1-2]"
};
std::optional<SlurmJobNodes> slurm_job_nodes(const EnvMap& env);

}  // namespace gpurun
