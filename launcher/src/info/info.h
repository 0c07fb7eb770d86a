// `gpurun info` internals, exposed for tests. print_info() (config.h) prints info_text().
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cli/config.h"
#include "gpurun/common/net.h"

namespace gpurun::launcher {

// "free", "in use by pid 4711 (python3 ...)", or "in use (holder not visible ...)".
std::string port_status(int port);

// The variables that matter to a distributed job (NCCL_*, CUDA_*, GLOO_*, MASTER_*, PET_*, ...).
std::vector<std::string> relevant_env(const EnvMap& env);

// Versions of optional libraries, "not found (<why>)" when absent.
std::string cuda_runtime_version();
std::string cuda_driver_version();
std::string nccl_version();

std::string info_text(const LaunchConfig& cfg, const EnvMap& env, GpuProbe& probe);

}  // namespace gpurun::launcher
