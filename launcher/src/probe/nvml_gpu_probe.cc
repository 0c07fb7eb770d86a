// libnvidia-ml.so.1 loaded with dlopen, once per process, under a mutex (as NCCL's nvmlwrap.cc):
// no link dependency on the driver, and a machine without it simply has 0 NVIDIA GPUs.
#include <fmt/format.h>

#include <mutex>

#include "probe/dl_handle.h"
#include "probe/gpu_probe.h"

namespace gpurun::launcher {

namespace {

// The few NVML declarations we need (nvml.h is not required to build gpurun).
using nvmlReturn_t = int;
struct nvmlDevice_st;
using nvmlDevice_t = nvmlDevice_st*;
constexpr nvmlReturn_t kNvmlSuccess = 0;
constexpr unsigned kUuidBuffer = 96;
constexpr unsigned kNameBuffer = 96;
constexpr unsigned kVersionBuffer = 80;

// nvmlPciInfo_t as nvml.h declares it since CUDA 11 (nvmlDeviceGetPciInfo_v3).
struct NvmlPciInfo {
  char bus_id_legacy[16];
  unsigned domain;
  unsigned bus;
  unsigned device;
  unsigned pci_device_id;
  unsigned pci_subsystem_id;
  char bus_id[32];
};

class DlopenNvml : public NvmlLibrary {
 public:
  ~DlopenNvml() override {
    if (initialized_ && shutdown_) shutdown_();
  }

  bool load(std::string* why) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!attempted_) {
      attempted_ = true;
      load_locked();
    }
    if (!initialized_ && why) *why = error_;
    return initialized_;
  }

  std::vector<NvmlDevice> devices() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<NvmlDevice> out;
    if (!initialized_) return out;
    unsigned count = 0;
    if (get_count_(&count) != kNvmlSuccess) return out;
    for (unsigned i = 0; i < count; ++i) {
      nvmlDevice_t dev = nullptr;
      if (get_handle_(i, &dev) != kNvmlSuccess) continue;
      NvmlDevice d;
      char buf[kUuidBuffer] = {};
      if (get_uuid_(dev, buf, kUuidBuffer) == kNvmlSuccess) d.uuid = buf;
      char name[kNameBuffer] = {};
      if (get_name_(dev, name, kNameBuffer) == kNvmlSuccess) d.name = name;
      d.mig_uuids = mig_uuids(dev);
      NvmlPciInfo pci{};
      if (get_pci_ && get_pci_(dev, &pci) == kNvmlSuccess) {
        d.pci_bus_id =
            fmt::format("{:04x}:{:02x}:{:02x}.0", pci.domain & 0xffff, pci.bus, pci.device);
      }
      out.push_back(std::move(d));
    }
    return out;
  }

  std::string driver_version() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!initialized_ || !driver_version_) return "";
    char buf[kVersionBuffer] = {};
    return driver_version_(buf, kVersionBuffer) == kNvmlSuccess ? std::string(buf) : "";
  }

 private:
  void load_locked() {
    std::string why;
    lib_ = DlHandle::open({"libnvidia-ml.so.1"}, &why);
    if (!lib_) {
      error_ = why;
      return;
    }
    init_ = lib_.symbol<nvmlReturn_t (*)()>("nvmlInit_v2");
    shutdown_ = lib_.symbol<nvmlReturn_t (*)()>("nvmlShutdown");
    error_string_ = lib_.symbol<const char* (*)(nvmlReturn_t)>("nvmlErrorString");
    get_count_ = lib_.symbol<nvmlReturn_t (*)(unsigned*)>("nvmlDeviceGetCount_v2");
    get_handle_ =
        lib_.symbol<nvmlReturn_t (*)(unsigned, nvmlDevice_t*)>("nvmlDeviceGetHandleByIndex_v2");
    get_uuid_ = lib_.symbol<nvmlReturn_t (*)(nvmlDevice_t, char*, unsigned)>("nvmlDeviceGetUUID");
    get_name_ = lib_.symbol<nvmlReturn_t (*)(nvmlDevice_t, char*, unsigned)>("nvmlDeviceGetName");
    driver_version_ = lib_.symbol<nvmlReturn_t (*)(char*, unsigned)>("nvmlSystemGetDriverVersion");
    // Optional: PCI location (--numa-binding finds the GPU's NUMA node through it).
    get_pci_ = lib_.symbol<nvmlReturn_t (*)(nvmlDevice_t, NvmlPciInfo*)>("nvmlDeviceGetPciInfo_v3");
    // Optional (MIG-capable drivers only).
    mig_mode_ =
        lib_.symbol<nvmlReturn_t (*)(nvmlDevice_t, unsigned*, unsigned*)>("nvmlDeviceGetMigMode");
    max_mig_ =
        lib_.symbol<nvmlReturn_t (*)(nvmlDevice_t, unsigned*)>("nvmlDeviceGetMaxMigDeviceCount");
    mig_handle_ = lib_.symbol<nvmlReturn_t (*)(nvmlDevice_t, unsigned, nvmlDevice_t*)>(
        "nvmlDeviceGetMigDeviceHandleByIndex");
    if (!init_ || !get_count_ || !get_handle_ || !get_uuid_ || !get_name_) {
      error_ =
          fmt::format("{} lacks nvmlInit_v2/nvmlDeviceGetCount_v2 (driver too old)", lib_.name());
      return;
    }
    nvmlReturn_t rc = init_();
    if (rc != kNvmlSuccess) {
      error_ = fmt::format("nvmlInit failed: {} (code {})",
                           error_string_ ? error_string_(rc) : "unknown error", rc);
      return;
    }
    initialized_ = true;
  }

  std::vector<std::string> mig_uuids(nvmlDevice_t dev) {
    std::vector<std::string> out;
    if (!mig_mode_ || !max_mig_ || !mig_handle_) return out;
    unsigned current = 0, pending = 0;
    if (mig_mode_(dev, &current, &pending) != kNvmlSuccess || current == 0) return out;
    unsigned max = 0;
    if (max_mig_(dev, &max) != kNvmlSuccess) return out;
    for (unsigned i = 0; i < max; ++i) {
      nvmlDevice_t mig = nullptr;
      if (mig_handle_(dev, i, &mig) != kNvmlSuccess) continue;  // slot not populated
      char buf[kUuidBuffer] = {};
      if (get_uuid_(mig, buf, kUuidBuffer) == kNvmlSuccess) out.emplace_back(buf);
    }
    return out;
  }

  std::mutex mu_;
  bool attempted_ = false;
  bool initialized_ = false;
  std::string error_;
  DlHandle lib_;
  nvmlReturn_t (*init_)() = nullptr;
  nvmlReturn_t (*shutdown_)() = nullptr;
  const char* (*error_string_)(nvmlReturn_t) = nullptr;
  nvmlReturn_t (*get_count_)(unsigned*) = nullptr;
  nvmlReturn_t (*get_handle_)(unsigned, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*get_uuid_)(nvmlDevice_t, char*, unsigned) = nullptr;
  nvmlReturn_t (*get_name_)(nvmlDevice_t, char*, unsigned) = nullptr;
  nvmlReturn_t (*driver_version_)(char*, unsigned) = nullptr;
  nvmlReturn_t (*get_pci_)(nvmlDevice_t, NvmlPciInfo*) = nullptr;
  nvmlReturn_t (*mig_mode_)(nvmlDevice_t, unsigned*, unsigned*) = nullptr;
  nvmlReturn_t (*max_mig_)(nvmlDevice_t, unsigned*) = nullptr;
  nvmlReturn_t (*mig_handle_)(nvmlDevice_t, unsigned, nvmlDevice_t*) = nullptr;
};

}  // namespace

std::shared_ptr<NvmlLibrary> system_nvml() {
  static std::mutex mu;
  static std::shared_ptr<NvmlLibrary> instance;
  std::lock_guard<std::mutex> lock(mu);
  if (!instance) instance = std::make_shared<DlopenNvml>();
  return instance;
}

}  // namespace gpurun::launcher
