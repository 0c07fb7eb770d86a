#include "gpurun/worker/console.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "console_detail.h"

using namespace gpurun::worker;
using namespace gpurun::worker::detail;

TEST_CASE("error file JSON has torchrun's layout", "[console]") {
  auto j = error_file_json("bad \"x\"\nline", "std::runtime_error: bad", 1700000000);
  CHECK(j ==
        "{\"message\": {\"message\": \"bad \\\"x\\\"\\nline\", \"extraInfo\": {\"py_callstack\": "
        "\"std::runtime_error: bad\", \"timestamp\": \"1700000000\"}}}\n");
  CHECK(json_quote(std::string_view("\x01", 1)) == "\"\\u0001\"");
}

TEST_CASE("run_main writes the error file and returns 1", "[console]") {
  char tmpl[] = "/tmp/gpurun_errfile_XXXXXX";
  int fd = mkstemp(tmpl);
  REQUIRE(fd >= 0);
  close(fd);
  setenv("TORCHELASTIC_ERROR_FILE", tmpl, 1);
  int rc = run_main([]() -> int { throw std::runtime_error("boom at step 3"); });
  unsetenv("TORCHELASTIC_ERROR_FILE");
  CHECK(rc == 1);
  std::ifstream f(tmpl);
  std::stringstream ss;
  ss << f.rdbuf();
  CHECK_THAT(ss.str(), Catch::Contains("\"message\": \"boom at step 3\""));
  CHECK_THAT(ss.str(), Catch::Contains("std::runtime_error"));
  std::remove(tmpl);
  CHECK(run_main([] { return 7; }) == 7);
}

TEST_CASE("progress line shows count, rate, ETA and postfix", "[console]") {
  auto s =
      format_progress("train", 450, 1000, "it", std::chrono::duration<double>(12.0), "loss=0.31");
  CHECK(s == "train:  45% 450/1000 it [00:12<00:15, 37.5 it/s] loss=0.31");
  auto u = format_progress("", 5, 0, "img", std::chrono::duration<double>(0.0), "");
  CHECK(u == "5 img [00:00, 0.0 img/s]");
}
