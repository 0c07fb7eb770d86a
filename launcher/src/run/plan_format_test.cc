#include <catch2/catch.hpp>

#include "cli/config.h"
#include "probe/gpu_probe.h"

using namespace gpurun;
using namespace gpurun::launcher;

TEST_CASE("format_plan shows ranks, GPUs, commands, gpurun's env and log paths", "[plan]") {
  EnvMap base{{"HOME", "/home/u"}, {"CUDA_VISIBLE_DEVICES", "0,1"}};
  auto cfg = resolve_config({"--nproc-per-node", "3", "--log-dir", "/logs", "-t", "0:3", "train.py",
                             "--name", "it's ${local_rank}"},
                            base);
  auto gpus = FakeGpuProbe(2).probe(base);
  AttemptFacts f;
  f.run_id = "none";
  f.master_addr = "127.0.0.1";
  f.master_port = 0;
  f.attempt_log_dir = "/logs/none_ab12/attempt_0";
  auto workers = plan_workers(cfg, 3, gpus, f, base);
  std::string plan = format_plan(cfg, f, workers, gpus);
  INFO(plan);
  CHECK_THAT(plan, Catch::StartsWith("gpurun plan (dry run, nothing started): 3 workers on node 0 "
                                     "of 1, world size 3\n"));
  CHECK_THAT(plan, Catch::Contains("GPUs:    2 visible via fake"));
  CHECK_THAT(plan, Catch::Contains("[1] Fake GPU (id 1)"));
  CHECK_THAT(plan, Catch::Contains("store:   127.0.0.1:0 (a free port is bound"));
  CHECK_THAT(plan, Catch::Contains("\nrank 0 (local rank 0)  GPU 0: Fake GPU (id 0)\n"));
  CHECK_THAT(plan, Catch::Contains("\nrank 2 (local rank 2)  no GPU\n"));
  CHECK_THAT(plan, Catch::Contains("  command: python3 -u train.py --name 'it'\\''s 1'\n"));
  CHECK_THAT(plan, Catch::Contains("RANK=2 LOCAL_RANK=2 WORLD_SIZE=3"));
  CHECK_THAT(plan,
             Catch::Contains("TORCHELASTIC_ERROR_FILE=/logs/none_ab12/attempt_0/1/error.json"));
  CHECK_THAT(plan, Catch::Contains("CUDA_VISIBLE_DEVICES=0,1"));
  CHECK_THAT(plan, Catch::Contains("GPURUN_GPU=''"));  // rank 2
  CHECK_THAT(plan, !Catch::Contains("HOME="));         // inherited env is not listed
  CHECK_THAT(plan,
             Catch::Contains("  stdout:  console + /logs/none_ab12/attempt_0/0/stdout.log\n"));
  CHECK_THAT(plan, Catch::Contains("  stderr:  console\n"));
  // env lines are wrapped to stay readable
  for (const auto& line : split(plan, '\n')) {
    if (line.rfind("           note:", 0) != 0) CHECK(line.size() <= 100);
  }
}

TEST_CASE("format_plan marks dropped streams", "[plan]") {
  auto cfg = resolve_config({"--local-ranks-filter", "0", "./app"}, {});
  AttemptFacts f;
  f.master_addr = "h";
  f.master_port = 1234;
  auto workers = plan_workers(cfg, 2, GpuInventory{}, f, {});
  std::string plan = format_plan(cfg, f, workers, GpuInventory{});
  CHECK_THAT(plan, Catch::Contains("store:   h:1234\n"));
  CHECK_THAT(plan, Catch::Contains("  stdout:  dropped"));
  CHECK_THAT(plan, Catch::Contains("  command: ./app\n"));
}
