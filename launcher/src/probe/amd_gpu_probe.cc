// AMD GPUs from the KFD topology in sysfs (what ROCr itself enumerates), filtered by
// ROCR_VISIBLE_DEVICES and then HIP_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES. No ROCm library is
// loaded: the kernel's topology is enough to count and name the GPUs a worker will see.
#include <dirent.h>
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "gpurun/common/env.h"
#include "probe/gpu_probe.h"

namespace gpurun::launcher {

namespace {

// Applies one "visible devices" list of indices (and, when allow_uuid, GPU-UUIDs) to `in`.
// Stops at the first invalid entry. `var` names the variable for notes.
std::vector<std::size_t> apply_list(const std::vector<KfdGpu>& all,
                                    const std::vector<std::size_t>& in, const std::string& value,
                                    const std::string& var, bool allow_uuid,
                                    std::vector<std::string>& notes) {
  std::vector<std::size_t> out;
  std::string v = trim(value);
  if (v.empty()) {
    notes.push_back(fmt::format("{} is set but empty: no GPU is visible", var));
    return out;
  }
  std::set<std::size_t> used;
  for (const auto& raw : split(v, ',')) {
    std::string token = trim(raw);
    std::optional<std::size_t> pick;
    if (all_digits(token) && token.size() < 7 && std::stoul(token) < in.size()) {
      pick = std::stoul(token);
    } else if (allow_uuid && token.rfind("GPU-", 0) == 0) {
      for (std::size_t k = 0; k < in.size(); ++k) {
        if (!all[in[k]].uuid.empty() && all[in[k]].uuid == token) pick = k;
      }
    }
    if (!pick || !used.insert(*pick).second) {
      notes.push_back(fmt::format(
          "{}={}: entry '{}' is invalid, out of range or repeated, so it and the entries after "
          "it are ignored",
          var, v, token));
      break;
    }
    out.push_back(in[*pick]);
  }
  return out;
}

}  // namespace

std::vector<KfdGpu> read_kfd_topology(const std::string& nodes_dir) {
  std::vector<int> nodes;
  if (DIR* dir = ::opendir(nodes_dir.c_str())) {
    while (dirent* e = ::readdir(dir)) {
      std::string n = e->d_name;
      if (all_digits(n)) nodes.push_back(std::stoi(n));
    }
    ::closedir(dir);
  }
  std::sort(nodes.begin(), nodes.end());
  std::vector<KfdGpu> gpus;
  for (int node : nodes) {
    std::ifstream props(fmt::format("{}/{}/properties", nodes_dir, node));
    if (!props) continue;
    long long simd_count = 0;
    unsigned long long unique_id = 0;
    long long gpu_id = 0;
    std::string line;
    while (std::getline(props, line)) {
      std::istringstream ls(line);
      std::string key;
      ls >> key;
      if (key == "simd_count")
        ls >> simd_count;
      else if (key == "unique_id")
        ls >> unique_id;
      else if (key == "gpu_id")
        ls >> gpu_id;
    }
    if (simd_count <= 0) continue;  // a CPU node
    KfdGpu g;
    g.node = node;
    g.gpu_id = gpu_id;
    if (unique_id != 0) g.uuid = fmt::format("GPU-{:016x}", unique_id);
    std::ifstream name_file(fmt::format("{}/{}/name", nodes_dir, node));
    std::getline(name_file, g.name);
    g.name = trim(g.name);
    gpus.push_back(std::move(g));
  }
  return gpus;
}

VisibleSelection select_visible_amd(const std::vector<KfdGpu>& gpus, const EnvMap& env) {
  VisibleSelection sel;
  std::vector<std::size_t> idx(gpus.size());
  for (std::size_t i = 0; i < gpus.size(); ++i) idx[i] = i;
  if (auto rocr = env_get(env, "ROCR_VISIBLE_DEVICES")) {
    idx = apply_list(gpus, idx, *rocr, "ROCR_VISIBLE_DEVICES", true, sel.notes);
  }
  // HIP honours HIP_VISIBLE_DEVICES, and CUDA_VISIBLE_DEVICES as its alias.
  auto hip = env_get(env, "HIP_VISIBLE_DEVICES");
  const char* hip_var = "HIP_VISIBLE_DEVICES";
  if (!hip) {
    hip = env_get(env, "CUDA_VISIBLE_DEVICES");
    hip_var = "CUDA_VISIBLE_DEVICES";
  }
  if (hip) idx = apply_list(gpus, idx, *hip, hip_var, false, sel.notes);
  for (std::size_t physical : idx) {
    const KfdGpu& k = gpus[physical];
    GpuInfo g;
    g.index = static_cast<int>(sel.gpus.size());
    g.id = std::to_string(physical);
    g.name = k.name.empty() ? "AMD GPU" : "AMD " + k.name;
    g.vendor = "amd";
    g.uuid = k.uuid;
    sel.gpus.push_back(std::move(g));
  }
  return sel;
}

AmdGpuProbe::AmdGpuProbe(std::string nodes_dir) : nodes_dir_(std::move(nodes_dir)) {}

GpuInventory AmdGpuProbe::probe(const EnvMap& env) {
  GpuInventory inv;
  auto all = read_kfd_topology(nodes_dir_);
  if (all.empty()) {
    inv.source = "none";
    inv.notes.push_back(fmt::format("no AMD GPU in {} (no amdgpu/KFD driver)", nodes_dir_));
    return inv;
  }
  auto sel = select_visible_amd(all, env);
  inv.gpus = std::move(sel.gpus);
  inv.notes = std::move(sel.notes);
  inv.source = "kfd";
  std::ifstream version("/sys/module/amdgpu/version");
  std::getline(version, inv.driver_version);
  return inv;
}

}  // namespace gpurun::launcher
