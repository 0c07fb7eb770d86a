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

namespace {

// Name and size of each DataType, in the enum's order (one table for to_string and size_of).
struct TypeInfo {
  DataType type;
  const char* name;
  std::size_t size;
};
constexpr TypeInfo kTypes[] = {
    {DataType::kFloat32, "float32", 4},   {DataType::kFloat64, "float64", 8},
    {DataType::kInt32, "int32", 4},       {DataType::kInt64, "int64", 8},
    {DataType::kUInt8, "uint8", 1},       {DataType::kFloat16, "float16", 2},
    {DataType::kBFloat16, "bfloat16", 2}, {DataType::kUInt64, "uint64", 8},
};

const TypeInfo* info(DataType t) {
  for (const auto& i : kTypes) {
    if (i.type == t) return &i;
  }
  return nullptr;
}

}  // namespace

std::string to_string(DataType t) {
  const TypeInfo* i = info(t);
  return i ? i->name : "?";
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
  const TypeInfo* i = info(t);
  return i ? i->size : 0;
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
