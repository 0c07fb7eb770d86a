// Rules between options (rules.cc), through resolve_config.
#include <catch2/catch.hpp>

#include "cli/cli_test_util.h"
#include "cli/config.h"

using namespace gpurun;
using namespace gpurun::launcher;
using gpurun::launcher::testing::error_of;
using gpurun::launcher::testing::parse;

TEST_CASE("standalone forces c10d on localhost with a fresh uuid", "[cli]") {
  auto c = parse({"--standalone", "--rdzv-id", "mine", "--master-port", "1234", "x"});
  CHECK(c.standalone);
  CHECK(c.rdzv_backend == "c10d");
  CHECK(c.rdzv_endpoint == "localhost:0");
  CHECK(c.rdzv_id.size() == 36);
  CHECK(c.rdzv_id[14] == '4');
  CHECK(c.rdzv_id != parse({"--standalone", "x"}).rdzv_id);
  CHECK_FALSE(c.master_port.has_value());
  CHECK_FALSE(c.notes.empty());
  CHECK_THAT(error_of({"--standalone", "--nnodes", "2", "x"}), Catch::Contains("single-node"));
}

TEST_CASE("c10d on one node: the endpoint's port and --local-addr", "[cli]") {
  auto c = parse({"--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:29433", "x"});
  CHECK(c.master_port == 29433);
  CHECK(c.master_addr == "127.0.0.1");
  c = parse({"--rdzv-backend=c10d", "--rdzv-endpoint=localhost:29433", "--master-port=5", "x"});
  CHECK(c.master_port == 5);  // an explicit --master-port wins
  c = parse({"--standalone", "--local_addr=127.0.0.2", "x"});
  CHECK(c.master_addr == "127.0.0.2");
  CHECK_FALSE(c.master_port);                     // still a free port
  c = parse({"--local-addr", "127.0.0.2", "x"});  // static: torchrun ignores it too
  CHECK(c.master_addr == "127.0.0.1");
  CHECK(c.notes.back().find("--local-addr is used with --rdzv-backend c10d") != std::string::npos);
}

TEST_CASE("static rdzv-endpoint replaces master addr and port", "[cli]") {
  auto c = parse({"--rdzv-endpoint", "node0:29411", "x"});
  CHECK(c.master_addr == "node0");
  CHECK(c.master_port == 29411);
  c = parse({"--rdzv-endpoint", "[::1]:29412", "x"});
  CHECK(c.master_addr == "::1");
  CHECK(c.master_port == 29412);
  CHECK_THAT(error_of({"--rdzv-endpoint", "node0", "x"}), Catch::Contains("port is absent"));
}

TEST_CASE("module and no-python conflict, run-path wins", "[cli]") {
  CHECK_THAT(error_of({"-m", "--no-python", "x"}), Catch::Contains("cannot be used together"));
  auto c = parse({"--run-path", "--no-python", "/abs/x.py"});
  CHECK(c.run_path);
  CHECK_FALSE(c.no_python);
}
