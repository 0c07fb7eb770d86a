#include "device.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "cuda_module.h"
#include "gpurun/common/error.h"

namespace gpurun::worker::detail {

std::vector<int> parse_int_list(const std::string& text, const std::string& what) {
  std::vector<int> out;
  for (const auto& f : split(text, ',')) {
    if (f.empty()) continue;
    long long v = 0;
    try {
      v = parse_int(f, what);
    } catch (const ConfigError&) {
      throw ConfigError(
          fmt::format("{}='{}' is not a comma-separated list of ranks (e.g. \"0,1\")", what, text));
    }
    if (v < 0) throw ConfigError(fmt::format("{}='{}' has a negative rank", what, text));
    out.push_back(static_cast<int>(v));
  }
  return out;
}

DeviceChoice choose_device(const LaunchInfo& info, const EnvMap& env, bool use_gpu,
                           int visible_gpus) {
  DeviceChoice c;
  if (!use_gpu) {
    c.why = "CPU (InitOptions.use_gpu = false)";
    return c;
  }
  if (auto fake = env_get(env, "GPURUN_FAKE_GPU_RANKS")) {
    auto ranks = parse_int_list(*fake, "GPURUN_FAKE_GPU_RANKS");
    if (std::find(ranks.begin(), ranks.end(), info.rank) != ranks.end()) {
      c.device = Device{DeviceKind::kCuda, info.local_rank};
      c.fake = true;
      c.why = fmt::format("fake {} (GPURUN_FAKE_GPU_RANKS={}, test-only: host memory)",
                          c.device.str(), *fake);
      return c;
    }
  }
  auto hint = env_get(env, "GPURUN_GPU");
  if (hint && hint->empty()) {
    c.why = "CPU (gpurun assigned no GPU to this rank: GPURUN_GPU is empty)";
    return c;
  }
  if (visible_gpus <= 0) {
    c.why = "CPU (no CUDA device visible)";
    return c;
  }
  if (hint) {
    long long n = parse_int(*hint, "environment variable GPURUN_GPU");
    if (n >= 0 && n < visible_gpus) {
      c.device = Device{DeviceKind::kCuda, static_cast<int>(n)};
    } else if (visible_gpus == 1) {
      c.device = Device{DeviceKind::kCuda, 0};
    } else {
      c.why = fmt::format("CPU (GPURUN_GPU={} but only {} GPUs are visible)", n, visible_gpus);
      return c;
    }
    c.why = fmt::format("{} (GPURUN_GPU={}, {} visible)", c.device.str(), *hint, visible_gpus);
    return c;
  }
  if (info.local_rank < visible_gpus) {
    c.device = Device{DeviceKind::kCuda, info.local_rank};
    c.why = fmt::format("{} (LOCAL_RANK={}, {} GPUs visible)", c.device.str(), info.local_rank,
                        visible_gpus);
  } else {
    c.why = fmt::format("CPU (LOCAL_RANK={} but only {} GPUs visible: hybrid job)", info.local_rank,
                        visible_gpus);
  }
  return c;
}

namespace {

class HostMemory final : public DeviceMemory {
 public:
  bool is_host() const override { return true; }
  void to_host(void* d, const void* s, std::size_t n) override {
    if (n != 0 && d != s) std::memmove(d, s, n);
  }
  void to_device(void* d, const void* s, std::size_t n) override {
    if (n != 0 && d != s) std::memmove(d, s, n);
  }
};

// Test-only stand-in for a GPU: "device" buffers are host memory, but the communicator still
// takes the staging path, so hybrid logic runs on CPU-only machines.
class FakeDeviceMemory final : public DeviceMemory {
 public:
  bool is_host() const override { return false; }
  void to_host(void* d, const void* s, std::size_t n) override {
    if (n != 0) std::memcpy(d, s, n);
  }
  void to_device(void* d, const void* s, std::size_t n) override {
    if (n != 0) std::memcpy(d, s, n);
  }
};

}  // namespace

std::unique_ptr<DeviceMemory> make_device_memory(const DeviceChoice& choice) {
  if (!choice.device.is_cuda()) return std::make_unique<HostMemory>();
  if (choice.fake) return std::make_unique<FakeDeviceMemory>();
  return load_cuda_module(current_environment(), choice.device.str())
      .make_cuda_memory(choice.device.index);
}

}  // namespace gpurun::worker::detail
