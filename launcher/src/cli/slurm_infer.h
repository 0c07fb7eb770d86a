// `srun gpurun --nproc-per-node=4 app` (one gpurun per node) with nothing else: what gpurun takes
// from Slurm's variables. The number of nodes (SLURM_STEP_NUM_NODES), this node's rank
// (SLURM_NODEID), the rendezvous host (the step's first node, Slurm's hostlist syntax expanded)
// and port (derived from SLURM_JOB_ID and the step id, gpurun/common/slurm.h), and the run id
// (SLURM_JOB_ID). Flags and PET_* variables always win. Pure.
#pragma once

#include <set>
#include <string>

#include "cli/config.h"
#include "gpurun/common/env.h"

namespace gpurun::launcher {

// Fills what `given` (options set by flag or PET_ variable) leaves open, when this process is an
// srun task and the rendezvous is the static one; adds one note saying what came from where
// ("info: ..."). Throws ConfigError when srun started several gpurun per node.
void apply_slurm(LaunchConfig& cfg, const std::set<std::string>& given, const EnvMap& env);

}  // namespace gpurun::launcher
