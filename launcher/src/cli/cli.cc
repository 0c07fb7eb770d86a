// gpurun's command line: resolve_config() turns argv + environment into a LaunchConfig with
// torchrun's (argparse's) rules. The parts: the argparse engine (argparse.cc), gpurun's option
// table (options.cc) and value syntaxes (option_values.cc), the rules between options
// (rules.cc, Slurm inference in slurm_infer.cc), --help (help.cc) and --dump-config
// (dump_config.cc). The worker command (python -u, -m, --no-python) is built in run/worker_env.
#include <fmt/format.h>

#include "cli/argparse.h"
#include "cli/config.h"
#include "cli/options.h"
#include "cli/rules.h"
#include "gpurun/common/error.h"

namespace gpurun::launcher {

int StdSpec::for_rank(int local_rank) const {
  auto it = per_rank.find(local_rank);
  return it != per_rank.end() ? it->second : all;
}

LaunchConfig resolve_config(const std::vector<std::string>& args, const EnvMap& env) {
  ParseState st;
  std::size_t i = 0;
  if (!args.empty() && args[0] == "store") {
    st.cfg.action = Action::kStore;
    st.cfg.store_args.assign(args.begin() + 1, args.end());
    return st.cfg;
  }
  bool info_subcommand = !args.empty() && args[0] == "info";
  if (info_subcommand) i = 1;

  argparse::Parser parser(gpurun_options(st), "gpurun");
  std::size_t prog = parser.parse(args, i);
  if (st.help) {
    st.cfg.action = Action::kHelp;
    return st.cfg;
  }
  if (st.version) {
    st.cfg.action = Action::kVersion;
    return st.cfg;
  }
  if (prog < args.size()) {
    if (info_subcommand) {
      throw ConfigError(fmt::format(
          "`gpurun info` takes only options, not a program ('{}'); run `gpurun info --help`",
          args[prog]));
    }
    st.cfg.program = args[prog];
    st.cfg.program_args.assign(args.begin() + static_cast<std::ptrdiff_t>(prog) + 1, args.end());
  }
  parser.apply_env(env);
  st.given = parser.given();
  apply_rules(st, env);

  if (info_subcommand || st.info) {
    st.cfg.action = Action::kInfo;
  } else if (st.dump_config) {
    st.cfg.action = Action::kDumpConfig;
  } else {
    st.cfg.action = st.dry_run ? Action::kDryRun : Action::kRun;
    if (st.cfg.program.empty()) {
      throw ConfigError(
          "missing PROGRAM (usage: gpurun [options] PROGRAM [args...]); for example gpurun "
          "--nproc-per-node 2 train.py, see gpurun --help");
    }
  }
  return st.cfg;
}

}  // namespace gpurun::launcher
