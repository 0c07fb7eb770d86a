// gpurun: parse, dispatch, and turn exceptions into `gpurun: error: ...` + an exit code.
// Exit codes (also in --help and the README): 0 ok; the first failing worker's own exit code, or
// 128+signal for a signal death (SIGSEGV -> 139); 127 a worker could not be executed;
// 1 gpurun could not start a worker (fork) or an internal error; 2 usage/config error;
// 3 the rendezvous store could not be set up (e.g. --master-port busy); 4 no GPU for
// --nproc-per-node gpu; 124 --timeout expired; 128+N gpurun stopped by signal N (Ctrl-C: 130).
#include <cstdio>
#include <exception>
#include <string>
#include <system_error>
#include <vector>

#include "config.h"
#include "gpurun/common/env.h"
#include "gpurun/common/error.h"
#include "gpurun/rendezvous/store_server.h"

namespace {

int fail(const std::string& what, gpurun::ExitCode code) {
  std::string line = "gpurun: error: " + what;
  if (line.back() != '\n') line += '\n';
  std::fputs(line.c_str(), stderr);
  return static_cast<int>(code);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace gpurun;
  using namespace gpurun::launcher;
  try {
    const EnvMap env = current_environment();
    const std::vector<std::string> args(argv + 1, argv + argc);
    const LaunchConfig cfg = resolve_config(args, env);
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
      case Action::kRun:
        return run(cfg, env);
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
