// The launcher-worker contract: the environment variables gpurun sets for each worker (torchrun's
// set, plus a few of gpurun's own) and that the worker SDK (launch_info.cc), the examples
// (hello_env) and the tests read. Written once, here: the launcher's planner (run/worker_env.cc)
// sets exactly kWorkerEnvVars; --dry-run lists them in this order.
#pragma once

#include <array>

namespace gpurun::worker_env {

// ---- torchrun's worker environment (what PyTorch's env:// and torchelastic read) ----
inline constexpr const char* kRank = "RANK";                                // global rank
inline constexpr const char* kLocalRank = "LOCAL_RANK";                     // rank on this node
inline constexpr const char* kWorldSize = "WORLD_SIZE";                     // workers in the job
inline constexpr const char* kLocalWorldSize = "LOCAL_WORLD_SIZE";          // workers on this node
inline constexpr const char* kGroupRank = "GROUP_RANK";                     // node rank
inline constexpr const char* kGroupWorldSize = "GROUP_WORLD_SIZE";          // nodes
inline constexpr const char* kRoleRank = "ROLE_RANK";                       // rank within the role
inline constexpr const char* kRoleName = "ROLE_NAME";                       // --role (default)
inline constexpr const char* kRoleWorldSize = "ROLE_WORLD_SIZE";            // workers of the role
inline constexpr const char* kMasterAddr = "MASTER_ADDR";                   // the store's host
inline constexpr const char* kMasterPort = "MASTER_PORT";                   // the store's port
inline constexpr const char* kRunId = "TORCHELASTIC_RUN_ID";                // --rdzv-id
inline constexpr const char* kRestartCount = "TORCHELASTIC_RESTART_COUNT";  // attempt, from 0
inline constexpr const char* kMaxRestarts = "TORCHELASTIC_MAX_RESTARTS";    // --max-restarts
inline constexpr const char* kErrorFile = "TORCHELASTIC_ERROR_FILE";  // where a worker's error goes
// "True": the launcher hosts the store at MASTER_ADDR:MASTER_PORT (PyTorch connects as a client).
inline constexpr const char* kUseAgentStore = "TORCHELASTIC_USE_AGENT_STORE";
// NCCL errors abort the communicator instead of hanging (1 unless set); the older name beside it.
inline constexpr const char* kTorchNcclAsyncErrorHandling = "TORCH_NCCL_ASYNC_ERROR_HANDLING";
inline constexpr const char* kNcclAsyncErrorHandling = "NCCL_ASYNC_ERROR_HANDLING";
inline constexpr const char* kOmpNumThreads = "OMP_NUM_THREADS";      // 1 when unset (torchrun's)
inline constexpr const char* kPythonUnbuffered = "PYTHONUNBUFFERED";  // 1 unless set
// ---- the devices a worker sees (passed on, or narrowed with --per-worker-visible-devices) ----
inline constexpr const char* kCudaVisibleDevices = "CUDA_VISIBLE_DEVICES";
inline constexpr const char* kRocrVisibleDevices = "ROCR_VISIBLE_DEVICES";
inline constexpr const char* kHipVisibleDevices = "HIP_VISIBLE_DEVICES";
// ---- gpurun's own ----
inline constexpr const char* kLauncher = "GPURUN_LAUNCHER";  // "gpurun": started by gpurun
inline constexpr const char* kGpu = "GPURUN_GPU";            // its device index ("" = no GPU)
inline constexpr const char* kGpuId = "GPURUN_GPU_ID";       // its GPU's id (index/UUID/MIG)
inline constexpr const char* kNumGpusVisible = "GPURUN_NUM_GPUS_VISIBLE";  // GPUs gpurun saw

// Every variable above, in display order (--dry-run, hello_env).
inline constexpr std::array<const char*, 27> kWorkerEnvVars = {
    kRank,
    kLocalRank,
    kWorldSize,
    kLocalWorldSize,
    kGroupRank,
    kGroupWorldSize,
    kRoleRank,
    kRoleName,
    kRoleWorldSize,
    kMasterAddr,
    kMasterPort,
    kRunId,
    kRestartCount,
    kMaxRestarts,
    kErrorFile,
    kUseAgentStore,
    kTorchNcclAsyncErrorHandling,
    kNcclAsyncErrorHandling,
    kOmpNumThreads,
    kPythonUnbuffered,
    kCudaVisibleDevices,
    kRocrVisibleDevices,
    kHipVisibleDevices,
    kLauncher,
    kGpu,
    kGpuId,
    kNumGpusVisible,
};

}  // namespace gpurun::worker_env
