#include "gpurun/common/env.h"

#include <catch2/catch.hpp>

#include "gpurun/common/error.h"

using namespace gpurun;

TEST_CASE("env readers parse typed values", "[common]") {
  EnvMap env{{"N", "4"}, {"B", "yes"}, {"D", "5m"}, {"BAD", "4x"}, {"NB", "maybe"}};
  CHECK(env_int(env, "N") == 4);
  CHECK_FALSE(env_int(env, "MISSING").has_value());
  CHECK(env_bool(env, "B") == true);
  CHECK(env_duration(env, "D") == std::chrono::minutes(5));
  CHECK_THROWS_WITH(env_int(env, "BAD"), Catch::Contains("BAD") && Catch::Contains("'4x'"));
  CHECK_THROWS_AS(env_bool(env, "NB"), ConfigError);
}

TEST_CASE("parse_int is strict", "[common]") {
  CHECK(parse_int(" 12 ", "x") == 12);
  CHECK(parse_int("-3", "x") == -3);
  CHECK_THROWS_AS(parse_int("", "x"), ConfigError);
  CHECK_THROWS_AS(parse_int("1.5", "x"), ConfigError);
}

TEST_CASE("split keeps empty fields", "[common]") {
  CHECK(split("a,,b", ',') == std::vector<std::string>{"a", "", "b"});
  CHECK(split("", ',') == std::vector<std::string>{""});
}

TEST_CASE("current_environment sees PATH", "[common]") {
  auto env = current_environment();
  CHECK(env.count("PATH") == 1);
  auto strs = to_envp_strings(EnvMap{{"A", "1"}});
  CHECK(strs == std::vector<std::string>{"A=1"});
}
