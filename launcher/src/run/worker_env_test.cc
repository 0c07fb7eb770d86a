#include "run/worker_env.h"

#include <catch2/catch.hpp>
#include <set>

#include "cli/config.h"
#include "gpurun/common/worker_env_contract.h"

using namespace gpurun;
using namespace gpurun::launcher;
using Args = std::vector<std::string>;

namespace {

GpuInventory nvidia(std::vector<std::string> ids) {
  GpuInventory inv;
  inv.source = "nvml";
  for (std::size_t i = 0; i < ids.size(); ++i) {
    GpuInfo g;
    g.index = static_cast<int>(i);
    g.id = ids[i];
    g.vendor = "nvidia";
    inv.gpus.push_back(g);
  }
  return inv;
}

AttemptFacts facts(int world_size = 0) {
  AttemptFacts f;
  f.run_id = "run42";
  f.master_addr = "127.0.0.1";
  f.master_port = 29555;
  f.world_size = world_size;
  return f;
}

LaunchConfig cfg_for(const Args& args, const EnvMap& env = {}) { return resolve_config(args, env); }

std::string env_of(const WorkerSpec& w, const std::string& key) {
  auto it = w.env.find(key);
  return it == w.env.end() ? "<unset>" : it->second;
}

}  // namespace

TEST_CASE("resolve_nproc: number, cpu, auto, gpu", "[worker_env]") {
  auto none = GpuInventory{};
  auto two = nvidia({"0", "1"});
  CHECK(resolve_nproc(cfg_for({"--nproc-per-node", "3", "x"}), two, 8) == 3);
  CHECK(resolve_nproc(cfg_for({"--nproc-per-node", "cpu", "x"}), two, 8) == 8);
  CHECK(resolve_nproc(cfg_for({"--nproc-per-node", "auto", "x"}), two, 8) == 2);
  CHECK(resolve_nproc(cfg_for({"--nproc-per-node", "auto", "x"}), none, 8) == 8);
  CHECK(resolve_nproc(cfg_for({"--nproc-per-node", "gpu", "x"}), two, 8) == 2);
  none.notes.push_back("NVML not loadable: libnvidia-ml.so.1 not found");
  try {
    resolve_nproc(cfg_for({"--nproc-per-node", "gpu", "x"}), none, 8);
    FAIL("expected NoGpuError");
  } catch (const NoGpuError& e) {
    CHECK_THAT(e.what(), Catch::Contains("found no GPU (NVML not loadable"));
    CHECK_THAT(e.what(), Catch::Contains("gpurun info"));
  }
}

TEST_CASE("the full torchrun worker environment", "[worker_env]") {
  auto cfg =
      cfg_for({"--nproc-per-node", "4", "--max-restarts", "2", "--role", "trainer", "./app"});
  auto f = facts();
  f.restart_count = 1;
  f.attempt_log_dir = "/logs/run42_abc/attempt_1";
  EnvMap base{{"PATH", "/usr/bin"}, {"HOME", "/root"}};
  std::vector<std::string> notes;
  auto ws = plan_workers(cfg, 4, GpuInventory{}, f, base, &notes);
  REQUIRE(ws.size() == 4);
  for (int i = 0; i < 4; ++i) {
    const auto& w = ws[static_cast<std::size_t>(i)];
    INFO("local rank " << i);
    CHECK(w.local_rank == i);
    CHECK(w.rank == i);
    CHECK(env_of(w, "RANK") == std::to_string(i));
    CHECK(env_of(w, "LOCAL_RANK") == std::to_string(i));
    CHECK(env_of(w, "WORLD_SIZE") == "4");
    CHECK(env_of(w, "LOCAL_WORLD_SIZE") == "4");
    CHECK(env_of(w, "GROUP_RANK") == "0");
    CHECK(env_of(w, "GROUP_WORLD_SIZE") == "1");
    CHECK(env_of(w, "ROLE_RANK") == std::to_string(i));
    CHECK(env_of(w, "ROLE_NAME") == "trainer");
    CHECK(env_of(w, "ROLE_WORLD_SIZE") == "4");
    CHECK(env_of(w, "MASTER_ADDR") == "127.0.0.1");
    CHECK(env_of(w, "MASTER_PORT") == "29555");
    CHECK(env_of(w, "TORCHELASTIC_RUN_ID") == "run42");
    CHECK(env_of(w, "TORCHELASTIC_RESTART_COUNT") == "1");
    CHECK(env_of(w, "TORCHELASTIC_MAX_RESTARTS") == "2");
    CHECK(env_of(w, "TORCHELASTIC_ERROR_FILE") ==
          "/logs/run42_abc/attempt_1/" + std::to_string(i) + "/error.json");
    CHECK(env_of(w, "TORCHELASTIC_USE_AGENT_STORE") == "True");
    CHECK(env_of(w, "TORCH_NCCL_ASYNC_ERROR_HANDLING") == "1");
    CHECK(env_of(w, "NCCL_ASYNC_ERROR_HANDLING") == "1");
    CHECK(env_of(w, "OMP_NUM_THREADS") == "1");
    CHECK(env_of(w, "PYTHONUNBUFFERED") == "1");
    CHECK(env_of(w, "GPURUN_LAUNCHER") == "gpurun");
    CHECK(env_of(w, "GPURUN_GPU") == "");
    CHECK(env_of(w, "GPURUN_NUM_GPUS_VISIBLE") == "0");
    CHECK(env_of(w, "PATH") == "/usr/bin");  // inherited
    CHECK(env_of(w, "CUDA_VISIBLE_DEVICES") == "<unset>");
    CHECK(w.argv == Args{"./app"});
    CHECK_FALSE(w.gpu);
  }
  // The OMP warning is torchrun's text; no GPU note on a CPU-only machine.
  REQUIRE(notes.size() == 1);
  CHECK_THAT(notes[0], Catch::Contains("Setting OMP_NUM_THREADS environment variable for each "
                                       "process to be 1 in default"));
}

TEST_CASE("user-set values pass through, OMP only for nproc > 1", "[worker_env]") {
  auto cfg = cfg_for({"./app"});
  EnvMap base{{"OMP_NUM_THREADS", "8"},
              {"TORCH_NCCL_ASYNC_ERROR_HANDLING", "3"},
              {"NCCL_ASYNC_ERROR_HANDLING", "0"},
              {"PYTHONUNBUFFERED", ""},
              {"RANK", "99"}};
  std::vector<std::string> notes;
  auto ws = plan_workers(cfg, 2, GpuInventory{}, facts(), base, &notes);
  CHECK(env_of(ws[1], "OMP_NUM_THREADS") == "8");
  CHECK(env_of(ws[1], "TORCH_NCCL_ASYNC_ERROR_HANDLING") == "3");
  CHECK(env_of(ws[1], "NCCL_ASYNC_ERROR_HANDLING") == "0");
  CHECK(env_of(ws[1], "PYTHONUNBUFFERED") == "");
  CHECK(env_of(ws[1], "RANK") == "1");  // a stale inherited RANK is overwritten
  CHECK(notes.empty());
  notes.clear();
  auto one = plan_workers(cfg, 1, GpuInventory{}, facts(), {}, &notes);
  CHECK(env_of(one[0], "OMP_NUM_THREADS") == "<unset>");
  CHECK(notes.empty());
}

TEST_CASE("multi-node facts: global ranks and world size", "[worker_env]") {
  auto cfg = cfg_for({"--nnodes", "2", "--node-rank", "1", "./app"});
  auto f = facts(8);
  f.group_rank = 1;
  f.group_world_size = 2;
  f.base_global_rank = 4;
  auto ws = plan_workers(cfg, 4, GpuInventory{}, f, {});
  CHECK(ws[0].rank == 4);
  CHECK(env_of(ws[3], "RANK") == "7");
  CHECK(env_of(ws[3], "LOCAL_RANK") == "3");
  CHECK(env_of(ws[3], "WORLD_SIZE") == "8");
  CHECK(env_of(ws[3], "GROUP_RANK") == "1");
  CHECK(env_of(ws[3], "GROUP_WORLD_SIZE") == "2");
  CHECK(env_of(ws[3], "ROLE_RANK") == "7");
}

TEST_CASE("GPU per LOCAL_RANK, CUDA_VISIBLE_DEVICES unchanged by default", "[worker_env]") {
  auto cfg = cfg_for({"./app"});
  EnvMap base{{"CUDA_VISIBLE_DEVICES", "2,3"}};
  auto ws = plan_workers(cfg, 2, nvidia({"2", "3"}), facts(), base);
  CHECK(ws[0].gpu == 0);
  CHECK(ws[1].gpu == 1);
  CHECK(env_of(ws[1], "CUDA_VISIBLE_DEVICES") == "2,3");
  CHECK(env_of(ws[1], "GPURUN_GPU") == "1");
  CHECK(env_of(ws[1], "GPURUN_GPU_ID") == "3");
  CHECK(env_of(ws[1], "GPURUN_NUM_GPUS_VISIBLE") == "2");
}

TEST_CASE("per-worker-visible-devices narrows through the parent's list", "[worker_env]") {
  auto cfg = cfg_for({"--per-worker-visible-devices", "./app"});
  EnvMap base{{"CUDA_VISIBLE_DEVICES", "2,GPU-abcd"}};
  std::vector<std::string> notes;
  auto ws = plan_workers(cfg, 3, nvidia({"2", "GPU-abcd"}), facts(), base, &notes);
  CHECK(env_of(ws[0], "CUDA_VISIBLE_DEVICES") == "2");
  CHECK(env_of(ws[1], "CUDA_VISIBLE_DEVICES") == "GPU-abcd");
  CHECK(env_of(ws[2], "CUDA_VISIBLE_DEVICES") == "");  // no GPU: sees none, runs on CPU
  CHECK(env_of(ws[1], "LOCAL_RANK") == "1");           // unchanged, unlike --virtual-local-rank
  CHECK(env_of(ws[1], "GPURUN_GPU") == "0");           // its only GPU is device 0
  CHECK(env_of(ws[2], "GPURUN_GPU") == "");
  CHECK(ws[1].gpu == 1);
  REQUIRE(notes.size() == 2);
  CHECK(notes[1] ==
        "rank 2 will have no GPU and may fall back to CPU (3 workers, 2 GPUs visible "
        "via nvml)");
}

TEST_CASE("virtual-local-rank: LOCAL_RANK=0 and one GPU each", "[worker_env]") {
  auto cfg = cfg_for({"--virtual-local-rank", "./app"});
  auto ws = plan_workers(cfg, 2, nvidia({"0", "1"}), facts(), {});
  CHECK(env_of(ws[1], "LOCAL_RANK") == "0");
  CHECK(env_of(ws[1], "RANK") == "1");
  CHECK(env_of(ws[1], "CUDA_VISIBLE_DEVICES") == "1");
  CHECK(env_of(ws[1], "GPURUN_GPU") == "0");
  CHECK(ws[1].local_rank == 1);  // the spec keeps the real local rank (logs, filter)
}

TEST_CASE("AMD narrowing uses ROCR_VISIBLE_DEVICES", "[worker_env]") {
  auto inv = nvidia({"0", "1"});
  for (auto& g : inv.gpus) g.vendor = "amd";
  inv.source = "kfd";
  auto cfg = cfg_for({"--per-worker-visible-devices", "./app"});
  auto ws = plan_workers(cfg, 2, inv, facts(), {{"HIP_VISIBLE_DEVICES", "0,1"}});
  CHECK(env_of(ws[1], "ROCR_VISIBLE_DEVICES") == "1");
  CHECK(env_of(ws[1], "HIP_VISIBLE_DEVICES") == "<unset>");
}

TEST_CASE("more workers than GPUs: a note naming the ranks", "[worker_env]") {
  std::vector<std::string> notes;
  auto ws = plan_workers(cfg_for({"./app"}), 4, nvidia({"0", "1"}), facts(), {}, &notes);
  CHECK(ws[1].gpu == 1);
  CHECK_FALSE(ws[2].gpu);
  CHECK(env_of(ws[3], "GPURUN_GPU") == "");
  CHECK(env_of(ws[3], "GPURUN_GPU_ID") == "");
  REQUIRE(notes.size() == 2);
  CHECK(notes[1] ==
        "ranks 2,3 will have no GPU and may fall back to CPU (4 workers, 2 GPUs "
        "visible via nvml)");
  notes.clear();
  plan_workers(cfg_for({"./app"}), 8, nvidia({"0"}), facts(), {{"OMP_NUM_THREADS", "2"}}, &notes);
  REQUIRE(notes.size() == 1);
  CHECK_THAT(notes[0], Catch::StartsWith("ranks 1-7 will have no GPU"));
}

TEST_CASE("format_rank_list", "[worker_env]") {
  CHECK(format_rank_list({2, 3}) == "2,3");
  CHECK(format_rank_list({1, 2, 3, 4}) == "1-4");
  CHECK(format_rank_list({0, 2, 3, 4, 7}) == "0,2-4,7");
  CHECK(format_rank_list({}) == "");
}

TEST_CASE("python rule: .py and -m run under the interpreter, native directly", "[worker_env]") {
  CHECK(base_command(cfg_for({"train.py", "--a", "1"})) ==
        Args{"python3", "-u", "train.py", "--a", "1"});
  CHECK(base_command(cfg_for({"-m", "pkg.mod", "a"})) ==
        Args{"python3", "-u", "-m", "pkg.mod", "a"});
  CHECK(base_command(cfg_for({"--no-python", "train.py"})) == Args{"train.py"});
  CHECK(base_command(cfg_for({"./app", "x"})) == Args{"./app", "x"});
  CHECK(base_command(cfg_for({"--run-path", "/abs/script"})) ==
        Args{"python3", "-u", "/abs/script"});
  CHECK(base_command(cfg_for({"t.py"}, {{"PYTHON", "/opt/py"}})).front() == "/opt/py");
  CHECK(
      base_command(cfg_for({"t.py"}, {{"PYTHON", "/opt/py"}, {"PYTHON_EXEC", "/x/py"}})).front() ==
      "/x/py");
}

TEST_CASE("${local_rank} substitution follows string.Template.safe_substitute", "[worker_env]") {
  CHECK(substitute_local_rank("--shard=${local_rank}", 3) == "--shard=3");
  CHECK(substitute_local_rank("$local_rank", 2) == "2");
  CHECK(substitute_local_rank("a$local_rank/b", 1) == "a1/b");
  CHECK(substitute_local_rank("$local_rankx", 1) == "$local_rankx");  // another identifier
  CHECK(substitute_local_rank("${other}", 1) == "${other}");
  CHECK(substitute_local_rank("$$local_rank", 1) == "$local_rank");  // $$ is the escape
  CHECK(substitute_local_rank("cost $5", 1) == "cost $5");
  CHECK(substitute_local_rank("trailing $", 1) == "trailing $");
  CHECK(substitute_local_rank("${local_rank", 1) == "${local_rank");
  CHECK(substitute_local_rank("plain", 1) == "plain");
}

TEST_CASE("argv: python rule and ${local_rank}", "[worker_env]") {
  auto cfg = cfg_for({"train.py", "--out=dir_${local_rank}", "$local_rank"});
  auto ws = plan_workers(cfg, 2, GpuInventory{}, facts(), {});
  CHECK(ws[1].argv == Args{"python3", "-u", "train.py", "--out=dir_1", "1"});
  cfg = cfg_for({"--no-python", "/bin/echo", "${local_rank}"});
  ws = plan_workers(cfg, 2, GpuInventory{}, facts(), {});
  CHECK(ws[0].argv == Args{"/bin/echo", "0"});
}

TEST_CASE("log paths follow -r/-t, console follows tee and the filter", "[worker_env]") {
  auto f = facts();
  f.attempt_log_dir = "/l/r_x/attempt_0";
  SECTION("no redirects: console only, no files") {
    auto ws = plan_workers(cfg_for({"./app"}), 2, GpuInventory{}, f, {});
    CHECK(ws[0].stdout_path.empty());
    CHECK(ws[0].stderr_path.empty());
    CHECK(ws[0].console_stdout);
    CHECK(ws[0].console_stderr);
  }
  SECTION("-r 3: files only") {
    auto ws = plan_workers(cfg_for({"-r", "3", "./app"}), 2, GpuInventory{}, f, {});
    CHECK(ws[1].stdout_path == "/l/r_x/attempt_0/1/stdout.log");
    CHECK(ws[1].stderr_path == "/l/r_x/attempt_0/1/stderr.log");
    CHECK_FALSE(ws[1].console_stdout);
    CHECK_FALSE(ws[1].console_stderr);
  }
  SECTION("-t 2: stderr to file and console, stdout console only") {
    auto ws = plan_workers(cfg_for({"-t", "2", "./app"}), 2, GpuInventory{}, f, {});
    CHECK(ws[0].stdout_path.empty());
    CHECK(ws[0].stderr_path == "/l/r_x/attempt_0/0/stderr.log");
    CHECK(ws[0].console_stdout);
    CHECK(ws[0].console_stderr);
  }
  SECTION("per-rank maps") {
    auto ws = plan_workers(cfg_for({"-r", "1:1", "-t", "0:3", "./app"}), 3, GpuInventory{}, f, {});
    CHECK(ws[0].stdout_path == "/l/r_x/attempt_0/0/stdout.log");
    CHECK(ws[0].console_stdout);
    CHECK(ws[1].stdout_path == "/l/r_x/attempt_0/1/stdout.log");
    CHECK_FALSE(ws[1].console_stdout);
    CHECK(ws[1].console_stderr);
    CHECK(ws[2].stdout_path.empty());
  }
  SECTION("--local-ranks-filter drops other ranks from the console, not from files") {
    auto ws = plan_workers(cfg_for({"--local-ranks-filter", "0", "-t", "1:3", "./app"}), 3,
                           GpuInventory{}, f, {});
    CHECK(ws[0].console_stdout);
    CHECK_FALSE(ws[1].console_stdout);
    CHECK_FALSE(ws[1].console_stderr);
    CHECK(ws[1].stdout_path == "/l/r_x/attempt_0/1/stdout.log");
    CHECK_FALSE(ws[2].console_stdout);
    CHECK(ws[2].stdout_path.empty());
  }
  SECTION("logs off: no files and an empty error file") {
    auto g = facts();
    auto ws = plan_workers(cfg_for({"-t", "3", "./app"}), 1, GpuInventory{}, g, {});
    CHECK(ws[0].stdout_path.empty());
    CHECK(ws[0].console_stdout);
    CHECK(env_of(ws[0], "TORCHELASTIC_ERROR_FILE") == "");
  }
}

TEST_CASE("plan_workers sets the contract's variables (worker_env_contract.h) and no others",
          "[worker_env]") {
  const EnvMap base{{"HOME", "/home/u"}, {"CUDA_VISIBLE_DEVICES", "0,1"}};
  const auto workers =
      plan_workers(cfg_for({"--nproc-per-node", "2", "app"}), 2, nvidia({"0", "1"}), facts(), base);
  REQUIRE(workers.size() == 2);
  const std::set<std::string> contract(worker_env::kWorkerEnvVars.begin(),
                                       worker_env::kWorkerEnvVars.end());
  for (const auto& w : workers) {
    for (const auto& [key, value] : w.env) {
      INFO(key);
      CHECK((base.count(key) == 1 || contract.count(key) == 1));
    }
    for (const char* key : worker_env::kWorkerEnvVars) {
      // AMD's visibility variables are set for AMD GPUs only.
      if (std::string(key) == worker_env::kRocrVisibleDevices ||
          std::string(key) == worker_env::kHipVisibleDevices) {
        continue;
      }
      INFO(key);
      CHECK(w.env.count(key) == 1);
    }
  }
  CHECK(contract.size() == worker_env::kWorkerEnvVars.size());  // no name twice
  CHECK(worker_env_keys() == std::vector<std::string>(worker_env::kWorkerEnvVars.begin(),
                                                      worker_env::kWorkerEnvVars.end()));
}
