// --help and --version: the usage, the option table by section (options.cc), the exit codes
// (exit_codes.cc: the one table), the environment variables and examples.
#include <fmt/format.h>

#include <sstream>

#include "cli/config.h"
#include "cli/exit_codes.h"
#include "cli/options.h"
#include "gpurun/common/env.h"

namespace gpurun::launcher {

std::string version_text() {
  return fmt::format(
      "gpurun {}\n"
      "a torchrun-compatible launcher (command line and worker environment of "
      "torch.distributed.run)\n",
      GPURUN_VERSION);
}

std::string help_text() {
  ParseState unused;  // the table's setters are not called here
  const std::vector<argparse::Option> options = gpurun_options(unused);
  std::ostringstream out;
  out << "usage: gpurun [options] PROGRAM [args...]\n"
         "       gpurun info [options]          GPUs, versions, interfaces, port, env\n"
         "       gpurun store [store options]   a standalone rendezvous store server\n"
         "\n"
         "Starts N workers of PROGRAM (run as python -u PROGRAM, as torchrun does, unless it is "
         "an\n"
         "ELF binary, an executable #! script, a command in PATH, or --no-python is given),\n"
         "each with torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, ...),\n"
         "hosts their store, supervises them and explains failures. Everything after PROGRAM\n"
         "goes to PROGRAM unchanged; use -- before a PROGRAM that starts with '-'.\n"
         "Options accept --dash-form and --underscore_form, --opt=value or --opt value, and any\n"
         "unique prefix (--nproc=4). \"${local_rank}\" in args becomes the worker's local rank.\n";
  struct GroupInfo {
    Group group;
    const char* title;
  };
  const GroupInfo groups[] = {
      {Group::kTorchrun,
       "torchrun-compatible options (env fallback PET_<NAME>, e.g. PET_NPROC_PER_NODE)"},
      {Group::kLogs, "logs (torchrun layout)"},
      {Group::kMultiNode, "multi-node (static rendezvous; also PET_<NAME>)"},
      {Group::kExtras, "gpurun extras (env fallback GPURUN_<NAME> where it makes sense)"},
      {Group::kGeneral, "general"},
  };
  for (const auto& g : groups) {
    out << "\n" << g.title << ":\n";
    for (const auto& o : options) {
      if (o.group != static_cast<int>(g.group)) continue;
      std::string left = o.short_name ? fmt::format("-{}, {}", o.short_name, o.name)
                                      : fmt::format("    {}", o.name);
      if (o.metavar) left += fmt::format(" {}", o.metavar);
      // Help column at 38, wrapped to 100 columns.
      constexpr std::size_t kCol = 38, kWidth = 100;
      std::string line = "  " + left;
      if (line.size() + 2 > kCol) {
        out << line << "\n";
        line.clear();
      }
      line.resize(kCol, ' ');
      bool first_word = true;
      for (const auto& word : split(o.help, ' ')) {
        if (!first_word && line.size() + 1 + word.size() > kWidth) {
          out << line << "\n";
          line = std::string(kCol, ' ');
          first_word = true;
        }
        line += (first_word ? "" : " ") + word;
        first_word = false;
      }
      out << line << "\n";
    }
  }
  out << "\n"
         "exit codes:\n"
      << exit_codes_help()
      << "The summary's last line and --summary-json (exit_code_origin) say whether the code\n"
         "came from a worker or from gpurun. --exit-code-mode torchrun: 1 for any failure\n"
         "(2 stays a usage error), as torchrun.\n"
         "\n"
         "environment:\n"
         "  PET_<OPTION>             default for a torchrun option (a flag wins); booleans 1/0\n"
         "  PYTHON_EXEC, PYTHON      interpreter for .py programs and -m (default python3)\n"
         "  CUDA_VISIBLE_DEVICES     GPUs to use (indices, GPU-/MIG- UUIDs); passed to workers\n"
         "  ROCR_VISIBLE_DEVICES, HIP_VISIBLE_DEVICES   the same for AMD GPUs\n"
         "  OMP_NUM_THREADS          set to 1 for workers when unset and nproc > 1 (as torchrun)\n"
         "  TORCH_ELASTIC_SHUTDOWN_TIMEOUT   default for --shutdown-timeout\n"
         "  NO_COLOR                 same as --color never\n"
         "  GPURUN_LOG_LEVEL         launcher log level: error|warn|info|debug|trace [warn]\n"
         "  GPURUN_NO_CGROUP=1       no cgroup v2 for the workers: after kill -9 gpurun its\n"
         "                           watchdog finds what they started by process group,\n"
         "                           session and environment (default: a cgroup of their own\n"
         "                           where cgroup v2 is writable; see README 'No process left\n"
         "                           behind')\n"
         "  GPURUN_FAKE_GPUS=N       tests only: pretend N GPUs exist\n"
         "\n"
         "workers get, on top of the inherited environment: RANK LOCAL_RANK WORLD_SIZE\n"
         "LOCAL_WORLD_SIZE GROUP_RANK GROUP_WORLD_SIZE ROLE_RANK ROLE_NAME ROLE_WORLD_SIZE\n"
         "MASTER_ADDR MASTER_PORT TORCHELASTIC_RUN_ID TORCHELASTIC_RESTART_COUNT\n"
         "TORCHELASTIC_MAX_RESTARTS TORCHELASTIC_ERROR_FILE TORCHELASTIC_USE_AGENT_STORE\n"
         "TORCH_NCCL_ASYNC_ERROR_HANDLING NCCL_ASYNC_ERROR_HANDLING PYTHONUNBUFFERED GPURUN_GPU\n"
         "GPURUN_GPU_ID GPURUN_NUM_GPUS_VISIBLE GPURUN_LAUNCHER (see --dry-run for values)\n"
         "\n"
         "examples:\n"
         "  gpurun --nproc-per-node 4 train.py --epochs 3\n"
         "  gpurun --nproc_per_node=gpu --log-dir logs -t 3 ./app --shard ${local_rank}\n"
         "  gpurun --nproc-per-node 2 --dry-run ./app\n"
         "  gpurun info --master-port 29500\n";
  return out.str();
}

}  // namespace gpurun::launcher
