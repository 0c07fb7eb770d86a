// The launcher's internal contract. LaunchConfig is the one struct every launcher component
// reads; resolve_config() (cli.cc) builds it from argv + environment as a pure function.
// plan_workers() (worker_env.cc) turns config + GPUs + attempt facts into per-worker specs,
// also a pure function. The supervisor (supervisor.cc) and run() (run.cc) only consume these.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "gpurun/common/env.h"
#include "gpurun/common/error.h"

namespace gpurun::launcher {

enum class Action {
  kRun,         // launch workers
  kHelp,        // --help: print help_text() to stdout, exit 0
  kVersion,     // --version
  kInfo,        // --info / `gpurun info`: GPUs, versions, interfaces, port, env
  kDryRun,      // --dry-run: print the plan and exit 0
  kDumpConfig,  // --dump-config: print the resolved config as JSON and exit 0
  kStore,       // `gpurun store ...`: run a standalone store server (rendezvous::store_main)
};

// torchrun's Std flags: bit 1 = stdout, bit 2 = stderr.
enum StdMask : int { kStdNone = 0, kStdOut = 1, kStdErr = 2, kStdAll = 3 };

// -r/--redirects and -t/--tee: one value for every local rank, or a per-local-rank map.
struct StdSpec {
  int all = kStdNone;
  std::map<int, int> per_rank;  // local_rank -> mask; overrides `all`
  int for_rank(int local_rank) const;
};

enum class NprocKind { kNumber, kGpu, kCpu, kAuto };

enum class ColorMode { kAuto, kAlways, kNever };

// --numa-binding (torchrun 2.8+): which CPUs near its GPU each GPU worker is bound to (numa.h).
enum class NumaBinding { kNode, kSocket, kExclusive, kCoreComplex };

struct LaunchConfig {
  Action action = Action::kRun;
  std::vector<std::string> store_args;  // args after `gpurun store` (Action::kStore)

  // ---- torchrun flags ----
  int nnodes_min = 1;
  int nnodes_max = 1;
  int node_rank = 0;
  NprocKind nproc_kind = NprocKind::kNumber;
  int nproc_per_node = 1;  // for kNumber; resolved for the others by plan_workers/run
  std::string rdzv_backend = "static";
  std::string rdzv_endpoint;
  std::string rdzv_id = "none";
  std::map<std::string, std::string> rdzv_conf;
  bool standalone = false;
  int max_restarts = 0;
  std::chrono::milliseconds monitor_interval{
      100};  // accepted for compatibility; we are event driven
  std::string start_method = "spawn";
  std::string role = "default";
  bool module = false;     // -m: python -u -m PROGRAM
  bool no_python = false;  // run PROGRAM directly
  bool run_path = false;
  std::optional<std::string> log_dir;
  StdSpec redirects;
  StdSpec tee;
  std::optional<std::set<int>> local_ranks_filter;  // console filter (local ranks)
  // --duplicate-stdout-filters / --duplicate-stderr-filters: tee'd lines containing any of these
  // also go to <attempt dir>/filtered_stdout.log (filtered_stderr.log), all ranks together.
  std::vector<std::string> duplicate_stdout_filters;
  std::vector<std::string> duplicate_stderr_filters;
  std::string master_addr = "127.0.0.1";
  // Resolved once, here: unset or 0 = pick a free port atomically (bound, never probed); the
  // static multi-node default (29500) is filled in by resolve_config. One type from the command
  // line to the store and MASTER_PORT.
  std::optional<std::uint16_t> master_port;
  std::optional<std::string> local_addr;
  // --rdzv-allow HOSTS (PET_RDZV_ALLOW): hosts, addresses and CIDR blocks that may use this
  // node's stores from other hosts ("any": all); unset: the Slurm job's nodes, else any.
  std::optional<std::string> rdzv_allow;
  std::vector<int>
      signals_to_handle;  // default SIGTERM,SIGINT,SIGHUP,SIGQUIT (+SIGUSR1/2 forwarded)
  // Grace between the stop signal and SIGKILL: after a signal gpurun received (torchrun's 30 s),
  // and after a worker failure or --timeout (5 s). --shutdown-timeout sets both.
  std::chrono::milliseconds shutdown_timeout{30000};
  std::chrono::milliseconds failure_shutdown_timeout{5000};
  // --exit-barrier-timeout (torchrun 2.x): how long a node that succeeded waits for the others
  // before it exits (multi-node; the node hosting the store must outlive the others).
  std::chrono::milliseconds exit_barrier_timeout{std::chrono::seconds(300)};
  bool virtual_local_rank = false;
  std::optional<NumaBinding> numa_binding;  // unset: workers run on every CPU (no binding)
  std::string event_log_handler = "null";   // --event-log-handler null|console

  // ---- gpurun extras ----
  bool narrow_visible_devices =
      false;  // --per-worker-visible-devices: CUDA_VISIBLE_DEVICES=<its GPU>
  std::optional<std::chrono::milliseconds> run_timeout;              // --timeout: whole run
  std::chrono::milliseconds rdzv_timeout{std::chrono::minutes(15)};  // --rdzv-timeout
  std::optional<std::string> summary_json;                           // --summary-json PATH
  bool torchrun_exit_codes = false;    // --exit-code-mode torchrun: 1 for any failure (not 2)
  ColorMode color = ColorMode::kAuto;  // --color auto|always|never
  bool tag_output = true;  // prefix console lines with [rank N] when output goes through gpurun
  std::string python = "python3";  // $PYTHON_EXEC, else $PYTHON, else python3
  // --stdin-rank: the worker (global RANK) that gets gpurun's stdin and, when it is a terminal,
  // the terminal's foreground (pdb, input()); the others read /dev/null from a terminal.
  // nullopt: the only worker when this node runs one (torchrun's one-worker habit); -1: none.
  std::optional<int> stdin_rank;

  // ---- the program ----
  std::string program;
  std::vector<std::string> program_args;

  std::vector<std::string> notes;  // warnings found while resolving (printed once by run())
};

// Parses gpurun's command line (argv without argv[0]) with torchrun's rules: both spellings,
// --flag=value and --flag value, unique-prefix abbreviations, PET_* fallbacks, everything after
// the program passed through. Throws ConfigError with "did you mean" on unknown flags.
LaunchConfig resolve_config(const std::vector<std::string>& args, const EnvMap& env);

std::string help_text();
std::string version_text();

// --dump-config: the resolved config as pretty JSON (nlohmann), durations in milliseconds; no
// trailing newline.
std::string config_to_json(const LaunchConfig& cfg);

// ---- GPUs ----
struct GpuInfo {
  int index = 0;       // index in the numbering the worker will see (after *_VISIBLE_DEVICES)
  std::string id;      // what to put in CUDA_VISIBLE_DEVICES for this GPU (index, UUID or MIG id)
  std::string name;    // "NVIDIA H100 80GB HBM3" when known
  std::string vendor;  // "nvidia" | "amd" | "fake"
  std::string uuid;
  std::string pci_bus_id;        // "0000:3b:00.0" when known (--numa-binding looks it up in sysfs)
  std::optional<int> numa_node;  // known without sysfs (fake GPUs: GPURUN_FAKE_GPU_NUMA_NODES)
};

struct GpuInventory {
  std::vector<GpuInfo> gpus;
  std::string source;  // how they were found: "nvml", "CUDA_VISIBLE_DEVICES", "kfd", "fake", "none"
  std::string driver_version;      // when known
  std::vector<std::string> notes;  // e.g. "NVML not loadable: libnvidia-ml.so.1 not found"
};

// Seam for tests: NvmlGpuProbe (dlopen), AmdGpuProbe (kfd / ROCR_VISIBLE_DEVICES), FakeGpuProbe.
class GpuProbe {
 public:
  virtual ~GpuProbe() = default;
  virtual GpuInventory probe(const EnvMap& env) = 0;
};
// The real probe chain: NVIDIA (NVML honouring CUDA_VISIBLE_DEVICES), then AMD. Never throws for a
// missing driver (= 0 GPUs). GPURUN_FAKE_GPUS=N (tests only) returns N fake GPUs.
std::unique_ptr<GpuProbe> make_default_gpu_probe();

// ---- workers ----
struct AttemptFacts {
  int restart_count = 0;
  std::string run_id;             // TORCHELASTIC_RUN_ID
  std::string master_addr;        // what workers connect to
  std::uint16_t master_port = 0;  // the store gpurun bound (0 in a dry run: bound at start)
  std::string attempt_log_dir;    // "" when logs are off (/dev/null or no files needed)
  int group_rank = 0;             // node rank
  int group_world_size = 1;       // nodes
  int base_global_rank = 0;       // first global rank on this node
  int world_size = 0;             // total workers in the job
};

struct WorkerSpec {
  int local_rank = 0;
  int rank = 0;
  std::vector<std::string> argv;  // argv[0] is the executable (resolved via PATH by the runner)
  EnvMap env;                     // the complete environment for the worker
  std::optional<int> gpu;         // GPU index assigned (LOCAL_RANK mapping), if any
  std::string stdout_path;        // "" = not redirected to a file
  std::string stderr_path;
  bool console_stdout = true;  // after --local-ranks-filter
  bool console_stderr = true;
  std::vector<int> cpus;  // --numa-binding: the CPUs it may run on (empty = not bound)
};

// "--nproc-per-node gpu" with no GPU visible. main() maps it to ExitCode::kNoGpu (4).
class NoGpuError : public ConfigError {
 public:
  using ConfigError::ConfigError;
};

// Resolves nproc (gpu/cpu/auto) against the inventory; throws NoGpuError (a ConfigError) for
// "gpu" with no GPU visible.
int resolve_nproc(const LaunchConfig& cfg, const GpuInventory& gpus, int cpu_count);

// The full torchrun worker environment on top of `base_env` (the launcher's own environment).
// Pure. Warnings (e.g. "ranks 2,3 have no GPU") go to `notes` if non-null.
std::vector<WorkerSpec> plan_workers(const LaunchConfig& cfg, int nproc, const GpuInventory& gpus,
                                     const AttemptFacts& facts, const EnvMap& base_env,
                                     std::vector<std::string>* notes = nullptr);

// --dry-run: per rank the local rank, GPU, command line, the env vars gpurun sets (not the whole
// inherited environment) and log paths; the store and world size from `facts` (the plan's own
// facts, not read back from the workers' env). Pure.
// `store_access`: who may use the store (job_access.h describe_job_access), under the store line.
std::string format_plan(const LaunchConfig& cfg, const AttemptFacts& facts,
                        const std::vector<WorkerSpec>& workers, const GpuInventory& gpus,
                        std::string_view store_access = {});

// ---- diagnostics ----
// "pid 4711 (python3 train.py --foo)" for the process listening on TCP `port`, from /proc; empty
// when unknown (other user, no /proc).
std::string describe_port_holder(int port);

// `gpurun --info`: prints GPUs seen and how, driver/CUDA/NCCL versions when present, network
// interfaces, whether the chosen port is free, relevant env. Returns an exit code.
int print_info(const LaunchConfig& cfg, const EnvMap& env, GpuProbe& probe);

}  // namespace gpurun::launcher
