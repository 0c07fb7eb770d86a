#include "init.h"

#include <catch2/catch.hpp>

#include "device.h"
#include "gpurun/common/error.h"
#include "gpurun/rendezvous/memory_store.h"
#include "test_util.h"

using namespace gpurun;
using namespace gpurun::worker;
using namespace gpurun::worker::detail;
using gpurun::worker::testing::join_errors;
using gpurun::worker::testing::run_ranks;

TEST_CASE("backend decision", "[init]") {
  using V = GpuVote;
  CHECK(decide_backend(Backend::kAuto, "", {V::kCuda, V::kCuda}, true) == Backend::kNccl);
  CHECK(decide_backend(Backend::kAuto, "", {V::kCuda, V::kCuda}, false) == Backend::kGloo);
  CHECK(decide_backend(Backend::kAuto, "", {V::kCuda, V::kCpu}, true) == Backend::kGloo);
  CHECK(decide_backend(Backend::kAuto, "", {V::kFakeCuda, V::kFakeCuda}, true) == Backend::kGloo);
  CHECK(decide_backend(Backend::kGloo, "", {V::kCuda, V::kCuda}, true) == Backend::kGloo);
  CHECK(decide_backend(Backend::kNccl, "", {V::kCuda}, true) == Backend::kNccl);
  try {
    decide_backend(Backend::kNccl, "GPURUN_BACKEND=nccl", {V::kCuda, V::kCuda, V::kCpu, V::kCpu},
                   true);
    FAIL("expected ConfigError");
  } catch (const ConfigError& e) {
    CHECK_THAT(e.what(), Catch::Contains("GPURUN_BACKEND=nccl but ranks 2,3 have no GPU"));
    CHECK_THAT(e.what(), Catch::Contains("GPURUN_BACKEND=auto"));
  }
  CHECK_THROWS_WITH(decide_backend(Backend::kNccl, "GPURUN_BACKEND=nccl", {V::kCuda}, false),
                    Catch::Contains("built without NCCL"));
  CHECK_THROWS_WITH(decide_backend(Backend::kNccl, "X", {V::kFakeCuda}, true),
                    Catch::Contains("fake GPUs"));
  CHECK(parse_backend("NCCL", "x") == Backend::kNccl);
  CHECK_THROWS_WITH(
      parse_backend("mpi", "GPURUN_BACKEND"),
      Catch::Contains("GPURUN_BACKEND='mpi' is not a backend; use nccl, gloo or auto"));
}

TEST_CASE("NCCL descriptor checks are opt-in, as torch's DETAIL mode", "[init]") {
  CHECK_FALSE(nccl_check_descriptors({}));
  CHECK(nccl_check_descriptors({{"GPURUN_COMM_CHECK", "1"}}));
  CHECK(nccl_check_descriptors({{"TORCH_DISTRIBUTED_DEBUG", "DETAIL"}}));
  CHECK_FALSE(nccl_check_descriptors({{"TORCH_DISTRIBUTED_DEBUG", "INFO"}}));
  CHECK_FALSE(
      nccl_check_descriptors({{"TORCH_DISTRIBUTED_DEBUG", "DETAIL"}, {"GPURUN_COMM_CHECK", "0"}}));
}

TEST_CASE("timeout resolution", "[init]") {
  InitOptions o;
  CHECK(resolve_timeout(o, {}) == kDefaultTimeout);
  CHECK(resolve_timeout(o, {{"GPURUN_TIMEOUT", "90s"}}) == std::chrono::seconds(90));
  CHECK(resolve_timeout(o, {{"GPURUN_TIMEOUT", "90s"}, {"GPURUN_COMM_TIMEOUT", "2s"}}) ==
        std::chrono::seconds(2));
  o.timeout = std::chrono::milliseconds(5);
  CHECK(resolve_timeout(o, {{"GPURUN_TIMEOUT", "90s"}}) == std::chrono::milliseconds(5));
  CHECK_THROWS_AS(resolve_timeout(InitOptions{}, {{"GPURUN_TIMEOUT", "soon"}}), ConfigError);
  // 0 is no limit, never an instant failure.
  CHECK(resolve_timeout(InitOptions{}, {{"GPURUN_COMM_TIMEOUT", "0"}}) == gpurun::kNoTimeout);
  CHECK(resolve_timeout(InitOptions{}, {{"GPURUN_TIMEOUT", "0s"}}) == gpurun::kNoTimeout);
}

TEST_CASE("device choice", "[init]") {
  LaunchInfo info;
  info.rank = 2;
  info.local_rank = 2;
  info.world_size = info.local_world_size = 4;
  CHECK(choose_device(info, {}, true, 0).device.str() == "cpu");
  CHECK(choose_device(info, {}, true, 4).device.str() == "cuda:2");
  auto hybrid = choose_device(info, {}, true, 2);  // CUDA_VISIBLE_DEVICES=0,1 with 4 ranks
  CHECK(hybrid.device.str() == "cpu");
  CHECK_THAT(hybrid.why, Catch::Contains("hybrid"));
  CHECK(choose_device(info, {}, false, 4).device.str() == "cpu");
  CHECK(choose_device(info, {{"GPURUN_GPU", ""}}, true, 4).device.str() == "cpu");
  CHECK(choose_device(info, {{"GPURUN_GPU", "1"}}, true, 4).device.str() == "cuda:1");
  CHECK(choose_device(info, {{"GPURUN_GPU", "5"}}, true, 1).device.str() == "cuda:0");
  auto fake = choose_device(info, {{"GPURUN_FAKE_GPU_RANKS", "0,2"}}, true, 0);
  CHECK(fake.device.str() == "cuda:2");
  CHECK(fake.fake);
  CHECK_FALSE(choose_device(info, {{"GPURUN_FAKE_GPU_RANKS", "0,1"}}, true, 0).device.is_cuda());
  CHECK_THROWS_AS(choose_device(info, {{"GPURUN_FAKE_GPU_RANKS", "a"}}, true, 0), ConfigError);
}

TEST_CASE("init_with: a 1-rank job needs no server", "[init]") {
  auto ctx = init_with({}, nullptr, {});
  CHECK(ctx->world_size() == 1);
  CHECK(ctx->is_root());
  CHECK(ctx->backend() == Backend::kGloo);
  CHECK(ctx->device().str() == "cpu");
  std::vector<float> v{1, 2, 3};
  ctx->comm().all_reduce(std::span(v), ReduceOp::kAvg);
  CHECK(v == std::vector<float>{1, 2, 3});
  ctx->comm().barrier();
  ctx->store().set("k", "v");
  CHECK(rendezvous::to_string(ctx->store().get("k")) == "v");
}

TEST_CASE("init_with: store is scoped per run and attempt", "[init]") {
  auto base = std::make_shared<rendezvous::MemoryStore>();
  EnvMap env{{"TORCHELASTIC_RUN_ID", "r1"}, {"TORCHELASTIC_RESTART_COUNT", "0"}};
  auto a0 = init_with(env, base, {});
  a0->store().set("key", "old");
  CHECK(base->check({"gpurun/r1/attempt_0/key"}));
  env["TORCHELASTIC_RESTART_COUNT"] = "1";
  auto a1 = init_with(env, base, {});
  CHECK_FALSE(a1->store().check({"key"}));  // a restarted group never sees the old attempt
  a1->store().set("key", "new");
  CHECK(rendezvous::to_string(a0->store().get("key")) == "old");
  env["TORCHELASTIC_RUN_ID"] = "r2";
  env["TORCHELASTIC_RESTART_COUNT"] = "0";
  auto other = init_with(env, base, {});
  CHECK_FALSE(other->store().check({"key"}));
}

TEST_CASE("init_with: GPURUN_BACKEND=nccl without GPUs is a ConfigError on every rank", "[init]") {
  auto errs = run_ranks(2, [](Context&, int) {}, {{"GPURUN_BACKEND", "nccl"}});
  for (const auto& e : errs) {
    CHECK_THAT(e, Catch::Contains("GPURUN_BACKEND=nccl but"));
  }
  auto bad = run_ranks(1, [](Context&, int) {}, {{"GPURUN_BACKEND", "mpi"}});
  CHECK_THAT(bad[0], Catch::Contains("GPURUN_BACKEND='mpi'"));
}

TEST_CASE("init_with: a rank that never joins is named", "[init]") {
  auto store = std::make_shared<rendezvous::MemoryStore>();
  InitOptions o;
  o.timeout = std::chrono::milliseconds(300);
  std::vector<std::string> errs(2);
  std::vector<std::thread> ts;
  for (int r = 0; r < 2; ++r) {  // world of 3; rank 2 never starts
    ts.emplace_back([&, r] {
      try {
        init_with(testing::rank_env(r, 3, "nojoin"), store, o);
      } catch (const std::exception& e) {
        errs[static_cast<std::size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK_THAT(errs[0], Catch::Contains("rank 2 never joined"));
  CHECK_THAT(errs[1], Catch::Contains("rank 2 never joined"));
  CHECK_THAT(errs[1], Catch::Contains("setup/default/backend"));
}

TEST_CASE("init_with: hybrid group (fake GPUs on ranks 0,1) agrees on gloo and stages", "[init]") {
  auto errs = run_ranks(4,
                        [](Context& ctx, int r) {
                          testing::expect(ctx.backend() == Backend::kGloo, "backend is not gloo");
                          testing::expect(ctx.device().is_cuda() == (r < 2),
                                          "device " + ctx.device().str());
                          std::vector<double> v(37, r + 1.0);
                          ctx.comm().all_reduce(std::span(v), ReduceOp::kSum);
                          for (double x : v) testing::expect(x == 10.0, fmt::format("sum {}", x));
                          auto all = ctx.comm().all_gather(std::span<const double>(v.data(), 2));
                          testing::expect(all.size() == 8 && all[7] == 10.0, "all_gather");
                        },
                        {{"GPURUN_FAKE_GPU_RANKS", "0,1"}});
  CHECK(join_errors(errs) == "");
}
