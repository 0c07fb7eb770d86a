#include "gpurun/common/duration.h"

#include <catch2/catch.hpp>

#include "gpurun/common/error.h"

using namespace gpurun;
using std::chrono::milliseconds;

TEST_CASE("parse_duration accepts units and bare seconds", "[common]") {
  CHECK(parse_duration("250ms") == milliseconds(250));
  CHECK(parse_duration("30s") == milliseconds(30'000));
  CHECK(parse_duration("30") == milliseconds(30'000));
  CHECK(parse_duration("0.1") == milliseconds(100));
  CHECK(parse_duration("1.5s") == milliseconds(1'500));
  CHECK(parse_duration("5m") == milliseconds(300'000));
  CHECK(parse_duration("2h") == milliseconds(7'200'000));
}

TEST_CASE("parse_duration rejects junk with the input in the message", "[common]") {
  CHECK_THROWS_WITH(parse_duration("abc", "--timeout"), Catch::Contains("--timeout 'abc'"));
  CHECK_THROWS_AS(parse_duration("-1s"), ConfigError);
  CHECK_THROWS_AS(parse_duration("10parsecs"), ConfigError);
  CHECK_THROWS_AS(parse_duration(""), ConfigError);
}

TEST_CASE("format_duration is short", "[common]") {
  CHECK(format_duration(milliseconds(250)) == "250ms");
  CHECK(format_duration(milliseconds(30'000)) == "30s");
  CHECK(format_duration(milliseconds(300'000)) == "5m");
  CHECK(format_duration(milliseconds(3'600'000)) == "1h");
  CHECK(format_duration(kNoTimeout) == "no timeout");
}

TEST_CASE("deadline_after saturates for kNoTimeout", "[common]") {
  CHECK(deadline_after(kNoTimeout) == Clock::time_point::max());
  CHECK(remaining(Clock::time_point::max()) == kNoTimeout);
  CHECK(remaining(Clock::now() - std::chrono::seconds(1)) == milliseconds(0));
  auto d = deadline_after(milliseconds(1000));
  CHECK(remaining(d) <= milliseconds(1000));
  CHECK(remaining(d) > milliseconds(500));
}
