// gpurun's options: what each one sets, its environment fallback (PET_<DEST> for torchrun's,
// GPURUN_<DEST> for gpurun's extras), its help line and section. The argparse engine
// (argparse.h) reads this table; help.cc prints it.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "cli/argparse.h"
#include "cli/config.h"

namespace gpurun::launcher {

// What parsing the command line produces before the cross-option rules (rules.h) run.
struct ParseState {
  LaunchConfig cfg;
  bool help = false;
  bool version = false;
  bool info = false;
  bool dry_run = false;
  bool dump_config = false;
  bool color_given = false;
  std::set<std::string> given;  // canonical names of options set by flag or env
};

// The help sections, in the order help_text() prints them (argparse::Option::group).
enum class Group { kTorchrun, kLogs, kMultiNode, kExtras, kGeneral };

// The option table; its setters write into `st`, which must outlive the returned options.
std::vector<argparse::Option> gpurun_options(ParseState& st);

}  // namespace gpurun::launcher
