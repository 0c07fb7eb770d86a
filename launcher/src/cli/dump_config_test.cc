// --dump-config (dump_config.cc).
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "cli/cli_test_util.h"
#include "cli/config.h"

using namespace gpurun;
using namespace gpurun::launcher;
using gpurun::launcher::testing::parse;

TEST_CASE("dump-config is JSON of the resolved config", "[cli]") {
  auto c = parse({"--dump-config", "--nproc-per-node", "gpu", "-t", "0:3", "train.py", "--x"});
  auto j = nlohmann::json::parse(config_to_json(c));
  CHECK(j["action"] == "dump-config");
  CHECK(j["nproc_per_node"] == "gpu");
  CHECK(j["tee"]["per_rank"]["0"] == 3);
  CHECK(j["program"] == "train.py");
  CHECK(j["command"] == nlohmann::json::array({"python3", "-u", "train.py", "--x"}));
  CHECK(j["signals_to_handle"][0] == "SIGTERM");
  CHECK(j["master_port"].is_null());
  CHECK(j["rdzv_timeout_ms"] == 15 * 60 * 1000);
}

TEST_CASE("dump-config names signals as the failure summary does", "[cli]") {
  auto j = nlohmann::json::parse(
      config_to_json(parse({"--signals-to-handle", "usr1,11,SIGTERM", "--dump-config"})));
  CHECK(j["signals_to_handle"] == nlohmann::json::array({"SIGUSR1", "SIGSEGV", "SIGTERM"}));
}
