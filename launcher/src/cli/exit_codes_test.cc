#include "cli/exit_codes.h"

#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cli/config.h"
#include "gpurun/common/error.h"

using namespace gpurun::launcher;

TEST_CASE("the README's exit-code table is the one in code", "[exit_codes]") {
  std::ifstream f(std::string(GPURUN_SOURCE_DIR) + "/README.md");
  REQUIRE(f);
  std::vector<std::string> rows;
  std::string line;
  bool in_table = false;
  while (std::getline(f, line)) {
    if (line == "| code | meaning |") {
      in_table = true;
      continue;
    }
    if (!in_table) continue;
    if (line.empty() || line[0] != '|') break;
    if (line.rfind("|---", 0) == 0) continue;
    rows.push_back(line);
  }
  std::vector<std::string> want;
  for (const auto& e : exit_code_table()) {
    want.push_back(std::string("| ") + e.code + " | " + e.meaning + " |");
  }
  CHECK(rows == want);
}

TEST_CASE("the help text prints the exit-code table", "[exit_codes]") {
  const std::string help = help_text();
  for (const auto& e : exit_code_table()) {
    INFO(e.code);
    CHECK_THAT(help, Catch::Contains(std::string("  ") + e.code));
  }
  CHECK_THAT(help, Catch::Contains("127    a worker could not be executed (path, permissions)"));
  CHECK_THAT(help, Catch::Contains("--nproc-per-node gpu and no GPU visible"));
}

TEST_CASE("ExitCode names every code gpurun itself uses", "[exit_codes]") {
  CHECK(static_cast<int>(gpurun::ExitCode::kCannotExec) == 127);
  CHECK(static_cast<int>(gpurun::ExitCode::kTimeout) == 124);
}
