// Three lines of SDK use, built against the installed tree.
#include <gpurun/worker/console.h>
#include <gpurun/worker/worker.h>

#include <vector>

int main() {
  return gpurun::worker::run_main([] {
    auto ctx = gpurun::init();
    std::vector<float> grads{1.0f, 2.0f, 3.0f};
    ctx->comm().all_reduce(std::span(grads), gpurun::worker::ReduceOp::kAvg);
    gpurun::worker::log0(*ctx, "consumer ok: rank {}/{} backend {} device {} grads[2]={}",
                         ctx->rank(), ctx->world_size(), to_string(ctx->backend()),
                         ctx->device().str(), grads[2]);
    return 0;
  });
}
