// The CUDA module loader (cuda_loader.cc): where it looks, what it says when the module is missing
// or foreign, and (in CUDA builds) that the real module loads and matches this build. Loading
// needs libcudart/libnccl, not a GPU.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cuda_module.h"
#include "gpurun/common/error.h"

using namespace gpurun;
using namespace gpurun::worker;
using namespace gpurun::worker::detail;

namespace {

std::filesystem::path temp_dir() {
  auto d =
      std::filesystem::temp_directory_path() / ("gpurun_loader_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d;
}

}  // namespace

TEST_CASE("cuda loader: GPURUN_WORKER_CUDA_MODULE alone, else loader path and exe-relative dirs",
          "[cuda_loader]") {
  CHECK(cuda_module_candidates({{"GPURUN_WORKER_CUDA_MODULE", "/x/y.so"}}) ==
        std::vector<std::string>{"/x/y.so"});
  auto c = cuda_module_candidates({});
  REQUIRE(c.size() >= 3);
  CHECK(c[0] == kCudaModuleFile);  // bare: LD_LIBRARY_PATH and the program's RUNPATH
  const auto exe_dir = std::filesystem::read_symlink("/proc/self/exe").parent_path();
  CHECK(c[1] == (exe_dir / kCudaModuleFile).string());
  CHECK(c[2].find("/gpurun/libgpurun_worker_cuda.so") != std::string::npos);
}

TEST_CASE("cuda loader: every failed candidate is named with its reason", "[cuda_loader]") {
  const auto dir = temp_dir();
  const auto junk = dir / "libgpurun_worker_cuda.so";
  std::ofstream(junk) << "not an ELF file";
  std::string tried;
  // A missing file, a file that is not a library, a library without the entry point.
  const CudaModule* m = try_load_cuda_module(
      {(dir / "missing" / kCudaModuleFile).string(), junk.string(), "libm.so.6"}, &tried);
  CHECK(m == nullptr);
  INFO(tried);
  CHECK(tried.find((dir / "missing" / kCudaModuleFile).string() + ": not found") !=
        std::string::npos);
  CHECK(tried.find(junk.string() + ": ") != std::string::npos);
  CHECK(tried.find("no symbol gpurun_worker_cuda_module_v1") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("cuda loader: a rank on a GPU without the module gets the paths and the fix",
          "[cuda_loader]") {
  const std::string missing = "/nonexistent/gpurun/libgpurun_worker_cuda.so";
  try {
    load_cuda_module({{"GPURUN_WORKER_CUDA_MODULE", missing}}, "cuda:1");
    FAIL("load_cuda_module did not throw");
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("this rank uses cuda:1") == 0);
#if GPURUN_TEST_CUDA_BUILD
    CHECK(msg.find(missing + ": not found") != std::string::npos);
    CHECK(msg.find("GPURUN_WORKER_CUDA_MODULE=") != std::string::npos);
    CHECK(msg.find("CUDA_VISIBLE_DEVICES=") != std::string::npos);
#else
    CHECK(msg.find("built without CUDA") != std::string::npos);
#endif
  }
}

#ifdef GPURUN_TEST_CUDA_MODULE
TEST_CASE("cuda loader: the built module loads and matches this build", "[cuda_loader]") {
  std::string tried;
  const CudaModule* m = try_load_cuda_module({GPURUN_TEST_CUDA_MODULE}, &tried);
  INFO(tried);
  REQUIRE(m != nullptr);
  CHECK(m->abi == kCudaModuleAbi);
  CHECK(m->config_size == sizeof(NcclConfig));
  CHECK(m->make_cuda_memory != nullptr);
  CHECK(m->has_nccl == (m->make_nccl_communicator != nullptr));
  // The bare name finds it through this test's build RUNPATH, as a consumer's RUNPATH would.
  tried.clear();
  CHECK(try_load_cuda_module({kCudaModuleFile}, &tried) != nullptr);
}
#endif
