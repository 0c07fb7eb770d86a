// The visible-devices rules (pure), the NVML-backed probe, the fake probe and the default chain.
// The dlopen wrapper lives in nvml_gpu_probe.cc, the AMD probe in amd_gpu_probe.cc.
#include "probe/gpu_probe.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "gpurun/common/env.h"
#include "gpurun/common/error.h"

namespace gpurun::launcher {

namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

class FakeNvml : public NvmlLibrary {
 public:
  FakeNvml(std::vector<NvmlDevice> devices, std::string driver)
      : devices_(std::move(devices)), driver_(std::move(driver)) {}
  bool load(std::string*) override { return true; }
  std::vector<NvmlDevice> devices() override { return devices_; }
  std::string driver_version() override { return driver_; }

 private:
  std::vector<NvmlDevice> devices_;
  std::string driver_;
};

class MissingNvml : public NvmlLibrary {
 public:
  explicit MissingNvml(std::string why) : why_(std::move(why)) {}
  bool load(std::string* why) override {
    if (why) *why = why_;
    return false;
  }
  std::vector<NvmlDevice> devices() override { return {}; }
  std::string driver_version() override { return ""; }

 private:
  std::string why_;
};

// The default chain; decided per probe() because the environment arrives as a value.
class DefaultGpuProbe : public GpuProbe {
 public:
  GpuInventory probe(const EnvMap& env) override {
    if (auto fake = env_get(env, "GPURUN_FAKE_GPUS")) {
      long long n = 0;
      try {
        n = parse_int(*fake, "GPURUN_FAKE_GPUS");
      } catch (const ConfigError&) {
        n = -1;
      }
      if (n < 0 || n > 1024) {
        throw ConfigError(fmt::format(
            "invalid GPURUN_FAKE_GPUS '{}' (expected a count 0-1024; it is for tests only); "
            "unset it to detect real GPUs",
            *fake));
      }
      return FakeGpuProbe(static_cast<int>(n)).probe(env);
    }
    GpuInventory nv = NvmlGpuProbe(system_nvml()).probe(env);
    if (!nv.gpus.empty()) return nv;
    GpuInventory amd = AmdGpuProbe().probe(env);
    if (!amd.gpus.empty()) return amd;
    nv.source = "none";
    nv.notes.insert(nv.notes.end(), amd.notes.begin(), amd.notes.end());
    return nv;
  }
};

}  // namespace

std::shared_ptr<NvmlLibrary> make_fake_nvml(std::vector<NvmlDevice> devices,
                                            std::string driver_version) {
  return std::make_shared<FakeNvml>(std::move(devices), std::move(driver_version));
}

std::shared_ptr<NvmlLibrary> make_missing_nvml(std::string why) {
  return std::make_shared<MissingNvml>(std::move(why));
}

VisibleSelection select_visible_nvidia(const std::vector<NvmlDevice>& devices,
                                       const std::optional<std::string>& cuda_visible_devices,
                                       const std::string& vendor) {
  VisibleSelection sel;
  auto add = [&](const NvmlDevice& d, std::string id, std::string uuid, std::string name) {
    GpuInfo g;
    g.pci_bus_id = d.pci_bus_id;
    g.numa_node = d.numa_node;
    g.index = static_cast<int>(sel.gpus.size());
    g.id = std::move(id);
    g.name = std::move(name);
    g.vendor = vendor;
    g.uuid = std::move(uuid);
    (void)d;
    sel.gpus.push_back(std::move(g));
  };

  if (!cuda_visible_devices) {
    for (std::size_t i = 0; i < devices.size(); ++i) {
      const auto& d = devices[i];
      add(d, std::to_string(i), d.uuid, d.name);
      if (!d.mig_uuids.empty()) {
        sel.notes.push_back(fmt::format(
            "GPU {} is in MIG mode with {} instance(s); set CUDA_VISIBLE_DEVICES to MIG UUIDs "
            "(see `nvidia-smi -L`) to give each worker one instance",
            i, d.mig_uuids.size()));
      }
    }
    return sel;
  }

  const std::string cvd = trim(*cuda_visible_devices);
  if (cvd.empty()) {
    sel.notes.push_back("CUDA_VISIBLE_DEVICES is set but empty: no GPU is visible");
    return sel;
  }
  if (cvd == "NoDevFiles") {
    sel.notes.push_back("CUDA_VISIBLE_DEVICES=NoDevFiles: no GPU is visible");
    return sel;
  }

  std::set<std::string> used;  // uuids already selected (CUDA rejects repeats)
  auto stop = [&](const std::string& token, const std::string& why) {
    sel.notes.push_back(fmt::format(
        "CUDA_VISIBLE_DEVICES={}: entry '{}' {}, so it and the entries after it are ignored "
        "(as the CUDA runtime does)",
        cvd, token, why));
  };
  for (const auto& raw : split(cvd, ',')) {
    const std::string token = trim(raw);
    if (all_digits(token)) {
      std::size_t idx = token.size() > 6 ? devices.size() : std::stoul(token);
      if (idx >= devices.size()) {
        stop(token, fmt::format("is out of range ({} GPU{} installed)", devices.size(),
                                devices.size() == 1 ? "" : "s"));
        break;
      }
      const auto& d = devices[idx];
      if (!used.insert(d.uuid).second) {
        stop(token, "repeats a GPU");
        break;
      }
      add(d, token, d.uuid, d.name);
    } else if (starts_with(token, "MIG-GPU-")) {
      // Old MIG syntax: MIG-GPU-<gpu uuid>/<gi>/<ci>.
      std::string gpu_uuid = token.substr(4, token.find('/') - 4);
      auto it = std::find_if(devices.begin(), devices.end(),
                             [&](const NvmlDevice& d) { return d.uuid == gpu_uuid; });
      if (it == devices.end()) {
        stop(token, "names no installed GPU");
        break;
      }
      if (!used.insert(token).second) {
        stop(token, "repeats a GPU");
        break;
      }
      add(*it, token, token, it->name + " (MIG)");
    } else if (starts_with(token, "MIG-")) {
      const NvmlDevice* parent = nullptr;
      std::string full;
      int matches = 0;
      for (const auto& d : devices) {
        for (const auto& m : d.mig_uuids) {
          if (starts_with(m, token)) {
            ++matches;
            parent = &d;
            full = m;
          }
        }
      }
      if (matches != 1) {
        stop(token, matches == 0 ? "names no MIG instance" : "is an ambiguous UUID prefix");
        break;
      }
      if (!used.insert(full).second) {
        stop(token, "repeats a GPU");
        break;
      }
      add(*parent, token, full, parent->name + " (MIG)");
    } else if (starts_with(token, "GPU-")) {
      const NvmlDevice* found = nullptr;
      int matches = 0;
      for (const auto& d : devices) {
        if (starts_with(d.uuid, token)) {
          ++matches;
          found = &d;
        }
      }
      if (matches != 1) {
        stop(token, matches == 0 ? "names no installed GPU" : "is an ambiguous UUID prefix");
        break;
      }
      if (!used.insert(found->uuid).second) {
        stop(token, "repeats a GPU");
        break;
      }
      add(*found, token, found->uuid, found->name);
    } else {
      if (sel.gpus.empty() && (token == "-1" || starts_with(token, "-"))) {
        sel.notes.push_back(fmt::format("CUDA_VISIBLE_DEVICES={}: no GPU is visible", cvd));
      } else {
        stop(token, "is not an index, GPU- or MIG- UUID");
      }
      break;
    }
  }
  return sel;
}

NvmlGpuProbe::NvmlGpuProbe(std::shared_ptr<NvmlLibrary> nvml, std::string source,
                           std::string vendor)
    : nvml_(std::move(nvml)), source_(std::move(source)), vendor_(std::move(vendor)) {}

GpuInventory NvmlGpuProbe::probe(const EnvMap& env) {
  GpuInventory inv;
  auto cvd = env_get(env, "CUDA_VISIBLE_DEVICES");
  std::string why;
  if (!nvml_->load(&why)) {
    inv.source = "none";
    if (cvd && !trim(*cvd).empty() && trim(*cvd) != "-1" && trim(*cvd) != "NoDevFiles") {
      inv.notes.push_back(fmt::format(
          "CUDA_VISIBLE_DEVICES={} is set, but NVML is not loadable ({}), so gpurun cannot tell "
          "whether those GPUs exist; counting 0 GPUs (check the NVIDIA driver with nvidia-smi)",
          *cvd, why));
    } else {
      inv.notes.push_back(fmt::format("NVML not loadable ({}): no NVIDIA driver", why));
    }
    return inv;
  }
  auto devices = nvml_->devices();
  inv.driver_version = nvml_->driver_version();
  auto sel = select_visible_nvidia(devices, cvd, vendor_);
  inv.gpus = std::move(sel.gpus);
  inv.notes = std::move(sel.notes);
  inv.source = source_;
  if (devices.empty()) inv.notes.push_back(source_ + " reports 0 GPUs");
  if (cvd && !inv.gpus.empty() && inv.gpus.size() != devices.size()) {
    inv.notes.push_back(fmt::format("CUDA_VISIBLE_DEVICES={} selects {} of {} GPUs", *cvd,
                                    inv.gpus.size(), devices.size()));
  }
  // CUDA numbers GPUs fastest-first unless CUDA_DEVICE_ORDER=PCI_BUS_ID; NVML uses PCI order.
  // They agree on machines with identical GPUs; say so when they may not.
  bool mixed = std::any_of(devices.begin(), devices.end(),
                           [&](const NvmlDevice& d) { return d.name != devices.front().name; });
  auto order = env_get(env, "CUDA_DEVICE_ORDER");
  if (mixed && (!order || *order != "PCI_BUS_ID")) {
    inv.notes.push_back(
        "GPUs of different models: CUDA numbers them fastest-first, NVML by PCI bus; set "
        "CUDA_DEVICE_ORDER=PCI_BUS_ID so indices mean the same GPU everywhere");
  }
  return inv;
}

FakeGpuProbe::FakeGpuProbe(int count) : count_(count) {}

GpuInventory FakeGpuProbe::probe(const EnvMap& env) {
  // GPURUN_FAKE_GPU_NUMA_NODES=0,0,1,1 (tests only): the NUMA node of each fake GPU, in order.
  std::vector<int> nodes;
  if (auto v = env_get(env, "GPURUN_FAKE_GPU_NUMA_NODES")) {
    try {
      for (const std::string& n : split(*v, ',')) {
        nodes.push_back(static_cast<int>(parse_int(n, "GPURUN_FAKE_GPU_NUMA_NODES")));
      }
    } catch (const ConfigError&) {
      throw ConfigError(fmt::format(
          "invalid GPURUN_FAKE_GPU_NUMA_NODES '{}' (expected node numbers such as 0,0,1,1; it "
          "is for tests only); unset it",
          *v));
    }
  }
  std::vector<NvmlDevice> devices;
  for (int i = 0; i < count_; ++i) {
    NvmlDevice d{fmt::format("GPU-fa4e0000-0000-4000-8000-{:012d}", i), "Fake GPU", {}, "", {}};
    if (static_cast<std::size_t>(i) < nodes.size())
      d.numa_node = nodes[static_cast<std::size_t>(i)];
    devices.push_back(std::move(d));
  }
  GpuInventory inv =
      NvmlGpuProbe(make_fake_nvml(std::move(devices), "fake"), "fake", "fake").probe(env);
  inv.notes.insert(
      inv.notes.begin(),
      fmt::format("GPURUN_FAKE_GPUS={}: pretending {} GPU(s) exist (tests only)", count_, count_));
  return inv;
}

std::unique_ptr<GpuProbe> make_default_gpu_probe() { return std::make_unique<DefaultGpuProbe>(); }

}  // namespace gpurun::launcher
