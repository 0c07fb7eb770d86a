// Device selection for a worker: which GPU (if any) this rank uses, decided from the visible GPU
// count, LOCAL_RANK, gpurun's GPURUN_GPU hint and the test-only GPURUN_FAKE_GPU_RANKS.
// Also the host-memory staging seam GlooCommunicator uses for buffers that live on a GPU.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "gpurun/common/env.h"
#include "gpurun/worker/worker.h"

namespace gpurun::worker::detail {

// Number of CUDA devices this process can use, from the NVIDIA driver (libcuda.so.1, dlopened:
// the core SDK links no CUDA library). 0 when built without CUDA, when no driver is installed,
// or on any CUDA error (never throws, never crashes). Defined in cuda_loader.cc.
int cuda_device_count();

struct DeviceChoice {
  Device device;
  bool fake = false;  // GPURUN_FAKE_GPU_RANKS: reports a GPU, memory is host memory
  std::string why;    // for the log: "LOCAL_RANK 1 -> cuda:1 (2 GPUs visible)"
};

// Pure: `visible_gpus` is what cuda_device_count() returned.
//  - use_gpu false, or GPURUN_GPU present and empty -> CPU
//  - rank listed in GPURUN_FAKE_GPU_RANKS ("0,1"; test-only) -> fake cuda:<local_rank>
//  - GPURUN_GPU=N -> cuda:N if N < visible, else cuda:0 when exactly one GPU is visible
//  - otherwise cuda:LOCAL_RANK when LOCAL_RANK < visible, else CPU (the hybrid case).
// Throws ConfigError for a malformed GPURUN_FAKE_GPU_RANKS / GPURUN_GPU.
DeviceChoice choose_device(const LaunchInfo& info, const EnvMap& env, bool use_gpu,
                           int visible_gpus);

// "0,1,4" -> {0,1,4}; throws ConfigError naming `what`.
std::vector<int> parse_int_list(const std::string& text, const std::string& what);

// How a communicator reaches a caller's buffer: directly (host memory) or by copying through
// host memory (a GPU rank in a Gloo group). REQUIRES: one thread at a time.
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  virtual bool is_host() const = 0;
  virtual void to_host(void* host_dst, const void* dev_src, std::size_t bytes) = 0;
  virtual void to_device(void* dev_dst, const void* host_src, std::size_t bytes) = 0;
};

// Host for CPU ranks; memcpy staging for fake GPUs; cudaMemcpy for real ones (through the CUDA
// module, cuda_module.h).
std::unique_ptr<DeviceMemory> make_device_memory(const DeviceChoice& choice);

// cudaMemcpy staging; defined in the CUDA module (cuda_util.cc), reached through CudaModule.
std::unique_ptr<DeviceMemory> make_cuda_memory(int device_index);

}  // namespace gpurun::worker::detail
