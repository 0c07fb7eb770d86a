// --help and --version text (help.cc).
#include <catch2/catch.hpp>

#include "cli/config.h"
#include "gpurun/common/env.h"

using namespace gpurun;
using namespace gpurun::launcher;

TEST_CASE("help lists every group, exit codes and env, version names gpurun", "[cli]") {
  auto h = help_text();
  for (const char* s :
       {"usage: gpurun", "torchrun-compatible options", "gpurun extras",
        "exit codes:", "environment:", "--nproc-per-node", "--per-worker-visible-devices",
        "-r, --redirects", "--local-ranks-filter", "PET_", "GPURUN_FAKE_GPUS"}) {
    CHECK_THAT(h, Catch::Contains(s));
  }
  for (const auto& line : split(h, '\n')) CHECK(line.size() <= 100);
  CHECK_THAT(version_text(), Catch::StartsWith("gpurun "));
}
