// gpurun's option table: every option's spelling, value, environment fallback, help line and
// what it sets. Value syntaxes are parsed in option_values.cc; rules between options in rules.cc.
#include "cli/options.h"

#include <fmt/format.h>

#include <tuple>

#include "cli/option_values.h"
#include "gpurun/common/duration.h"
#include "gpurun/common/env.h"
#include "gpurun/common/error.h"
#include "probe/numa.h"

namespace gpurun::launcher {

namespace {

using argparse::invalid_value;

// torchrun's options fall back to PET_<DEST> (booleans: check_env), gpurun's extras to
// GPURUN_<DEST> (booleans: 1/0, true/false, yes/no).
constexpr argparse::EnvFallback kPet{"PET_", argparse::BoolRule::kCheckEnv};
constexpr argparse::EnvFallback kGpurun{"GPURUN_", argparse::BoolRule::kWords};
constexpr argparse::EnvFallback kNoEnv{};

constexpr int section(Group g) { return static_cast<int>(g); }

}  // namespace

#define VALUE(body)                                            \
  [&st](const std::string& value, const std::string& origin) { \
    (void)value;                                               \
    (void)origin;                                              \
    body;                                                      \
  }
#define FLAG(body) \
  [&st](bool on) { \
    (void)on;      \
    body;          \
  }

std::vector<argparse::Option> gpurun_options(ParseState& st) {
  return {
      // ---- torchrun: workers and program ----
      {"--nproc-per-node", 0, true, kPet, section(Group::kTorchrun), "N|gpu|cpu|auto",
       "workers on this node: a number, one per visible GPU (gpu), one per CPU (cpu), or GPUs "
       "if any else CPUs (auto) [1]",
       VALUE(parse_nproc(st.cfg, value, origin)), nullptr},
      {"--module", 'm', false, kPet, section(Group::kTorchrun), nullptr,
       "run PROGRAM as a Python module: python -u -m PROGRAM", nullptr, FLAG(st.cfg.module = on)},
      {"--no-python", 0, false, kPet, section(Group::kTorchrun), nullptr,
       "run PROGRAM directly, even if it ends in .py", nullptr, FLAG(st.cfg.no_python = on)},
      {"--run-path", 0, false, kPet, section(Group::kTorchrun), nullptr,
       "run PROGRAM with Python's runpy.run_path (it always runs under Python)", nullptr,
       FLAG(st.cfg.run_path = on)},
      {"--max-restarts", 0, true, kPet, section(Group::kTorchrun), "N",
       "restart the whole worker group up to N times after a failure [0]",
       VALUE(st.cfg.max_restarts =
                 parse_int_in(value, origin, 0, 1 << 30, "a non-negative integer")),
       nullptr},
      {"--role", 0, true, kPet, section(Group::kTorchrun), "NAME",
       "worker role: ROLE_NAME and, on streams tee'd with -t, torchrun's [NAME<local_rank>]: "
       "line header [default]",
       VALUE(st.cfg.role = value), nullptr},
      {"--standalone", 0, false, kPet, section(Group::kTorchrun), nullptr,
       "single-node job: c10d rendezvous on localhost with a free port and a fresh run id", nullptr,
       FLAG(st.cfg.standalone = on)},
      {"--master-addr", 0, true, kPet, section(Group::kTorchrun), "ADDR",
       "address workers use to reach the store (MASTER_ADDR) [127.0.0.1]",
       VALUE(st.cfg.master_addr = value), nullptr},
      {"--master-port", 0, true, kPet, section(Group::kTorchrun), "PORT",
       "port of the store gpurun hosts (MASTER_PORT); 0 or unset = a free port, bound atomically",
       VALUE(st.cfg.master_port = parse_int_in(value, origin, 0, 65535, "a port number 0-65535")),
       nullptr},
      {"--signals-to-handle", 0, true, kPet, section(Group::kTorchrun), "SIGS",
       "signals forwarded to the workers [SIGTERM,SIGINT,SIGHUP,SIGQUIT]",
       VALUE(st.cfg.signals_to_handle = parse_signal_list(value, origin)), nullptr},
      {"--shutdown-timeout", 0, true, kPet, section(Group::kTorchrun), "DURATION",
       "grace between the stop signal and SIGKILL; default 30s (torchrun's) when gpurun received "
       "the signal (Ctrl-C, scheduler SIGTERM), 5s when it stops the others after a worker "
       "failure or --timeout; this option (or TORCH_ELASTIC_SHUTDOWN_TIMEOUT) sets both",
       VALUE(st.cfg.shutdown_timeout = st.cfg.failure_shutdown_timeout =
                 parse_duration(trim(value), origin)),
       nullptr},
      {"--exit-barrier-timeout", 0, true, kPet, section(Group::kTorchrun), "DURATION",
       "multi-node: how long a node whose workers succeeded waits for the other nodes before "
       "it exits [300s]",
       VALUE(st.cfg.exit_barrier_timeout = parse_duration(trim(value), origin)), nullptr},
      {"--virtual-local-rank", 0, false, kPet, section(Group::kTorchrun), nullptr,
       "each worker sees only its own GPU and LOCAL_RANK=0", nullptr,
       FLAG(st.cfg.virtual_local_rank = on)},
      {"--numa-binding", 0, true, kNoEnv, section(Group::kTorchrun),
       "node|socket|exclusive|core-complex",
       "bind each GPU worker to CPUs near its GPU: its NUMA node, its socket, an exclusive "
       "share of the node's cores, or one L3 domain of the node (CPU workers stay unbound)",
       VALUE({
         auto m = parse_numa_binding(trim(value));
         if (!m) invalid_value(origin, value, "node, socket, exclusive or core-complex");
         st.cfg.numa_binding = m;
       }),
       nullptr},
      {"--event-log-handler", 0, true, kPet, section(Group::kTorchrun), "null|console",
       "console: print torchelastic's end-of-run events (one JSON line per worker) on stderr "
       "[null]",
       VALUE({
         std::string v = trim(value);
         if (v != "null" && v != "console") {
           throw ConfigError(fmt::format(
               "{}='{}' is not an event handler gpurun has; use null or console (torchrun's "
               "other handlers are Python plugins)",
               origin, value));
         }
         st.cfg.event_log_handler = v;
       }),
       nullptr},
      {"--logs-specs", 0, true, kNoEnv, section(Group::kLogs), "NAME",
       "torchrun loads a Python LogsSpecs plugin here; gpurun refuses it with an explanation",
       VALUE({
         throw ConfigError(fmt::format(
             "{} {}: gpurun cannot load torchrun.logs_specs Python entry points; it writes "
             "torchrun's default log layout (--log-dir, -r, -t, --local-ranks-filter); drop "
             "--logs-specs",
             origin, value));
       }),
       nullptr},
      {"--monitor-interval", 0, true, kPet, section(Group::kTorchrun), "SECONDS",
       "accepted for compatibility; gpurun sees worker exits at once [0.1]",
       VALUE(st.cfg.monitor_interval = parse_duration(trim(value), origin)), nullptr},
      {"--start-method", 0, true, kPet, section(Group::kTorchrun), "spawn|fork|forkserver",
       "accepted for compatibility (only matters for Python function entrypoints) [spawn]", VALUE({
         std::string v = trim(value);
         if (v != "spawn" && v != "fork" && v != "forkserver") {
           invalid_value(origin, value, "spawn, fork or forkserver");
         }
         st.cfg.start_method = v;
       }),
       nullptr},
      // ---- torchrun: logs ----
      {"--log-dir", 0, true, kPet, section(Group::kLogs), "DIR",
       "root of the log tree DIR/<run_id>_<random>/attempt_<k>/<local_rank>/ (stdout.log, "
       "stderr.log, error.json); /dev/null = no files",
       VALUE(st.cfg.log_dir = non_empty(value)), nullptr},
      {"--redirects", 'r', true, kPet, section(Group::kLogs), "MASK|MAP",
       "send streams to the log files only: 1 stdout, 2 stderr, 3 both, or 0:1,1:2 [0]",
       VALUE(st.cfg.redirects = parse_std_spec(value, origin)), nullptr},
      {"--tee", 't', true, kPet, section(Group::kLogs), "MASK|MAP",
       "send streams to the log files and the console (same syntax as -r) [0]",
       VALUE(st.cfg.tee = parse_std_spec(value, origin)), nullptr},
      {"--local-ranks-filter", 0, true, kPet, section(Group::kLogs), "RANKS",
       "only these local ranks reach the console, e.g. 0 or 0,3 (files are unaffected)",
       VALUE(st.cfg.local_ranks_filter = parse_rank_filter(value, origin)), nullptr},
      {"--duplicate-stdout-filters", 0, true, kPet, section(Group::kLogs), "TEXT,...",
       "tee'd stdout lines containing any TEXT also go to <attempt dir>/filtered_stdout.log, "
       "all ranks in one file (',,' is a literal comma)",
       VALUE(st.cfg.duplicate_stdout_filters = parse_filter_list(value)), nullptr},
      {"--duplicate-stderr-filters", 0, true, kPet, section(Group::kLogs), "TEXT,...",
       "the same for stderr: <attempt dir>/filtered_stderr.log",
       VALUE(st.cfg.duplicate_stderr_filters = parse_filter_list(value)), nullptr},
      // ---- torchrun: multi-node / rendezvous ----
      {"--nnodes", 0, true, kPet, section(Group::kMultiNode), "N|MIN:MAX", "number of nodes [1]",
       VALUE(std::tie(st.cfg.nnodes_min, st.cfg.nnodes_max) = parse_nnodes(value, origin)),
       nullptr},
      {"--node-rank", 0, true, kPet, section(Group::kMultiNode), "N",
       "rank of this node (static rendezvous) [0]",
       VALUE(st.cfg.node_rank = parse_int_in(value, origin, 0, 1 << 20, "a non-negative integer")),
       nullptr},
      {"--rdzv-backend", 0, true, kPet, section(Group::kMultiNode), "static|c10d|etcd",
       "rendezvous backend [static]", VALUE({
         std::string v = trim(value);
         if (v == "etcd-v2") v = "etcd";  // torchrun's two etcd backends: one here (etcd v3 API)
         if (v != "static" && v != "c10d" && v != "etcd") {
           invalid_value(origin, value, "static, c10d or etcd");
         }
         st.cfg.rdzv_backend = v;
       }),
       nullptr},
      {"--rdzv-endpoint", 0, true, kPet, section(Group::kMultiNode), "HOST[:PORT]",
       "rendezvous store address (static: overrides --master-addr/--master-port)",
       VALUE(st.cfg.rdzv_endpoint = trim(value)), nullptr},
      {"--rdzv-id", 0, true, kPet, section(Group::kMultiNode), "ID",
       "job id, exported as TORCHELASTIC_RUN_ID [none]", VALUE(st.cfg.rdzv_id = value), nullptr},
      {"--rdzv-conf", 0, true, kPet, section(Group::kMultiNode), "K=V,...",
       "rendezvous settings, e.g. timeout=900,read_timeout=60",
       VALUE(st.cfg.rdzv_conf = parse_rdzv_conf(value, origin)), nullptr},
      {"--local-addr", 0, true, kPet, section(Group::kMultiNode), "ADDR",
       "this node's address for the rendezvous (MASTER_ADDR when this node hosts the store)",
       VALUE(st.cfg.local_addr = non_empty(trim(value))), nullptr},
      {"--rdzv-allow", 0, true, kPet, section(Group::kMultiNode), "HOSTS",
       "hosts, addresses and blocks (10.0.0.0/8) that may use the stores this node hosts, "
       "besides loopback; any = every host [under Slurm: the job's nodes; else any]",
       VALUE(st.cfg.rdzv_allow = non_empty(trim(value))), nullptr},
      // ---- gpurun extras ----
      {"--timeout", 0, true, kGpurun, section(Group::kExtras), "DURATION",
       "stop the whole run after DURATION (30s, 5m, 2h; 0 or none = no limit); exit 124",
       VALUE(st.cfg.run_timeout = parse_optional_timeout(value, origin)), nullptr},
      {"--rdzv-timeout", 0, true, kGpurun, section(Group::kExtras), "DURATION",
       "how long store waits and node rendezvous may take [15m]",
       VALUE(st.cfg.rdzv_timeout = parse_duration(trim(value), origin)), nullptr},
      {"--per-worker-visible-devices", 0, false, kGpurun, section(Group::kExtras), nullptr,
       "narrow CUDA_VISIBLE_DEVICES to each worker's own GPU (LOCAL_RANK unchanged)", nullptr,
       FLAG(st.cfg.narrow_visible_devices = on)},
      {"--summary-json", 0, true, kGpurun, section(Group::kExtras), "PATH",
       "also write the failure/success summary as JSON to PATH",
       VALUE(st.cfg.summary_json = non_empty(value)), nullptr},
      {"--color", 0, true, kGpurun, section(Group::kExtras), "auto|always|never",
       "colour the [rank N] prefixes (auto = when the console is a TTY and NO_COLOR is unset)",
       VALUE({
         std::string v = trim(value);
         if (v == "auto")
           st.cfg.color = ColorMode::kAuto;
         else if (v == "always")
           st.cfg.color = ColorMode::kAlways;
         else if (v == "never")
           st.cfg.color = ColorMode::kNever;
         else
           invalid_value(origin, value, "auto, always or never");
         st.color_given = true;
       }),
       nullptr},
      {"--exit-code-mode", 0, true, kGpurun, section(Group::kExtras), "gpurun|torchrun",
       "gpurun: the failing worker's own code (the summary and --summary-json say whether a code "
       "came from a worker or from gpurun); torchrun: 1 for any failure, as torchrun [gpurun]",
       VALUE({
         const std::string v = trim(value);
         if (v != "gpurun" && v != "torchrun") invalid_value(origin, value, "gpurun or torchrun");
         st.cfg.torchrun_exit_codes = v == "torchrun";
       }),
       nullptr},
      {"--stdin-rank", 0, true, kGpurun, section(Group::kExtras), "RANK|none",
       "the worker that reads gpurun's stdin and, on a terminal, gets the terminal's foreground "
       "(breakpoint(), pdb, input()); its output then goes to the terminal unprefixed [the "
       "worker, when --nproc-per-node is 1]",
       VALUE({
         const std::string v = trim(value);
         st.cfg.stdin_rank =
             v == "none" ? -1 : parse_int_in(v, origin, 0, 1 << 30, "a worker's RANK, or none");
       }),
       nullptr},
      {"--no-tag-output", 0, false, kGpurun, section(Group::kExtras), nullptr,
       "do not prefix worker console lines with [rank N]", nullptr, FLAG(st.cfg.tag_output = !on)},
      {"--dry-run", 0, false, kNoEnv, section(Group::kExtras), nullptr,
       "print the plan (ranks, GPUs, commands, env, log paths) and exit", nullptr,
       FLAG(st.dry_run = on)},
      {"--dump-config", 0, false, kNoEnv, section(Group::kExtras), nullptr,
       "print the resolved configuration as JSON and exit", nullptr, FLAG(st.dump_config = on)},
      {"--info", 0, false, kNoEnv, section(Group::kExtras), nullptr,
       "print GPUs, driver/CUDA/NCCL versions, interfaces, port and env; same as `gpurun info`",
       nullptr, FLAG(st.info = on)},
      // ---- general ----
      {"--help", 'h', false, kNoEnv, section(Group::kGeneral), nullptr, "show this help and exit",
       nullptr, FLAG(st.help = on), true},
      {"--version", 0, false, kNoEnv, section(Group::kGeneral), nullptr,
       "show the version and exit", nullptr, FLAG(st.version = on), true},
  };
}

#undef VALUE
#undef FLAG

}  // namespace gpurun::launcher
