// gpurun: parse, dispatch, and turn exceptions into `gpurun: error: ...` + an exit code.
// The exit codes are documented once, in exit_codes.cc (--help prints it; a test compares it with
// the README). --exit-code-mode torchrun: 0, 2 for a usage error, 1 for anything else.
#include <malloc.h>

#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "cli/config.h"
#include "gpurun/common/env.h"
#include "gpurun/common/error.h"
#include "gpurun/tools/store_main.h"
#include "output/failure_summary.h"
#include "run/run.h"

namespace {

// Once the command line is parsed: where --summary-json goes and --exit-code-mode. Outside
// main's try block so that its catch handlers still see it.
std::optional<gpurun::launcher::LaunchConfig> g_cfg;

int fail(const std::string& what, gpurun::ExitCode code) {
  std::string line = "gpurun: error: " + what;
  if (line.back() != '\n') line += '\n';
  std::fputs(line.c_str(), stderr);
  int rc = static_cast<int>(code);
  if (g_cfg) {
    if (g_cfg->summary_json && (g_cfg->action == gpurun::launcher::Action::kRun)) {
      std::string msg = what;
      while (!msg.empty() && msg.back() == '\n') msg.pop_back();
      gpurun::launcher::write_summary_json(*g_cfg->summary_json,
                                           gpurun::launcher::error_summary_json(rc, msg));
    }
    if (g_cfg->torchrun_exit_codes) rc = gpurun::launcher::torchrun_exit_code(rc);
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace gpurun;
  using namespace gpurun::launcher;
  // One malloc arena: gpurun's threads (store server, output, heartbeats) allocate little, and
  // glibc's arena per thread maps and trims 64 MiB for each (mmap + munmap + a TLB shootdown on
  // every CPU), a cost hundreds of agents on one host pay at every start. Not inherited by the
  // workers (a mallopt, not MALLOC_ARENA_MAX).
  ::mallopt(M_ARENA_MAX, 1);
  try {
    const EnvMap env = current_environment();
    const std::vector<std::string> args(argv + 1, argv + argc);
    g_cfg = resolve_config(args, env);
    const LaunchConfig& cfg = *g_cfg;
    switch (cfg.action) {
      case Action::kHelp:
        std::fputs(help_text().c_str(), stdout);
        return 0;
      case Action::kVersion:
        std::fputs(version_text().c_str(), stdout);
        return 0;
      case Action::kDumpConfig:
        std::fputs((config_to_json(cfg) + "\n").c_str(), stdout);
        return 0;
      case Action::kInfo: {
        auto probe = make_default_gpu_probe();
        return print_info(cfg, env, *probe);
      }
      case Action::kStore: {
        std::vector<std::string> store_args = {"gpurun store"};
        store_args.insert(store_args.end(), cfg.store_args.begin(), cfg.store_args.end());
        std::vector<char*> store_argv;
        for (auto& a : store_args) store_argv.push_back(a.data());
        store_argv.push_back(nullptr);
        return rendezvous::store_main(static_cast<int>(store_args.size()), store_argv.data());
      }
      case Action::kDryRun:
      case Action::kRun: {
        auto probe = make_default_gpu_probe();
        const int rc = run(cfg, env, *probe, [](const ReaperOptions& reaper) {
          return make_posix_process_runner(reaper);
        });  // also the multi-node paths' own codes
        return cfg.torchrun_exit_codes ? torchrun_exit_code(rc) : rc;
      }
    }
    return 0;
  } catch (const NoGpuError& e) {
    return fail(e.what(), ExitCode::kNoGpu);
  } catch (const ConfigError& e) {
    return fail(e.what(), ExitCode::kUsage);
  } catch (const BindError& e) {
    return fail(e.what(), ExitCode::kRendezvousFailed);
  } catch (const StoreTimeout& e) {
    return fail(e.what(), ExitCode::kRendezvousFailed);
  } catch (const NetworkError& e) {
    return fail(e.what(), ExitCode::kRendezvousFailed);
  } catch (const SpawnError& e) {
    return fail(e.what(), ExitCode::kWorkerFailed);
  } catch (const std::exception& e) {
    return fail(std::string(e.what()) + " (internal error); please report it with the command line",
                ExitCode::kWorkerFailed);
  }
}
