// The argparse engine on a table of its own: it knows nothing of gpurun's options.
#include "cli/argparse.h"

#include <catch2/catch.hpp>
#include <map>
#include <string>
#include <vector>

#include "gpurun/common/error.h"

using namespace gpurun;
using namespace gpurun::launcher;
using Args = std::vector<std::string>;

namespace {

struct Seen {
  std::map<std::string, std::string> values;
  std::map<std::string, bool> flags;
};

argparse::Option value_opt(Seen& seen, const char* name, char short_name = 0,
                           argparse::EnvFallback env = {}) {
  return {
      name,   short_name,
      true,   env,
      0,      "V",
      "",     [&seen, name](const std::string& v, const std::string&) { seen.values[name] = v; },
      nullptr};
}

argparse::Option flag_opt(Seen& seen, const char* name, argparse::EnvFallback env = {},
                          bool stops = false) {
  return {name, 0,       false,
          env,  0,       nullptr,
          "",   nullptr, [&seen, name](bool on) { seen.flags[name] = on; },
          stops};
}

std::vector<argparse::Option> table(Seen& seen) {
  return {value_opt(seen, "--frob-count", 'f', {"APP_", argparse::BoolRule::kWords}),
          value_opt(seen, "--frame"),
          flag_opt(seen, "--quiet", {"APP_", argparse::BoolRule::kCheckEnv}),
          flag_opt(seen, "--loud", {"APP_", argparse::BoolRule::kWords}),
          flag_opt(seen, "--stop", {}, true)};
}

std::string error_of(const Args& args, const EnvMap& env = {}) {
  Seen seen;
  argparse::Parser p(table(seen), "app");
  try {
    p.parse(args, 0);
    p.apply_env(env);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

TEST_CASE("argparse engine: spellings, prefixes and the program's remainder", "[cli][argparse]") {
  Seen seen;
  argparse::Parser p(table(seen), "app");
  const Args args{"--frob_c=3", "--fra", "x", "--quiet", "prog", "--frame", "y", "-f1"};
  CHECK(p.parse(args, 0) == 4);
  CHECK(seen.values["--frob-count"] == "3");
  CHECK(seen.values["--frame"] == "x");  // --fra: one option, though --frob-count starts "--fr"
  CHECK(seen.flags["--quiet"]);
  CHECK(p.given() == std::set<std::string>{"--frob-count", "--frame", "--quiet"});
  CHECK(argparse::spellings(p.options()[0]) == Args{"--frob-count", "--frob_count"});
  CHECK(argparse::env_name(p.options()[0]) == "APP_FROB_COUNT");
  CHECK(argparse::env_name(p.options()[1]).empty());
}

TEST_CASE("argparse engine: short values, --, stop and errors name this program",
          "[cli][argparse]") {
  Seen seen;
  argparse::Parser p(table(seen), "app");
  CHECK(p.parse({"-f7", "--", "-prog"}, 0) == 2);
  CHECK(seen.values["--frob-count"] == "7");
  CHECK(p.parse({"-f=8"}, 0) == 1);
  CHECK(seen.values["--frob-count"] == "8");
  CHECK(p.parse({"--stop", "--bogus"}, 0) == 2);  // nothing after a stopping option is read
  CHECK(error_of({"--fr", "1"}) ==
        "ambiguous option '--fr' could match --frob-count, --frame; spell out more of it");
  CHECK(error_of({"--quite"}) == "unknown option '--quite'; did you mean '--quiet'?");
  CHECK(error_of({"--zzzzzzzzzz"}) == "unknown option '--zzzzzzzzzz'; see app --help");
  CHECK(error_of({"--frame"}) == "option --frame expects a value (V)");
  CHECK(error_of({"-f", "--quiet"}) == "option -f/--frob-count expects a value (V), got '--quiet'");
  CHECK(error_of({"--quiet=1"}) == "option --quiet takes no value (got '1'); remove '=1'");
  CHECK(error_of({"--frame", "-5"}) == "<no error>");  // a negative number is a value
}

TEST_CASE("argparse engine: environment fallbacks, check_env and word booleans",
          "[cli][argparse]") {
  Seen seen;
  argparse::Parser p(table(seen), "app");
  p.parse({"--frob-count", "2"}, 0);
  p.apply_env({{"APP_FROB_COUNT", "9"}, {"APP_QUIET", "0"}, {"APP_LOUD", "yes"}});
  CHECK(seen.values["--frob-count"] == "2");  // the flag wins
  CHECK_FALSE(seen.flags.at("--quiet"));
  CHECK(seen.flags.at("--loud"));
  CHECK(p.given().count("--loud"));
  CHECK(error_of({}, {{"APP_QUIET", "yes"}}) ==
        "invalid value 'yes' for environment variable APP_QUIET (expected 1 (on) or 0 (off))");
}
