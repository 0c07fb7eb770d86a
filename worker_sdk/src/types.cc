// Small value helpers of the public API: names of enums, element sizes, Device::str.
#include <fmt/format.h>

#include "gpurun/common/error.h"
#include "gpurun/worker/communicator.h"
#include "gpurun/worker/worker.h"

namespace gpurun::worker {

std::string to_string(Backend b) {
  switch (b) {
    case Backend::kAuto:
      return "auto";
    case Backend::kGloo:
      return "gloo";
    case Backend::kNccl:
      return "nccl";
  }
  return "?";
}

std::string to_string(DataType t) {
  switch (t) {
    case DataType::kFloat32:
      return "float32";
    case DataType::kFloat64:
      return "float64";
    case DataType::kInt32:
      return "int32";
    case DataType::kInt64:
      return "int64";
    case DataType::kUInt8:
      return "uint8";
    case DataType::kFloat16:
      return "float16";
    case DataType::kBFloat16:
      return "bfloat16";
    case DataType::kUInt64:
      return "uint64";
  }
  return "?";
}

std::string to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
    case ReduceOp::kAvg:
      return "avg";
  }
  return "?";
}

std::size_t size_of(DataType t) {
  switch (t) {
    case DataType::kFloat32:
      return 4;
    case DataType::kFloat64:
      return 8;
    case DataType::kInt32:
      return 4;
    case DataType::kInt64:
      return 8;
    case DataType::kUInt8:
      return 1;
    case DataType::kFloat16:
      return 2;
    case DataType::kBFloat16:
      return 2;
    case DataType::kUInt64:
      return 8;
  }
  return 0;
}

std::string to_string(Launcher l) {
  switch (l) {
    case Launcher::kGpurun:
      return "gpurun";
    case Launcher::kTorchrun:
      return "torchrun";
    case Launcher::kMpirun:
      return "mpirun";
    case Launcher::kSrun:
      return "srun";
    case Launcher::kNone:
      return "none";
  }
  return "?";
}

std::string Device::str() const {
  if (kind == DeviceKind::kCuda) return fmt::format("cuda:{}", index);
  return "cpu";
}

}  // namespace gpurun::worker
