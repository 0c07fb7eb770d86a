// The core SDK's only contact with CUDA, all at run time: the GPU count through the driver
// (libcuda.so.1, dlopened: a machine without it has 0 GPUs) and the CUDA module
// (libgpurun_worker_cuda.so, see cuda_module.h), loaded only for a rank that uses a real GPU.
#include <dlfcn.h>
#include <fmt/format.h>
#include <link.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "cuda_module.h"
#include "device.h"
#include "gpurun/common/error.h"
#include "gpurun/common/log.h"

#ifndef GPURUN_WORKER_CUDA_MODULE_BUILT
#define GPURUN_WORKER_CUDA_MODULE_BUILT 0
#endif
#ifndef GPURUN_VERSION_STRING
#define GPURUN_VERSION_STRING "unknown"
#endif
#ifndef GPURUN_INSTALL_LIBDIR
#define GPURUN_INSTALL_LIBDIR "lib"
#endif
#ifndef GPURUN_INSTALL_FULL_LIBDIR
#define GPURUN_INSTALL_FULL_LIBDIR "/usr/local/lib"
#endif

namespace gpurun::worker::detail {
namespace {

// The directories dlopen searches for a bare name from this program: LD_LIBRARY_PATH, RUNPATH
// and the system directories (then ld.so.cache).
std::string loader_search_path() {
  void* self = ::dlopen(nullptr, RTLD_NOW);
  if (self == nullptr) return "unknown";
  struct Close {
    void* h;
    ~Close() { ::dlclose(h); }
  } close{self};
  Dl_serinfo probe{};
  if (::dlinfo(self, RTLD_DI_SERINFOSIZE, &probe) != 0) return "unknown";
  std::vector<std::max_align_t> buf(probe.dls_size / sizeof(std::max_align_t) + 1);
  auto* info = reinterpret_cast<Dl_serinfo*>(buf.data());
  if (::dlinfo(self, RTLD_DI_SERINFOSIZE, info) != 0 || ::dlinfo(self, RTLD_DI_SERINFO, info) != 0)
    return "unknown";
  std::string out;
  for (unsigned i = 0; i < info->dls_cnt; ++i) {
    if (!out.empty()) out += ", ";
    out += info->dls_serpath[i].dls_name;
  }
  return out + (out.empty() ? "" : ", ") + "ld.so.cache";
}

std::string loaded_path(void* handle, const std::string& fallback) {
  link_map* map = nullptr;
  if (::dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr && map->l_name != nullptr &&
      *map->l_name != '\0')
    return map->l_name;
  return fallback;
}

}  // namespace

int cuda_device_count() {
  if (!GPURUN_WORKER_CUDA_MODULE_BUILT) return 0;  // this SDK cannot drive a GPU anyway
  // The driver API, not cudart: libcuda.so.1 comes with the NVIDIA driver, and where it is
  // missing there is no usable GPU. It honours CUDA_VISIBLE_DEVICES like cudaGetDeviceCount.
  // Loaded once and never unloaded (the module's cudart uses the same driver).
  static void* const driver = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (driver == nullptr) return 0;
  using InitFn = int (*)(unsigned);
  using CountFn = int (*)(int*);
  auto cu_init = reinterpret_cast<InitFn>(::dlsym(driver, "cuInit"));
  auto cu_count = reinterpret_cast<CountFn>(::dlsym(driver, "cuDeviceGetCount"));
  int n = 0;
  if (cu_init == nullptr || cu_count == nullptr || cu_init(0) != 0 || cu_count(&n) != 0) return 0;
  return n;
}

std::vector<std::string> cuda_module_candidates(const EnvMap& env) {
  if (auto file = env_get(env, "GPURUN_WORKER_CUDA_MODULE"); file && !file->empty()) {
    return {*file};
  }
  std::vector<std::string> out{kCudaModuleFile};
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const std::filesystem::path dir = exe.parent_path();
    out.push_back((dir / kCudaModuleFile).string());
    out.push_back((dir.parent_path() / GPURUN_INSTALL_LIBDIR / "gpurun" / kCudaModuleFile)
                      .lexically_normal());
  }
  out.push_back((std::filesystem::path(GPURUN_INSTALL_FULL_LIBDIR) / "gpurun" / kCudaModuleFile)
                    .lexically_normal());
  std::vector<std::string> unique;
  for (auto& c : out) {
    if (std::find(unique.begin(), unique.end(), c) == unique.end()) unique.push_back(c);
  }
  return unique;
}

const CudaModule* try_load_cuda_module(const std::vector<std::string>& candidates,
                                       std::string* tried) {
  auto note = [&](const std::string& line) {
    if (tried != nullptr) *tried += "\n  " + line;
  };
  for (const std::string& c : candidates) {
    const bool bare = c.find('/') == std::string::npos;
    const std::string label =
        bare ? fmt::format("{} (the dynamic loader's search path: {})", c, loader_search_path())
             : c;
    if (!bare && !std::filesystem::exists(c)) {
      note(label + ": not found");
      continue;
    }
    void* handle = ::dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = ::dlerror();
      note(label + ": " + (why != nullptr ? why : "dlopen failed"));
      continue;
    }
    const std::string path = loaded_path(handle, c);
    auto entry = reinterpret_cast<CudaModuleEntry>(::dlsym(handle, kCudaModuleSymbol));
    if (entry == nullptr) {
      note(fmt::format("{}: no symbol {} (not a gpurun CUDA module, or one of another version)",
                       path, kCudaModuleSymbol));
      ::dlclose(handle);
      continue;
    }
    const CudaModule* m = entry();
    if (m == nullptr || m->abi != kCudaModuleAbi || m->version == nullptr ||
        std::string_view(m->version) != GPURUN_VERSION_STRING ||
        m->config_size != sizeof(NcclConfig)) {
      // Not unloaded: its CUDA libraries' initializers ran; a leaked handle is harmless.
      note(
          fmt::format("{}: built by another gpurun (version {}, module ABI {}; this program: {}, "
                      "ABI {})",
                      path, m != nullptr && m->version != nullptr ? m->version : "?",
                      m != nullptr ? m->abi : -1, GPURUN_VERSION_STRING, kCudaModuleAbi));
      continue;
    }
    GPURUN_LOG_INFO("init", "CUDA module {} loaded (NCCL {})", path, m->has_nccl ? "yes" : "no");
    return m;  // never unloaded: communicators and device memory run its code
  }
  return nullptr;
}

const CudaModule& load_cuda_module(const EnvMap& env, const std::string& device) {
  static std::mutex mu;
  static const CudaModule* loaded = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (loaded == nullptr) {
    if (!GPURUN_WORKER_CUDA_MODULE_BUILT) {
      throw ConfigError(fmt::format(
          "this rank uses {} but the worker SDK was built without CUDA (no toolkit at build "
          "time); rebuild gpurun with -DGPURUN_WITH_CUDA=ON, or hide the GPUs "
          "(CUDA_VISIBLE_DEVICES=) to run this rank on the CPU",
          device));
    }
    std::string tried;
    loaded = try_load_cuda_module(cuda_module_candidates(env), &tried);
    if (loaded == nullptr) {
      throw ConfigError(fmt::format(
          "this rank uses {} but the worker SDK's CUDA module ({}) could not be loaded; tried:{}\n"
          "install gpurun with `cmake --install` (it puts the module in <prefix>/{}/gpurun, "
          "which find_package(gpurun) adds to the program's RUNPATH), or set "
          "GPURUN_WORKER_CUDA_MODULE=/path/to/{}; when it was found but libcudart or libnccl "
          "was not, add the CUDA and NCCL library directory to LD_LIBRARY_PATH; to run this rank "
          "on the CPU instead, hide the GPUs (CUDA_VISIBLE_DEVICES=) or pass "
          "InitOptions.use_gpu = false",
          device, kCudaModuleFile, tried, GPURUN_INSTALL_LIBDIR, kCudaModuleFile));
    }
  }
  loaded->set_log_prefix(log::prefix());
  return *loaded;
}

std::unique_ptr<Communicator> load_nccl_communicator(const NcclConfig& cfg) {
  const CudaModule& m = load_cuda_module(current_environment(), fmt::format("cuda:{}", cfg.device));
  if (!m.has_nccl || m.make_nccl_communicator == nullptr) {
    throw ConfigError(
        "the NCCL backend was chosen but the worker SDK's CUDA module was built without NCCL; "
        "use GPURUN_BACKEND=gloo, or rebuild gpurun where NCCL is installed");
  }
  return m.make_nccl_communicator(cfg);
}

}  // namespace gpurun::worker::detail
