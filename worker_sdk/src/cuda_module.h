// The boundary between the core SDK (libgpurun_worker.a: links no CUDA library, so a CPU-only
// program starts where libcudart and libnccl are absent) and libgpurun_worker_cuda.so, the module
// holding everything that calls the CUDA runtime or NCCL (cuda_util.cc, nccl_communicator.cc).
// The core dlopens the module only for a rank that uses a real GPU; a CPU rank never tries.
//
// The module exports one C function returning a table of C++ entry points. Core and module come
// from the same build (compiler, standard library, these headers), so C++ types cross; `abi` and
// `version` make a module from another build a clear error instead of a crash.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "device.h"
#include "gpurun/common/env.h"
#include "nccl_communicator.h"

namespace gpurun::worker::detail {

inline constexpr const char* kCudaModuleFile = "libgpurun_worker_cuda.so";
inline constexpr const char* kCudaModuleSymbol = "gpurun_worker_cuda_module_v1";
// Bump (and rename the symbol's _vN) when CudaModule, NcclConfig, DeviceMemory or Communicator
// change layout: the loader then refuses an older module instead of calling into it.
inline constexpr int kCudaModuleAbi = 1;

struct CudaModule {
  int abi = kCudaModuleAbi;
  const char* version = nullptr;  // GPURUN_VERSION of the build that made it
  std::size_t config_size = 0;    // sizeof(NcclConfig) there
  bool has_nccl = false;          // built with NCCL (make_nccl_communicator is set)
  // The module has its own copy of the logger: init() hands it the rank prefix.
  void (*set_log_prefix)(const std::string& prefix) = nullptr;
  std::unique_ptr<DeviceMemory> (*make_cuda_memory)(int device_index) = nullptr;
  std::unique_ptr<Communicator> (*make_nccl_communicator)(const NcclConfig& cfg) = nullptr;
};
using CudaModuleEntry = const CudaModule* (*)();

// Where the module is looked for, in order: GPURUN_WORKER_CUDA_MODULE (a file) alone when set;
// else the bare file name through the dynamic loader (LD_LIBRARY_PATH, the program's RUNPATH:
// find_package(gpurun) puts <prefix>/lib/gpurun there, the build tree puts its own), then the
// executable's directory, <exe dir>/../lib/gpurun and the configured install directory.
std::vector<std::string> cuda_module_candidates(const EnvMap& env);

// Tries each candidate (a path, or a bare file name for the dynamic loader); returns the first
// module that loads and matches this build, else nullptr with one line per attempt in *tried.
const CudaModule* try_load_cuda_module(const std::vector<std::string>& candidates,
                                       std::string* tried);

// The module for this process (loaded once, from cuda_module_candidates(env); thread-safe), for a
// rank that uses `device` ("cuda:0"). Throws ConfigError naming every path tried, why each
// failed, and the fixes.
const CudaModule& load_cuda_module(const EnvMap& env, const std::string& device);

// NCCL through the module (ConfigError when it was built without NCCL).
std::unique_ptr<Communicator> load_nccl_communicator(const NcclConfig& cfg);

}  // namespace gpurun::worker::detail
