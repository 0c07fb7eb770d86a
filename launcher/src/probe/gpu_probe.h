// GPU detection behind the GpuProbe seam (config.h): NvmlGpuProbe (NVIDIA, libnvidia-ml loaded
// with dlopen, honouring CUDA_VISIBLE_DEVICES), AmdGpuProbe (/sys/class/kfd, honouring
// ROCR_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES), FakeGpuProbe (tests), and the default chain.
// The visible-devices rules are pure functions over a device list so they are unit-tested
// without a driver; NvmlLibrary is the seam that a test fills with fake devices.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/config.h"

namespace gpurun::launcher {

// One physical NVIDIA GPU as NVML lists it (PCI bus order), with its MIG instances if any.
struct NvmlDevice {
  std::string uuid;                    // "GPU-8b5c..."
  std::string name;                    // "NVIDIA H100 80GB HBM3"
  std::vector<std::string> mig_uuids;  // "MIG-..." of its MIG devices (empty: MIG off)
  std::string pci_bus_id;              // sysfs form "0000:3b:00.0" (empty: unknown)
  std::optional<int> numa_node;        // fake devices only (real ones: sysfs, by pci_bus_id)
};

// The NVML calls gpurun needs. The real one (system_nvml) dlopens libnvidia-ml.so.1 once per
// process under a mutex; tests use make_fake_nvml. Thread-safe.
class NvmlLibrary {
 public:
  virtual ~NvmlLibrary() = default;
  // Loads and initialises NVML on first call. Returns false with the reason in *why when NVML is
  // unusable (no driver, old driver, init failure). Never throws.
  virtual bool load(std::string* why) = 0;
  // REQUIRES: load() returned true. Devices whose queries fail are skipped.
  virtual std::vector<NvmlDevice> devices() = 0;
  virtual std::string driver_version() = 0;
};

// The process-wide libnvidia-ml.so.1 wrapper (loaded lazily, kept until exit).
std::shared_ptr<NvmlLibrary> system_nvml();
std::shared_ptr<NvmlLibrary> make_fake_nvml(std::vector<NvmlDevice> devices,
                                            std::string driver_version = "fake");
// An NvmlLibrary whose load() fails with `why` (NVML absent).
std::shared_ptr<NvmlLibrary> make_missing_nvml(std::string why);

// CUDA_VISIBLE_DEVICES applied to NVML's list, as the CUDA runtime does: comma-separated
// indices, GPU-UUIDs (or a unique prefix), MIG-UUIDs (or MIG-GPU-<uuid>/gi/ci); the list ends at
// the first entry that is invalid, out of range or repeated ("0,1,-1,2" = 0,1); "" , "-1" and
// "NoDevFiles" = no GPU. nullopt (unset) = every device, numbered as NVML numbers them.
// Each GpuInfo gets index = its position, id = the token that selects it alone.
struct VisibleSelection {
  std::vector<GpuInfo> gpus;
  std::vector<std::string> notes;
};
VisibleSelection select_visible_nvidia(const std::vector<NvmlDevice>& devices,
                                       const std::optional<std::string>& cuda_visible_devices,
                                       const std::string& vendor = "nvidia");

class NvmlGpuProbe : public GpuProbe {
 public:
  explicit NvmlGpuProbe(std::shared_ptr<NvmlLibrary> nvml, std::string source = "nvml",
                        std::string vendor = "nvidia");
  GpuInventory probe(const EnvMap& env) override;

 private:
  std::shared_ptr<NvmlLibrary> nvml_;
  std::string source_;
  std::string vendor_;
};

// One GPU node of the KFD topology (AMD), in node order.
struct KfdGpu {
  int node = 0;
  std::string name;  // e.g. "gfx90a" from the node's name file
  std::string uuid;  // "GPU-<unique_id as 16 hex digits>" when the kernel exports it
  long long gpu_id = 0;
};

// Reads <nodes_dir>/<N>/properties; GPU nodes are those with simd_count > 0.
std::vector<KfdGpu> read_kfd_topology(const std::string& nodes_dir);

// ROCR_VISIBLE_DEVICES (indices or GPU-UUIDs into the physical list), then HIP_VISIBLE_DEVICES
// (or CUDA_VISIBLE_DEVICES, which HIP also honours) as indices into what ROCR left. id is the
// physical index, suitable for a narrowed ROCR_VISIBLE_DEVICES.
VisibleSelection select_visible_amd(const std::vector<KfdGpu>& gpus, const EnvMap& env);

class AmdGpuProbe : public GpuProbe {
 public:
  explicit AmdGpuProbe(std::string nodes_dir = "/sys/class/kfd/kfd/topology/nodes");
  GpuInventory probe(const EnvMap& env) override;

 private:
  std::string nodes_dir_;
};

// N fake GPUs ("Fake GPU k", ids 0..N-1), still filtered by CUDA_VISIBLE_DEVICES so e2e tests can
// exercise narrowing and "more workers than GPUs". For tests only (GPURUN_FAKE_GPUS=N).
class FakeGpuProbe : public GpuProbe {
 public:
  explicit FakeGpuProbe(int count);
  GpuInventory probe(const EnvMap& env) override;

 private:
  int count_;
};

}  // namespace gpurun::launcher
