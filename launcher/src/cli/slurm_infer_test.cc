#include "cli/slurm_infer.h"

#include <catch2/catch.hpp>

#include "gpurun/common/error.h"
#include "gpurun/common/slurm.h"

using namespace gpurun;
using namespace gpurun::launcher;

namespace {

EnvMap srun_env(const char* node_id) {
  return {{"SLURM_JOB_ID", "4711"},
          {"SLURM_STEP_ID", "0"},
          {"SLURM_PROCID", node_id},
          {"SLURM_NODEID", node_id},
          {"SLURM_STEP_NUM_NODES", "3"},
          {"SLURM_STEP_NUM_TASKS", "3"},
          {"SLURM_STEP_NODELIST", "gpu[07-08],login1"}};
}

}  // namespace

TEST_CASE("srun gpurun: nodes, node rank, rendezvous and run id come from Slurm", "[slurm]") {
  LaunchConfig c;
  apply_slurm(c, {}, srun_env("1"));
  CHECK(c.nnodes_min == 3);
  CHECK(c.nnodes_max == 3);
  CHECK(c.node_rank == 1);
  CHECK(c.master_addr == "gpu07");
  CHECK(c.master_port == gpurun::slurm_store_port(4711, 0));
  CHECK(c.rdzv_id == "4711");
  REQUIRE(c.notes.size() == 1);
  CHECK(c.notes[0] ==
        "info: from Slurm: 3 nodes (SLURM_STEP_NUM_NODES), node rank 1 (SLURM_NODEID), "
        "rendezvous host gpu07 (the first node of SLURM_STEP_NODELIST), port 38844 (from "
        "SLURM_JOB_ID=4711 and step 0), run id 4711 (SLURM_JOB_ID); flags override each of these");
}

TEST_CASE("flags and PET_ variables win over Slurm", "[slurm]") {
  LaunchConfig c;
  c.master_addr = "head";
  c.master_port = 29400;
  c.node_rank = 2;
  apply_slurm(c, {"--master-addr", "--master-port", "--node-rank"}, srun_env("1"));
  CHECK(c.master_addr == "head");
  CHECK(c.master_port == 29400);
  CHECK(c.node_rank == 2);
  CHECK(c.nnodes_max == 3);
}

TEST_CASE("outside srun, or with another rendezvous, nothing is inferred", "[slurm]") {
  LaunchConfig c;
  auto env = srun_env("0");
  env.erase("SLURM_STEP_ID");  // an sbatch script's batch step
  apply_slurm(c, {}, env);
  CHECK(c.nnodes_max == 1);
  CHECK(c.notes.empty());
  LaunchConfig e;
  e.rdzv_backend = "c10d";
  e.rdzv_endpoint = "host:29400";
  apply_slurm(e, {}, srun_env("0"));
  CHECK(e.nnodes_max == 1);
}

TEST_CASE("several gpurun tasks per node is refused with the fix", "[slurm]") {
  LaunchConfig c;
  auto env = srun_env("0");
  env["SLURM_STEP_NUM_TASKS"] = "6";
  CHECK_THROWS_WITH(apply_slurm(c, {}, env),
                    Catch::Contains("srun started 6 gpurun tasks on 3 nodes") &&
                        Catch::Contains("srun --ntasks-per-node=1 gpurun"));
}

TEST_CASE("one node under srun: no rendezvous host needed", "[slurm]") {
  LaunchConfig c;
  auto env = srun_env("0");
  env["SLURM_STEP_NUM_NODES"] = "1";
  env["SLURM_STEP_NUM_TASKS"] = "1";
  apply_slurm(c, {}, env);
  CHECK(c.nnodes_max == 1);
  CHECK(c.master_addr == "127.0.0.1");
  CHECK_FALSE(c.master_port);
}
