#include "gpurun/common/progress.h"

#include <catch2/catch.hpp>

#include "gpurun/common/error.h"

using namespace std::chrono_literals;
using gpurun::ProgressSchedule;

TEST_CASE("progress reports at 10 s, 30 s, 1 min, 5 min, 10 min, then every 10 min", "[common]") {
  ProgressSchedule s;
  CHECK(s.at(0) == 10s);
  CHECK(s.at(1) == 30s);
  CHECK(s.at(2) == 60s);
  CHECK(s.at(3) == 5min);
  CHECK(s.at(4) == 10min);
  CHECK(s.at(5) == 20min);
  CHECK(s.at(6) == 30min);
  CHECK_FALSE(s.due(9s));
  CHECK(s.due(10s));
  CHECK_FALSE(s.due(11s));
  CHECK_FALSE(s.due(29s));
  CHECK(s.due(31s));
  // Several steps passed at once report once.
  CHECK(s.due(6min));
  CHECK_FALSE(s.due(9min));
  CHECK(s.due(10min));
  s.reset();
  CHECK(s.due(10s));
}

TEST_CASE("progress schedule scales with its first step, 0 turns it off", "[common]") {
  ProgressSchedule fast(500ms);
  CHECK(fast.at(0) == 500ms);
  CHECK(fast.at(1) == 1500ms);
  ProgressSchedule off(0ms);
  CHECK_FALSE(off.enabled());
  CHECK_FALSE(off.due(1h));
}

TEST_CASE("GPURUN_WAIT_PROGRESS sets the first step", "[common]") {
  CHECK(gpurun::progress_after_from({}) == gpurun::kDefaultProgressAfter);
  CHECK(gpurun::progress_after_from({{"GPURUN_WAIT_PROGRESS", "2s"}}) == 2s);
  CHECK(gpurun::progress_after_from({{"GPURUN_WAIT_PROGRESS", "0"}}) == 0ms);
  CHECK_THROWS_AS(gpurun::progress_after_from({{"GPURUN_WAIT_PROGRESS", "soon"}}),
                  gpurun::ConfigError);
}

TEST_CASE("messages round waits to whole seconds from 1 s on", "[common]") {
  CHECK(gpurun::round_to_seconds(12345ms) == 12s);
  CHECK(gpurun::round_to_seconds(250ms) == 250ms);
}
