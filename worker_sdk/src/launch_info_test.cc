#include <catch2/catch.hpp>

#include "gpurun/common/error.h"
#include "gpurun/common/slurm.h"
#include "gpurun/worker/worker.h"

using namespace gpurun;
using namespace gpurun::worker;

namespace {
std::string error_of(const EnvMap& env) {
  try {
    read_launch_info(env);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("launch info: nothing set is a 1-rank job", "[launch_info]") {
  auto info = read_launch_info({});
  CHECK(info.rank == 0);
  CHECK(info.world_size == 1);
  CHECK(info.local_world_size == 1);
  CHECK(info.launcher == Launcher::kNone);
  CHECK(info.master_addr.empty());
  CHECK(info.run_id == "local");
}

TEST_CASE("launch info: torchrun variables", "[launch_info]") {
  auto info = read_launch_info({{"RANK", "3"},
                                {"WORLD_SIZE", "4"},
                                {"LOCAL_RANK", "1"},
                                {"LOCAL_WORLD_SIZE", "2"},
                                {"MASTER_ADDR", "node0"},
                                {"MASTER_PORT", "29500"},
                                {"TORCHELASTIC_RESTART_COUNT", "2"},
                                {"TORCHELASTIC_RUN_ID", "abc"}});
  CHECK(info.rank == 3);
  CHECK(info.world_size == 4);
  CHECK(info.local_rank == 1);
  CHECK(info.local_world_size == 2);
  CHECK(info.master_addr == "node0");
  CHECK(info.master_port == 29500);
  CHECK(info.restart_count == 2);
  CHECK(info.run_id == "abc");
  CHECK(info.launcher == Launcher::kTorchrun);
  auto g = read_launch_info({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"GPURUN_LAUNCHER", "gpurun"}});
  CHECK(g.launcher == Launcher::kGpurun);
}

TEST_CASE("launch info: errors name the variable and how to launch", "[launch_info]") {
  auto e =
      error_of({{"RANK", "5"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1"}});
  CHECK_THAT(e, Catch::Contains("RANK=5 but WORLD_SIZE=4"));
  CHECK_THAT(e, Catch::Contains("gpurun --nproc-per-node=N"));
  CHECK_THAT(e, Catch::Contains("set RANK < WORLD_SIZE"));

  e = error_of({{"RANK", "1"}});
  CHECK_THAT(e, Catch::Contains("RANK=1 is set but WORLD_SIZE is not"));
  e = error_of({{"WORLD_SIZE", "2"}});
  CHECK_THAT(e, Catch::Contains("RANK is not"));
  e = error_of({{"RANK", "x"}, {"WORLD_SIZE", "2"}});
  CHECK_THAT(e, Catch::Contains("RANK='x' is not an integer"));
  e = error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}});
  CHECK_THAT(e, Catch::Contains("MASTER_ADDR is not set but WORLD_SIZE=2"));
  e = error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}});
  CHECK_THAT(e, Catch::Contains("MASTER_PORT is not set"));
  e = error_of(
      {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}});
  CHECK_THAT(e, Catch::Contains("MASTER_PORT=70000 is not a TCP port"));
  e = error_of({{"RANK", "0"},
                {"WORLD_SIZE", "4"},
                {"LOCAL_RANK", "2"},
                {"LOCAL_WORLD_SIZE", "2"},
                {"MASTER_ADDR", "h"},
                {"MASTER_PORT", "1"}});
  CHECK_THAT(e, Catch::Contains("LOCAL_RANK=2 but LOCAL_WORLD_SIZE=2"));
  e = error_of({{"RANK", "0"}, {"WORLD_SIZE", "0"}});
  CHECK_THAT(e, Catch::Contains("WORLD_SIZE=0"));
}

TEST_CASE("launch info: mpirun fallback", "[launch_info]") {
  EnvMap env{{"OMPI_COMM_WORLD_RANK", "1"},
             {"OMPI_COMM_WORLD_SIZE", "2"},
             {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
             {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}};
  // Every rank on this host and no MASTER_ADDR: rank 0 hosts the store on loopback, at a port
  // derived from the job id (the same on every rank).
  env["OMPI_MCA_ess_base_jobid"] = "2060648449";
  auto self = read_launch_info(env);
  CHECK(self.self_hosted_store);
  CHECK(self.master_addr == "127.0.0.1");
  CHECK(self.master_port >= gpurun::kDerivedPortBase);
  CHECK(self.master_port < gpurun::kDerivedPortBase + gpurun::kDerivedPortSpan);
  CHECK_THAT(self.master_origin, Catch::Contains("OMPI_MCA_ess_base_jobid=2060648449"));
  env["OMPI_COMM_WORLD_RANK"] = "0";
  env["OMPI_COMM_WORLD_LOCAL_RANK"] = "0";
  CHECK(read_launch_info(env).master_port == self.master_port);
  env["OMPI_COMM_WORLD_RANK"] = "1";
  env["OMPI_COMM_WORLD_LOCAL_RANK"] = "1";
  // Across hosts there is no host list to pick from: the error says how.
  env["OMPI_COMM_WORLD_SIZE"] = "4";
  auto e = error_of(env);
  CHECK_THAT(e, Catch::Contains("MASTER_ADDR is not set"));
  CHECK_THAT(e, Catch::Contains("mpirun -x MASTER_ADDR"));
  env["OMPI_COMM_WORLD_SIZE"] = "2";
  env["MASTER_ADDR"] = "127.0.0.1";
  env["MASTER_PORT"] = "29501";
  auto info = read_launch_info(env);
  CHECK(info.launcher == Launcher::kMpirun);
  CHECK(info.rank == 1);
  CHECK(info.world_size == 2);
  CHECK(info.local_rank == 1);
  CHECK(info.local_world_size == 2);
  env["OMPI_COMM_WORLD_RANK"] = "2";
  CHECK_THAT(error_of(env), Catch::Contains("OMPI_COMM_WORLD_RANK=2 but OMPI_COMM_WORLD_SIZE=2"));
  // RANK wins over OMPI_*.
  env["RANK"] = "0";
  env["WORLD_SIZE"] = "1";
  CHECK(read_launch_info(env).launcher == Launcher::kTorchrun);
}

TEST_CASE("launch info: srun fallback", "[launch_info]") {
  EnvMap env{{"SLURM_PROCID", "3"},
             {"SLURM_NTASKS", "4"},
             {"SLURM_LOCALID", "1"},
             {"SLURM_STEP_ID", "0"},
             {"SLURM_JOB_ID", "77"},
             {"SLURM_NODEID", "1"},
             {"SLURM_TASKS_PER_NODE", "2(x2)"},
             {"MASTER_ADDR", "n0"},
             {"MASTER_PORT", "5"}};
  auto info = read_launch_info(env);
  CHECK(info.launcher == Launcher::kSrun);
  CHECK(info.rank == 3);
  CHECK(info.world_size == 4);
  CHECK(info.local_rank == 1);
  CHECK(info.local_world_size == 2);
  CHECK(info.run_id == "77.0");
  env["SLURM_TASKS_PER_NODE"] = "3,1";
  env["SLURM_NODEID"] = "1";
  env["SLURM_LOCALID"] = "0";
  CHECK(read_launch_info(env).local_world_size == 1);
  env.erase("SLURM_TASKS_PER_NODE");
  env["SLURM_NTASKS_PER_NODE"] = "2";
  CHECK(read_launch_info(env).local_world_size == 2);
  // The batch step of an sbatch script (no step id) is not an srun task: a 1-rank job.
  env.erase("SLURM_STEP_ID");
  CHECK(read_launch_info(env).launcher == Launcher::kNone);
  env["SLURM_STEP_ID"] = "0";
  env.erase("MASTER_ADDR");
  env.erase("MASTER_PORT");
  // No MASTER_ADDR: rank 0 hosts the store on the step's first node, at a port derived from the
  // job and step ids; MASTER_PORT still wins.
  env["SLURM_STEP_NODELIST"] = "gpu[07-08,11]";
  env["SLURM_STEP_ID"] = "2";
  info = read_launch_info(env);
  CHECK(info.self_hosted_store);
  CHECK(info.master_addr == "gpu07");
  CHECK(info.master_port == gpurun::slurm_store_port(77, 2));
  CHECK(gpurun::slurm_store_port(77, 2) == 20000 + 4 * 77 + 2);
  CHECK(gpurun::slurm_store_port(10077, 2) == gpurun::slurm_store_port(77, 2));  // 10000 jobs apart
  CHECK(gpurun::slurm_store_port(78, 2) != gpurun::slurm_store_port(77, 2));
  CHECK(gpurun::slurm_store_port(77, 3) != gpurun::slurm_store_port(77, 2));
  CHECK_THAT(info.master_origin, Catch::Contains("the first node of SLURM_STEP_NODELIST"));
  env["MASTER_PORT"] = "29600";
  CHECK(read_launch_info(env).master_port == 29600);
  env.erase("MASTER_PORT");
  env["SLURM_STEP_NODELIST"] = "gpu[07";
  CHECK_THAT(error_of(env),
             Catch::Contains("SLURM_STEP_NODELIST='gpu[07' is not a Slurm hostlist"));
  // No node list at all (a hand-made environment): say how.
  env.erase("SLURM_STEP_NODELIST");
  CHECK_THAT(error_of(env), Catch::Contains("export MASTER_ADDR"));
}
