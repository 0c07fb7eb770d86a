// load_cuda_engine: finds and dlopens libtrain_cuda_engine.so on first use (see engine.h).
#include <dlfcn.h>

#include <filesystem>
#include <stdexcept>
#include <string>

#include "engine.h"

namespace train {
namespace {

std::vector<std::string> default_dirs() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  const std::filesystem::path dir = exe.parent_path();
  return {dir.string(), (dir.parent_path() / "lib" / "gpurun").string()};
}

}  // namespace

std::unique_ptr<Engine> load_cuda_engine(int device, const ModelShape& shape,
                                         const OptimizerConfig& opt, std::uint64_t seed, bool tf32,
                                         std::vector<std::string> dirs) {
  // Loaded once per process and never unloaded: the engine's code must outlive every engine.
  static CreateCudaEngineFn create = nullptr;
  if (create == nullptr) {
    if (dirs.empty()) dirs = default_dirs();
    std::string tried;
    for (const std::string& dir : dirs) {
      const std::string path = (std::filesystem::path(dir) / kCudaEngineModule).string();
      if (!std::filesystem::exists(path)) {
        tried += "\n  " + path + ": not found";
        continue;
      }
      void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle == nullptr) {
        const char* why = dlerror();
        tried += "\n  " + path + ": " + (why ? why : "dlopen failed");
        continue;
      }
      void* sym = dlsym(handle, kCudaEngineSymbol);
      if (sym == nullptr) {
        tried +=
            "\n  " + path + ": no symbol " + kCudaEngineSymbol + " (a module from another build?)";
        dlclose(handle);
        continue;
      }
      create = reinterpret_cast<CreateCudaEngineFn>(sym);
      break;
    }
    if (create == nullptr) {
      throw std::runtime_error(
          "this rank uses a GPU but train's CUDA engine could not be loaded; tried:" + tried +
          "\nbuild with the CUDA toolkit present (it builds " + kCudaEngineModule +
          " next to train), or pass --cpu");
    }
  }
  return std::unique_ptr<Engine>(create(device, shape, opt, seed, tf32));
}

}  // namespace train
