// GPU tests (label `gpu`): run only where a CUDA GPU is visible; they fail (never pass vacuously)
// when none is. Built only with GPURUN_HAS_CUDA. ctest -LE gpu skips them on CPU-only machines.
#include <cuda_runtime_api.h>

#include <catch2/catch.hpp>

#include "device.h"
#include "gpurun/rendezvous/memory_store.h"
#include "test_util.h"

using namespace gpurun;
using namespace gpurun::worker;
using gpurun::worker::testing::expect;
using gpurun::worker::testing::join_errors;

namespace {

void require_gpu() {
  int n = detail::cuda_device_count();
  INFO("no CUDA device visible: this test needs a GPU (run ctest -LE gpu on CPU-only machines)");
  REQUIRE(n > 0);
}

template <typename T>
struct DeviceBuffer {
  explicit DeviceBuffer(const std::vector<T>& host) : n(host.size()) {
    void* p = nullptr;
    expect(cudaMalloc(&p, std::max<std::size_t>(1, n) * sizeof(T)) == cudaSuccess, "cudaMalloc");
    ptr = static_cast<T*>(p);
    if (n)
      expect(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess,
             "h2d");
  }
  explicit DeviceBuffer(std::size_t count) : DeviceBuffer(std::vector<T>(count)) {}
  ~DeviceBuffer() { cudaFree(ptr); }
  std::vector<T> host() const {
    std::vector<T> out(n);
    if (n)
      expect(cudaMemcpy(out.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess,
             "d2h");
    return out;
  }
  T* ptr = nullptr;
  std::size_t n;
};

}  // namespace

TEST_CASE("gpu: device pick is cuda:LOCAL_RANK", "[gpu]") {
  require_gpu();
  auto ctx = init_with({}, nullptr, {});
  CHECK(ctx->device().str() == "cuda:0");
  LaunchInfo info;
  info.local_rank = 0;
  CHECK(detail::choose_device(info, {}, true, detail::cuda_device_count()).device.is_cuda());
}

#if GPURUN_HAS_NCCL
TEST_CASE("gpu: NCCL world size 1, every collective", "[gpu]") {
  require_gpu();
  auto ctx = init_with({}, nullptr, {});
  REQUIRE(ctx->backend() == Backend::kNccl);
  auto& c = ctx->comm();
  DeviceBuffer<float> v(std::vector<float>{1, 2, 3});
  c.all_reduce(v.ptr, 3, DataType::kFloat32, ReduceOp::kAvg);
  CHECK(v.host() == std::vector<float>{1, 2, 3});
  DeviceBuffer<std::uint16_t> h(std::vector<std::uint16_t>{0x3c00, 0x4000});  // fp16 1.0, 2.0
  c.all_reduce(h.ptr, 2, DataType::kFloat16, ReduceOp::kSum);
  CHECK(h.host() == std::vector<std::uint16_t>{0x3c00, 0x4000});
  c.broadcast(v.ptr, 3, DataType::kFloat32, 0);
  DeviceBuffer<float> out(3);
  c.all_gather(v.ptr, out.ptr, 3, DataType::kFloat32);
  CHECK(out.host() == std::vector<float>{1, 2, 3});
  DeviceBuffer<float> g(3);
  c.gather(v.ptr, g.ptr, {3}, DataType::kFloat32, 0);
  CHECK(g.host() == std::vector<float>{1, 2, 3});
  DeviceBuffer<float> rs(3);
  c.reduce_scatter(v.ptr, rs.ptr, 3, DataType::kFloat32, ReduceOp::kMax);
  CHECK(rs.host() == std::vector<float>{1, 2, 3});
  c.barrier();
}
#endif

TEST_CASE("gpu: hybrid group, rank 0 on the GPU, rank 1 on CPU, Gloo with staging", "[gpu]") {
  require_gpu();
  auto store = std::make_shared<rendezvous::MemoryStore>();
  std::vector<std::string> errs(2);
  std::vector<std::thread> ts;
  for (int r = 0; r < 2; ++r) {
    ts.emplace_back([&, r] {
      try {
        EnvMap extra;
        if (r == 1) extra["GPURUN_GPU"] = "";  // gpurun gave rank 1 no GPU
        InitOptions o;
        o.timeout = std::chrono::seconds(30);
        auto ctx = init_with(testing::rank_env(r, 2, "gpuhybrid", extra), store, o);
        expect(ctx->backend() == Backend::kGloo, "backend " + to_string(ctx->backend()));
        expect(ctx->device().is_cuda() == (r == 0), "device " + ctx->device().str());
        std::vector<float> host(1000, static_cast<float>(r + 1));
        if (r == 0) {
          DeviceBuffer<float> d(host);
          ctx->comm().all_reduce(d.ptr, host.size(), DataType::kFloat32, ReduceOp::kSum);
          for (float x : d.host()) expect(x == 3.0f, "gpu rank sum");
        } else {
          ctx->comm().all_reduce(std::span(host));
          for (float x : host) expect(x == 3.0f, "cpu rank sum");
        }
      } catch (const std::exception& e) {
        errs[static_cast<std::size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(join_errors(errs) == "");
}
