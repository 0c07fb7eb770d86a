// CUDA runtime piece of the SDK's CUDA module (libgpurun_worker_cuda.so, built only with
// GPURUN_HAS_CUDA): host staging for GPU buffers in Gloo groups.
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "device.h"
#include "gpurun/common/error.h"

namespace gpurun::worker::detail {

namespace {

void check(cudaError_t err, const char* what, int device) {
  if (err != cudaSuccess) {
    throw CommError(fmt::format("{} on cuda:{} failed ({}: {}); check the GPU with nvidia-smi",
                                what, device, cudaGetErrorName(err), cudaGetErrorString(err)));
  }
}

class CudaMemory final : public DeviceMemory {
 public:
  explicit CudaMemory(int device) : device_(device) {}
  bool is_host() const override { return false; }
  void to_host(void* d, const void* s, std::size_t n) override {
    if (n == 0) return;
    check(cudaSetDevice(device_), "cudaSetDevice", device_);
    check(cudaMemcpy(d, s, n, cudaMemcpyDeviceToHost), "cudaMemcpy(device to host)", device_);
  }
  void to_device(void* d, const void* s, std::size_t n) override {
    if (n == 0) return;
    check(cudaSetDevice(device_), "cudaSetDevice", device_);
    check(cudaMemcpy(d, s, n, cudaMemcpyHostToDevice), "cudaMemcpy(host to device)", device_);
  }

 private:
  int device_;
};

}  // namespace

std::unique_ptr<DeviceMemory> make_cuda_memory(int device_index) {
  return std::make_unique<CudaMemory>(device_index);
}

}  // namespace gpurun::worker::detail
