// An outside program built against the installed SDK: the typed helpers a user writes first, then
// which CUDA libraries this process has mapped (none on a CPU rank: the SDK links none and loads
// its CUDA module only for a rank on a GPU). One line per rank.
#include <gpurun/worker/worker.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

int main() {
  return gpurun::worker::run_main([] {
    auto ctx = gpurun::init();
    const float k = static_cast<float>(ctx->rank() + 1);
    std::vector<float> grads{1.0f * k, 2.0f * k, 3.0f * k};
    ctx->comm().all_reduce(grads, gpurun::worker::ReduceOp::kAvg);
    std::string tag = ctx->is_root() ? "from-rank-0" : "";
    ctx->comm().broadcast(tag);
    const auto ranks = ctx->comm().all_gather_value(static_cast<std::uint64_t>(ctx->rank()));
    std::string mapped;
    std::ifstream maps("/proc/self/maps");
    for (std::string line; std::getline(maps, line);) {
      for (const char* lib : {"libcudart", "libnccl", "libgpurun_worker_cuda"}) {
        if (line.find(lib) != std::string::npos && mapped.find(lib) == std::string::npos) {
          mapped += std::string(" ") + lib;
        }
      }
    }
    fmt::print(
        "consumer ok: rank {}/{} backend {} device {} grads[2]={} tag={} ranks={} "
        "cuda libraries mapped:{}\n",
        ctx->rank(), ctx->world_size(), to_string(ctx->backend()), ctx->device().str(), grads[2],
        tag, ranks.size(), mapped.empty() ? " none" : mapped);
    return 0;
  });
}
