// A table-driven command-line parser with Python argparse's rules. It knows no option of its
// own: the caller hands it a table (gpurun's is in options.cc) whose entries set values through
// callbacks.
//
// Why not Boost.Program_options: torchrun users depend on argparse details that program_options
// does not model: parsing stops at the first positional (argparse REMAINDER: everything after the
// program is passed through, even "--foo"), a prefix is accepted when it names one option even if
// it matches several of its aliases (both spellings), <PREFIX><DEST> environment fallbacks with
// argparse's check_env rule for booleans, and "-r1"-style short values. Emulating those on top of
// program_options would need more glue than this table.
#pragma once

#include <cstddef>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "gpurun/common/env.h"

namespace gpurun::launcher::argparse {

// How a boolean option's environment variable is read.
enum class BoolRule {
  kCheckEnv,  // torchrun's check_env: an integer, nonzero = on
  kWords,     // parse_bool: 1/0, true/false, yes/no
};

// The environment variable an option falls back to when no flag sets it: <prefix><DEST>, DEST
// being the long name without "--", upper case, '-' as '_' ("--nproc-per-node" ->
// PET_NPROC_PER_NODE).
struct EnvFallback {
  const char* prefix = nullptr;  // nullptr: no environment fallback
  BoolRule bools = BoolRule::kWords;
};

struct Option {
  const char* name;  // canonical long name, dash form, with "--"
  char short_name;   // 0 when none
  bool takes_value;
  EnvFallback env;
  int group;            // the caller's help section; the parser does not read it
  const char* metavar;  // shown in "expects a value (METAVAR)" and in help
  const char* help;
  std::function<void(const std::string& value, const std::string& origin)> set_value;
  std::function<void(bool on)> set_flag;
  bool stops_parsing = false;  // --help, --version: argparse acts at once, the rest is not read
};

// "invalid value 'VALUE' for ORIGIN (expected EXPECTED)"; ORIGIN names the flag or the variable.
[[noreturn]] void invalid_value(const std::string& origin, const std::string& value,
                                const std::string& expected);

// Every long spelling of an option: the dash form and, where it has a dash, the underscore form
// (torchrun 2.x accepts both; 1.13 only the underscore form).
std::vector<std::string> spellings(const Option& o);

// The environment variable an option falls back to ("" when none).
std::string env_name(const Option& o);

class Parser {
 public:
  // `prog` names the program in messages ("see PROG --help").
  Parser(std::vector<Option> options, std::string prog);

  // Parses options from args[i...] up to the program; returns the index of the program (or
  // args.size()). A bare "--" ends the options; the argument after it is the program even if it
  // starts with '-'. After an option with stops_parsing, returns args.size() at once.
  // Throws ConfigError for an unknown (with "did you mean"), ambiguous or malformed option.
  std::size_t parse(const std::vector<std::string>& args, std::size_t i);

  // Environment fallbacks for the options no flag set (an explicit flag always wins). Values
  // go through the option's setter with "environment variable NAME" as origin.
  void apply_env(const EnvMap& env);

  // Canonical names of the options set by flag or environment.
  const std::set<std::string>& given() const { return given_; }
  const std::vector<Option>& options() const { return options_; }

 private:
  const Option& find_long(const std::string& flag) const;
  const Option& find_short(char c, const std::string& arg) const;
  [[noreturn]] void unknown_option(const std::string& flag) const;
  void apply_value(const Option& o, const std::string& value, const std::string& origin);
  void apply_flag(const Option& o, bool on);

  std::vector<Option> options_;
  std::string prog_;
  std::set<std::string> given_;
};

}  // namespace gpurun::launcher::argparse
