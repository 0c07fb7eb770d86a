// The entry point of libgpurun_worker_cuda.so (see cuda_module.h): the one symbol it exports.
#include "cuda_module.h"

#include "gpurun/common/log.h"

#ifndef GPURUN_VERSION_STRING
#define GPURUN_VERSION_STRING "unknown"
#endif

namespace gpurun::worker::detail {
namespace {

void set_log_prefix(const std::string& prefix) { log::set_prefix(prefix); }

CudaModule make_table() {
  CudaModule m;
  m.version = GPURUN_VERSION_STRING;
  m.config_size = sizeof(NcclConfig);
  m.set_log_prefix = &set_log_prefix;
  m.make_cuda_memory = &make_cuda_memory;
#if GPURUN_HAS_NCCL
  m.has_nccl = true;
  m.make_nccl_communicator = &make_nccl_communicator;
#endif
  return m;
}

}  // namespace
}  // namespace gpurun::worker::detail

extern "C" __attribute__((visibility("default"))) const gpurun::worker::detail::CudaModule*
gpurun_worker_cuda_module_v1() {
  static const gpurun::worker::detail::CudaModule table = gpurun::worker::detail::make_table();
  return &table;
}
