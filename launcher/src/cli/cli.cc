// gpurun's command line: resolve_config() turns argv + environment into a LaunchConfig with
// torchrun's (argparse's) rules. Pure apart from the uuid drawn for --standalone.
//
// Why a hand-written, table-driven parser instead of Boost.Program_options: torchrun users depend
// on argparse details that program_options does not model: parsing stops at the first positional
// (argparse REMAINDER: everything after the program is passed through, even "--foo"), a prefix is
// accepted when it names one option even if it matches several of its aliases (both spellings),
// PET_<DEST> environment fallbacks with argparse's check_env rule for booleans, and "-r1"-style
// short values. Emulating those on top of program_options would need more glue than this table.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "cli/config.h"
#include "cli/exit_codes.h"
#include "cli/slurm_infer.h"
#include "gpurun/common/duration.h"
#include "gpurun/common/env.h"
#include "gpurun/common/error.h"
#include "gpurun/common/log.h"
#include "gpurun/common/unique_fd.h"
#include "probe/numa.h"

namespace gpurun::launcher {

int StdSpec::for_rank(int local_rank) const {
  auto it = per_rank.find(local_rank);
  return it != per_rank.end() ? it->second : all;
}

namespace {

// ---------------------------------------------------------------------------------------------
// Parse state and value parsers
// ---------------------------------------------------------------------------------------------

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

[[noreturn]] void bad_value(const std::string& origin, const std::string& value,
                            const std::string& expected) {
  throw ConfigError(
      fmt::format("invalid value '{}' for {} (expected {})", value, origin, expected));
}

int parse_int_in(const std::string& value, const std::string& origin, long long lo, long long hi,
                 const std::string& expected) {
  long long v = 0;
  try {
    v = parse_int(value, origin);
  } catch (const ConfigError&) {
    bad_value(origin, value, expected);
  }
  if (v < lo || v > hi) bad_value(origin, value, expected);
  return static_cast<int>(v);
}

// An empty value (e.g. PET_LOG_DIR="") means "not given", as argparse's falsy checks treat it.
std::optional<std::string> non_empty(const std::string& v) {
  return v.empty() ? std::nullopt : std::optional<std::string>(v);
}

// torchrun's Std.from_str: "0".."3", or "LOCAL_RANK:MASK,..." (torchrun allows one digit per
// entry; we accept any local rank number).
StdSpec parse_std_spec(const std::string& value, const std::string& origin) {
  static const char* kExpected =
      "0-3 (1 = stdout, 2 = stderr, 3 = both) or a per-local-rank map like 0:1,1:2";
  StdSpec spec;
  std::string v = trim(value);
  if (v.size() == 1 && v[0] >= '0' && v[0] <= '3') {
    spec.all = v[0] - '0';
    return spec;
  }
  if (v.empty()) bad_value(origin, value, kExpected);
  for (const auto& entry : split(v, ',')) {
    auto colon = entry.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 2 != entry.size()) {
      bad_value(origin, value, kExpected);
    }
    std::string rank_text = entry.substr(0, colon);
    if (!std::all_of(rank_text.begin(), rank_text.end(),
                     [](unsigned char c) { return std::isdigit(c); })) {
      bad_value(origin, value, kExpected);
    }
    char mask = entry[colon + 1];
    if (mask < '0' || mask > '3') bad_value(origin, value, kExpected);
    spec.per_rank[parse_int_in(rank_text, origin, 0, 1 << 20, kExpected)] = mask - '0';
  }
  return spec;
}

const std::pair<const char*, int> kSignals[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},     {"QUIT", SIGQUIT}, {"TERM", SIGTERM},
    {"USR1", SIGUSR1}, {"USR2", SIGUSR2},   {"ABRT", SIGABRT}, {"ALRM", SIGALRM},
    {"CONT", SIGCONT}, {"WINCH", SIGWINCH}, {"PIPE", SIGPIPE}, {"XCPU", SIGXCPU},
};

std::string signal_name(int sig) {
  for (const auto& [n, s] : kSignals) {
    if (s == sig) return std::string("SIG") + n;
  }
  return std::to_string(sig);
}

int parse_signal(const std::string& name_in, const std::string& origin) {
  std::string name = trim(name_in);
  for (auto& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (name.rfind("SIG", 0) == 0) name = name.substr(3);
  for (const auto& [n, sig] : kSignals) {
    if (name == n) return sig;
  }
  if (!name.empty() &&
      std::all_of(name.begin(), name.end(), [](unsigned char c) { return std::isdigit(c); })) {
    return parse_int_in(name, origin, 1, 64, "a signal number 1-64");
  }
  bad_value(origin, name_in,
            "a comma-separated list of signal names such as SIGTERM,SIGINT,SIGHUP,SIGUSR1");
}

void parse_nnodes(ParseState& st, const std::string& value, const std::string& origin) {
  static const char* kExpected = "N or MIN:MAX with 0 < MIN <= MAX";
  std::string v = trim(value);
  auto colon = v.find(':');
  if (colon == std::string::npos) {
    int n = parse_int_in(v, origin, 1, 1 << 20, kExpected);
    st.cfg.nnodes_min = st.cfg.nnodes_max = n;
  } else {
    int lo = parse_int_in(v.substr(0, colon), origin, 1, 1 << 20, kExpected);
    int hi = parse_int_in(v.substr(colon + 1), origin, 1, 1 << 20, kExpected);
    if (lo > hi) bad_value(origin, value, kExpected);
    st.cfg.nnodes_min = lo;
    st.cfg.nnodes_max = hi;
  }
}

void parse_nproc(ParseState& st, const std::string& value, const std::string& origin) {
  std::string v = trim(value);
  auto& c = st.cfg;
  if (v == "gpu") {
    c.nproc_kind = NprocKind::kGpu;
  } else if (v == "cpu") {
    c.nproc_kind = NprocKind::kCpu;
  } else if (v == "auto") {
    c.nproc_kind = NprocKind::kAuto;
  } else {
    c.nproc_kind = NprocKind::kNumber;
    c.nproc_per_node =
        parse_int_in(v, origin, 1, 1 << 16, "a positive number of workers, gpu, cpu or auto");
  }
}

std::map<std::string, std::string> parse_rdzv_conf(const std::string& value,
                                                   const std::string& origin) {
  std::map<std::string, std::string> conf;
  if (trim(value).empty()) return conf;
  for (const auto& kv : split(value, ',')) {
    auto eq = kv.find('=');
    std::string key = eq == std::string::npos ? trim(kv) : trim(kv.substr(0, eq));
    std::string val = eq == std::string::npos ? "" : trim(kv.substr(eq + 1));
    if (key.empty() || val.empty()) {
      bad_value(origin, value, "KEY=VALUE pairs separated by commas, with no empty key or value");
    }
    conf[key] = val;
  }
  return conf;
}

std::optional<std::set<int>> parse_rank_filter(const std::string& value,
                                               const std::string& origin) {
  std::string v = trim(value);
  if (v.empty()) return std::nullopt;
  std::set<int> ranks;
  for (const auto& r : split(v, ',')) {
    ranks.insert(parse_int_in(trim(r), origin, 0, 1 << 20,
                              "a comma-separated list of local ranks such as 0,2"));
  }
  return ranks;
}

// torchrun's comma_separated_list: "a,b" -> {a, b}; ",," is a literal comma; empty items dropped.
std::vector<std::string> parse_filter_list(const std::string& value) {
  std::vector<std::string> out;
  std::string cur;
  for (std::size_t i = 0; i < value.size(); ++i) {
    if (value[i] != ',') {
      cur += value[i];
    } else if (i + 1 < value.size() && value[i + 1] == ',') {
      cur += ',';
      ++i;
    } else {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

std::optional<milliseconds> parse_optional_timeout(const std::string& value,
                                                   const std::string& origin) {
  std::string v = trim(value);
  if (v == "none" || v == "0" || v == "inf") return std::nullopt;
  milliseconds d = parse_duration(v, origin);
  if (d == kNoTimeout) return std::nullopt;
  return d;
}

// ---------------------------------------------------------------------------------------------
// The option table
// ---------------------------------------------------------------------------------------------

enum class Group { kTorchrun, kLogs, kMultiNode, kExtras, kGeneral };

enum class EnvKind { kNone, kPet, kGpurun };

struct OptionSpec {
  const char* name;  // canonical long name, dash form, with "--"
  char short_name;   // 0 when none
  bool takes_value;
  EnvKind env;  // PET_<DEST> (torchrun options) or GPURUN_<DEST> (gpurun extras)
  Group group;
  const char* metavar;
  const char* help;
  void (*set_value)(ParseState&, const std::string& value, const std::string& origin);
  void (*set_flag)(ParseState&, bool on);
};

// "--nproc-per-node" -> "NPROC_PER_NODE"
std::string dest_of(const char* name) {
  std::string d(name + 2);
  for (auto& c : d)
    c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return d;
}

std::string env_name(const OptionSpec& o) {
  switch (o.env) {
    case EnvKind::kPet:
      return "PET_" + dest_of(o.name);
    case EnvKind::kGpurun:
      return "GPURUN_" + dest_of(o.name);
    case EnvKind::kNone:
      break;
  }
  return "";
}

#define VALUE(body)                                                         \
  [](ParseState& st, const std::string& value, const std::string& origin) { \
    (void)st;                                                               \
    (void)value;                                                            \
    (void)origin;                                                           \
    body;                                                                   \
  }
#define FLAG(body)              \
  [](ParseState& st, bool on) { \
    (void)st;                   \
    (void)on;                   \
    body;                       \
  }

const std::vector<OptionSpec>& options() {
  static const std::vector<OptionSpec> kOptions = {
      // ---- torchrun: workers and program ----
      {"--nproc-per-node", 0, true, EnvKind::kPet, Group::kTorchrun, "N|gpu|cpu|auto",
       "workers on this node: a number, one per visible GPU (gpu), one per CPU (cpu), or GPUs "
       "if any else CPUs (auto) [1]",
       VALUE(parse_nproc(st, value, origin)), nullptr},
      {"--module", 'm', false, EnvKind::kPet, Group::kTorchrun, nullptr,
       "run PROGRAM as a Python module: python -u -m PROGRAM", nullptr, FLAG(st.cfg.module = on)},
      {"--no-python", 0, false, EnvKind::kPet, Group::kTorchrun, nullptr,
       "run PROGRAM directly, even if it ends in .py", nullptr, FLAG(st.cfg.no_python = on)},
      {"--run-path", 0, false, EnvKind::kPet, Group::kTorchrun, nullptr,
       "run PROGRAM with Python's runpy.run_path (it always runs under Python)", nullptr,
       FLAG(st.cfg.run_path = on)},
      {"--max-restarts", 0, true, EnvKind::kPet, Group::kTorchrun, "N",
       "restart the whole worker group up to N times after a failure [0]",
       VALUE(st.cfg.max_restarts =
                 parse_int_in(value, origin, 0, 1 << 30, "a non-negative integer")),
       nullptr},
      {"--role", 0, true, EnvKind::kPet, Group::kTorchrun, "NAME",
       "worker role: ROLE_NAME and, on streams tee'd with -t, torchrun's [NAME<local_rank>]: "
       "line header [default]",
       VALUE(st.cfg.role = value), nullptr},
      {"--standalone", 0, false, EnvKind::kPet, Group::kTorchrun, nullptr,
       "single-node job: c10d rendezvous on localhost with a free port and a fresh run id", nullptr,
       FLAG(st.cfg.standalone = on)},
      {"--master-addr", 0, true, EnvKind::kPet, Group::kTorchrun, "ADDR",
       "address workers use to reach the store (MASTER_ADDR) [127.0.0.1]",
       VALUE(st.cfg.master_addr = value), nullptr},
      {"--master-port", 0, true, EnvKind::kPet, Group::kTorchrun, "PORT",
       "port of the store gpurun hosts (MASTER_PORT); 0 or unset = a free port, bound atomically",
       VALUE(st.cfg.master_port = parse_int_in(value, origin, 0, 65535, "a port number 0-65535")),
       nullptr},
      {"--signals-to-handle", 0, true, EnvKind::kPet, Group::kTorchrun, "SIGS",
       "signals forwarded to the workers [SIGTERM,SIGINT,SIGHUP,SIGQUIT]", VALUE({
         st.cfg.signals_to_handle.clear();
         for (const auto& s : split(value, ',')) {
           if (!trim(s).empty()) st.cfg.signals_to_handle.push_back(parse_signal(s, origin));
         }
       }),
       nullptr},
      {"--shutdown-timeout", 0, true, EnvKind::kPet, Group::kTorchrun, "DURATION",
       "grace between the stop signal and SIGKILL; default 30s (torchrun's) when gpurun received "
       "the signal (Ctrl-C, scheduler SIGTERM), 5s when it stops the others after a worker "
       "failure or --timeout; this option (or TORCH_ELASTIC_SHUTDOWN_TIMEOUT) sets both",
       VALUE(st.cfg.shutdown_timeout = st.cfg.failure_shutdown_timeout =
                 parse_duration(trim(value), origin)),
       nullptr},
      {"--exit-barrier-timeout", 0, true, EnvKind::kPet, Group::kTorchrun, "DURATION",
       "multi-node: how long a node whose workers succeeded waits for the other nodes before "
       "it exits [300s]",
       VALUE(st.cfg.exit_barrier_timeout = parse_duration(trim(value), origin)), nullptr},
      {"--virtual-local-rank", 0, false, EnvKind::kPet, Group::kTorchrun, nullptr,
       "each worker sees only its own GPU and LOCAL_RANK=0", nullptr,
       FLAG(st.cfg.virtual_local_rank = on)},
      {"--numa-binding", 0, true, EnvKind::kNone, Group::kTorchrun,
       "node|socket|exclusive|core-complex",
       "bind each GPU worker to CPUs near its GPU: its NUMA node, its socket, an exclusive "
       "share of the node's cores, or one L3 domain of the node (CPU workers stay unbound)",
       VALUE({
         auto m = parse_numa_binding(trim(value));
         if (!m) bad_value(origin, value, "node, socket, exclusive or core-complex");
         st.cfg.numa_binding = m;
       }),
       nullptr},
      {"--event-log-handler", 0, true, EnvKind::kPet, Group::kTorchrun, "null|console",
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
      {"--logs-specs", 0, true, EnvKind::kNone, Group::kLogs, "NAME",
       "torchrun loads a Python LogsSpecs plugin here; gpurun refuses it with an explanation",
       VALUE({
         throw ConfigError(fmt::format(
             "{} {}: gpurun cannot load torchrun.logs_specs Python entry points; it writes "
             "torchrun's default log layout (--log-dir, -r, -t, --local-ranks-filter); drop "
             "--logs-specs",
             origin, value));
       }),
       nullptr},
      {"--monitor-interval", 0, true, EnvKind::kPet, Group::kTorchrun, "SECONDS",
       "accepted for compatibility; gpurun sees worker exits at once [0.1]",
       VALUE(st.cfg.monitor_interval = parse_duration(trim(value), origin)), nullptr},
      {"--start-method", 0, true, EnvKind::kPet, Group::kTorchrun, "spawn|fork|forkserver",
       "accepted for compatibility (only matters for Python function entrypoints) [spawn]", VALUE({
         std::string v = trim(value);
         if (v != "spawn" && v != "fork" && v != "forkserver") {
           bad_value(origin, value, "spawn, fork or forkserver");
         }
         st.cfg.start_method = v;
       }),
       nullptr},
      // ---- torchrun: logs ----
      {"--log-dir", 0, true, EnvKind::kPet, Group::kLogs, "DIR",
       "root of the log tree DIR/<run_id>_<random>/attempt_<k>/<local_rank>/ (stdout.log, "
       "stderr.log, error.json); /dev/null = no files",
       VALUE(st.cfg.log_dir = non_empty(value)), nullptr},
      {"--redirects", 'r', true, EnvKind::kPet, Group::kLogs, "MASK|MAP",
       "send streams to the log files only: 1 stdout, 2 stderr, 3 both, or 0:1,1:2 [0]",
       VALUE(st.cfg.redirects = parse_std_spec(value, origin)), nullptr},
      {"--tee", 't', true, EnvKind::kPet, Group::kLogs, "MASK|MAP",
       "send streams to the log files and the console (same syntax as -r) [0]",
       VALUE(st.cfg.tee = parse_std_spec(value, origin)), nullptr},
      {"--local-ranks-filter", 0, true, EnvKind::kPet, Group::kLogs, "RANKS",
       "only these local ranks reach the console, e.g. 0 or 0,3 (files are unaffected)",
       VALUE(st.cfg.local_ranks_filter = parse_rank_filter(value, origin)), nullptr},
      {"--duplicate-stdout-filters", 0, true, EnvKind::kPet, Group::kLogs, "TEXT,...",
       "tee'd stdout lines containing any TEXT also go to <attempt dir>/filtered_stdout.log, "
       "all ranks in one file (',,' is a literal comma)",
       VALUE(st.cfg.duplicate_stdout_filters = parse_filter_list(value)), nullptr},
      {"--duplicate-stderr-filters", 0, true, EnvKind::kPet, Group::kLogs, "TEXT,...",
       "the same for stderr: <attempt dir>/filtered_stderr.log",
       VALUE(st.cfg.duplicate_stderr_filters = parse_filter_list(value)), nullptr},
      // ---- torchrun: multi-node / rendezvous ----
      {"--nnodes", 0, true, EnvKind::kPet, Group::kMultiNode, "N|MIN:MAX", "number of nodes [1]",
       VALUE(parse_nnodes(st, value, origin)), nullptr},
      {"--node-rank", 0, true, EnvKind::kPet, Group::kMultiNode, "N",
       "rank of this node (static rendezvous) [0]",
       VALUE(st.cfg.node_rank = parse_int_in(value, origin, 0, 1 << 20, "a non-negative integer")),
       nullptr},
      {"--rdzv-backend", 0, true, EnvKind::kPet, Group::kMultiNode, "static|c10d",
       "rendezvous backend [static]", VALUE({
         std::string v = trim(value);
         if (v == "etcd" || v == "etcd-v2") {
           throw ConfigError(
               fmt::format("{}={} is not supported (gpurun has no etcd client); use static or c10d",
                           origin, v));
         }
         if (v != "static" && v != "c10d") bad_value(origin, value, "static or c10d");
         st.cfg.rdzv_backend = v;
       }),
       nullptr},
      {"--rdzv-endpoint", 0, true, EnvKind::kPet, Group::kMultiNode, "HOST[:PORT]",
       "rendezvous store address (static: overrides --master-addr/--master-port)",
       VALUE(st.cfg.rdzv_endpoint = trim(value)), nullptr},
      {"--rdzv-id", 0, true, EnvKind::kPet, Group::kMultiNode, "ID",
       "job id, exported as TORCHELASTIC_RUN_ID [none]", VALUE(st.cfg.rdzv_id = value), nullptr},
      {"--rdzv-conf", 0, true, EnvKind::kPet, Group::kMultiNode, "K=V,...",
       "rendezvous settings, e.g. timeout=900,read_timeout=60",
       VALUE(st.cfg.rdzv_conf = parse_rdzv_conf(value, origin)), nullptr},
      {"--local-addr", 0, true, EnvKind::kPet, Group::kMultiNode, "ADDR",
       "this node's address for the rendezvous (MASTER_ADDR when this node hosts the store)",
       VALUE(st.cfg.local_addr = non_empty(trim(value))), nullptr},
      // ---- gpurun extras ----
      {"--timeout", 0, true, EnvKind::kGpurun, Group::kExtras, "DURATION",
       "stop the whole run after DURATION (30s, 5m, 2h; 0 or none = no limit); exit 124",
       VALUE(st.cfg.run_timeout = parse_optional_timeout(value, origin)), nullptr},
      {"--rdzv-timeout", 0, true, EnvKind::kGpurun, Group::kExtras, "DURATION",
       "how long store waits and node rendezvous may take [15m]",
       VALUE(st.cfg.rdzv_timeout = parse_duration(trim(value), origin)), nullptr},
      {"--per-worker-visible-devices", 0, false, EnvKind::kGpurun, Group::kExtras, nullptr,
       "narrow CUDA_VISIBLE_DEVICES to each worker's own GPU (LOCAL_RANK unchanged)", nullptr,
       FLAG(st.cfg.narrow_visible_devices = on)},
      {"--summary-json", 0, true, EnvKind::kGpurun, Group::kExtras, "PATH",
       "also write the failure/success summary as JSON to PATH",
       VALUE(st.cfg.summary_json = non_empty(value)), nullptr},
      {"--color", 0, true, EnvKind::kGpurun, Group::kExtras, "auto|always|never",
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
           bad_value(origin, value, "auto, always or never");
         st.color_given = true;
       }),
       nullptr},
      {"--exit-code-mode", 0, true, EnvKind::kGpurun, Group::kExtras, "gpurun|torchrun",
       "gpurun: the failing worker's own code (the summary and --summary-json say whether a code "
       "came from a worker or from gpurun); torchrun: 1 for any failure, as torchrun [gpurun]",
       VALUE({
         const std::string v = trim(value);
         if (v != "gpurun" && v != "torchrun") bad_value(origin, value, "gpurun or torchrun");
         st.cfg.torchrun_exit_codes = v == "torchrun";
       }),
       nullptr},
      {"--stdin-rank", 0, true, EnvKind::kGpurun, Group::kExtras, "RANK|none",
       "the worker that reads gpurun's stdin and, on a terminal, gets the terminal's foreground "
       "(breakpoint(), pdb, input()); its output then goes to the terminal unprefixed [the "
       "worker, when --nproc-per-node is 1]",
       VALUE({
         const std::string v = trim(value);
         st.cfg.stdin_rank =
             v == "none" ? -1 : parse_int_in(v, origin, 0, 1 << 30, "a worker's RANK, or none");
       }),
       nullptr},
      {"--no-tag-output", 0, false, EnvKind::kGpurun, Group::kExtras, nullptr,
       "do not prefix worker console lines with [rank N]", nullptr, FLAG(st.cfg.tag_output = !on)},
      {"--dry-run", 0, false, EnvKind::kNone, Group::kExtras, nullptr,
       "print the plan (ranks, GPUs, commands, env, log paths) and exit", nullptr,
       FLAG(st.dry_run = on)},
      {"--dump-config", 0, false, EnvKind::kNone, Group::kExtras, nullptr,
       "print the resolved configuration as JSON and exit", nullptr, FLAG(st.dump_config = on)},
      {"--info", 0, false, EnvKind::kNone, Group::kExtras, nullptr,
       "print GPUs, driver/CUDA/NCCL versions, interfaces, port and env; same as `gpurun info`",
       nullptr, FLAG(st.info = on)},
      // ---- general ----
      {"--help", 'h', false, EnvKind::kNone, Group::kGeneral, nullptr, "show this help and exit",
       nullptr, FLAG(st.help = on)},
      {"--version", 0, false, EnvKind::kNone, Group::kGeneral, nullptr, "show the version and exit",
       nullptr, FLAG(st.version = on)},
  };
  return kOptions;
}

#undef VALUE
#undef FLAG

// Every long spelling of an option: the dash form and, where it has a dash, the underscore form
// (torchrun 2.x accepts both; 1.13 only the underscore form).
std::vector<std::string> spellings(const OptionSpec& o) {
  std::vector<std::string> out{o.name};
  std::string under = o.name;
  std::replace(under.begin() + 2, under.end(), '-', '_');
  if (under != o.name) out.push_back(under);
  return out;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

[[noreturn]] void unknown_option(const std::string& flag) {
  std::string best;
  std::size_t best_d = std::string::npos;
  std::string probe = flag;
  std::replace(probe.begin(), probe.end(), '_', '-');
  for (const auto& o : options()) {
    std::size_t d = edit_distance(probe, o.name);
    if (d < best_d) {
      best_d = d;
      best = o.name;
    }
  }
  std::size_t limit = std::max<std::size_t>(2, probe.size() / 3);
  if (!best.empty() && best_d <= limit) {
    throw ConfigError(fmt::format("unknown option '{}'; did you mean '{}'?", flag, best));
  }
  throw ConfigError(fmt::format("unknown option '{}'; see gpurun --help", flag));
}

// argparse's lookup for a long option: exact spelling first, then unique prefix. A prefix that
// matches only spellings of one option is that option (argparse would call --nproc ambiguous).
const OptionSpec& find_long(const std::string& flag) {
  const OptionSpec* exact = nullptr;
  std::vector<const OptionSpec*> prefixed;
  for (const auto& o : options()) {
    for (const auto& s : spellings(o)) {
      if (s == flag) exact = &o;
      if (s.size() > flag.size() && s.compare(0, flag.size(), flag) == 0) {
        if (std::find(prefixed.begin(), prefixed.end(), &o) == prefixed.end()) {
          prefixed.push_back(&o);
        }
      }
    }
  }
  if (exact) return *exact;
  if (prefixed.size() == 1 && flag.size() > 2) return *prefixed.front();
  if (prefixed.size() > 1 && flag.size() > 2) {
    std::string names;
    for (const auto* o : prefixed) names += (names.empty() ? "" : ", ") + std::string(o->name);
    throw ConfigError(
        fmt::format("ambiguous option '{}' could match {}; spell out more of it", flag, names));
  }
  unknown_option(flag);
}

const OptionSpec& find_short(char c, const std::string& arg) {
  for (const auto& o : options()) {
    if (o.short_name == c) return o;
  }
  unknown_option(arg);
}

bool looks_like_negative_number(const std::string& s) {
  if (s.size() < 2 || s[0] != '-') return false;
  bool digit = false;
  for (std::size_t i = 1; i < s.size(); ++i) {
    if (std::isdigit(static_cast<unsigned char>(s[i])))
      digit = true;
    else if (s[i] != '.')
      return false;
  }
  return digit;
}

bool looks_like_option(const std::string& s) {
  return s.size() > 1 && s[0] == '-' && !looks_like_negative_number(s);
}

void apply_value(ParseState& st, const OptionSpec& o, const std::string& value,
                 const std::string& origin) {
  o.set_value(st, value, origin);
  st.given.insert(o.name);
}

void apply_flag(ParseState& st, const OptionSpec& o, bool on) {
  o.set_flag(st, on);
  st.given.insert(o.name);
}

std::string display_name(const OptionSpec& o) {
  return o.short_name ? fmt::format("-{}/{}", o.short_name, o.name) : std::string(o.name);
}

// Parses launcher options from args[i...] up to the program; returns the index of the program
// (or args.size()). Sets st.help/version and returns early on them, as argparse does.
std::size_t parse_options(ParseState& st, const std::vector<std::string>& args, std::size_t i) {
  while (i < args.size()) {
    const std::string& arg = args[i];
    if (arg == "--") return i + 1;          // everything after is the program and its args
    if (!looks_like_option(arg)) return i;  // the program: the rest is passed through untouched
    ++i;
    const OptionSpec* opt = nullptr;
    std::optional<std::string> inline_value;
    std::string shown;  // how the user spelled it, for messages
    if (arg.rfind("--", 0) == 0) {
      auto eq = arg.find('=');
      std::string flag = arg.substr(0, eq);
      if (eq != std::string::npos) inline_value = arg.substr(eq + 1);
      opt = &find_long(flag);
      shown = flag;
    } else {
      // -m, -r 1, -r1, -r=1 (argparse accepts all three for single-letter options)
      opt = &find_short(arg[1], arg);
      shown = arg.substr(0, 2);
      if (arg.size() > 2) inline_value = arg[2] == '=' ? arg.substr(3) : arg.substr(2);
    }
    if (!opt->takes_value) {
      if (inline_value) {
        throw ConfigError(fmt::format("option {} takes no value (got '{}'); remove '={}'", shown,
                                      *inline_value, *inline_value));
      }
      apply_flag(st, *opt, true);
      if (st.help || st.version) return args.size();
      continue;
    }
    std::string value;
    if (inline_value) {
      value = *inline_value;
    } else {
      if (i >= args.size() || looks_like_option(args[i])) {
        throw ConfigError(fmt::format("option {} expects a value ({}){}", display_name(*opt),
                                      opt->metavar,
                                      i < args.size() ? fmt::format(", got '{}'", args[i]) : ""));
      }
      value = args[i++];
    }
    apply_value(st, *opt, value, display_name(*opt));
  }
  return i;
}

// PET_<DEST> (torchrun's env action: explicit flags win; booleans use check_env: an integer,
// nonzero = on) and GPURUN_<DEST> for gpurun extras (booleans: 1/0, true/false, yes/no).
void apply_env_fallbacks(ParseState& st, const EnvMap& env) {
  for (const auto& o : options()) {
    if (o.env == EnvKind::kNone || st.given.count(o.name)) continue;
    std::string name = env_name(o);
    auto v = env_get(env, name);
    if (!v) continue;
    std::string origin = fmt::format("environment variable {}", name);
    GPURUN_LOG_INFO("cli", "{}={} set by environment ({})", name, *v, o.name);
    if (o.takes_value) {
      apply_value(st, o, *v, origin);
      continue;
    }
    bool on = false;
    if (o.env == EnvKind::kPet) {
      try {
        on = parse_int(*v, origin) != 0;
      } catch (const ConfigError&) {
        bad_value(origin, *v, "1 (on) or 0 (off)");
      }
    } else {
      on = parse_bool(*v, origin);
    }
    apply_flag(st, o, on);
  }
}

std::string make_uuid4() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<std::uint64_t>(rd()) << 32) ^ rd());
  std::uint64_t hi = gen(), lo = gen();
  hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
  return fmt::format("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", hi >> 32, (hi >> 16) & 0xffff,
                     hi & 0xffff, lo >> 48, lo & 0xffffffffffffULL);
}

// "host:port", "[v6]:port", "host" -> (host, port or -1)
std::pair<std::string, int> split_endpoint(const std::string& ep, const std::string& origin) {
  std::string host = ep;
  std::string port;
  if (!ep.empty() && ep[0] == '[') {
    auto close = ep.find(']');
    if (close == std::string::npos) bad_value(origin, ep, "HOST[:PORT] with IPv6 in brackets");
    host = ep.substr(1, close - 1);
    if (close + 1 < ep.size()) {
      if (ep[close + 1] != ':') bad_value(origin, ep, "HOST[:PORT]");
      port = ep.substr(close + 2);
    }
  } else {
    auto colon = ep.rfind(':');
    if (colon != std::string::npos && ep.find(':') == colon) {
      host = ep.substr(0, colon);
      port = ep.substr(colon + 1);
    }
  }
  if (port.empty()) return {host, -1};
  return {host, parse_int_in(port, origin, 0, 65535, "HOST[:PORT] with a port 0-65535")};
}

void finish(ParseState& st, const EnvMap& env) {
  LaunchConfig& c = st.cfg;
  if (c.module && c.no_python) {
    throw ConfigError(
        "-m/--module and --no-python cannot be used together (one runs PROGRAM as a Python "
        "module, the other runs it directly); drop one of them");
  }
  if (c.run_path && (c.module || c.no_python)) {
    c.notes.push_back("--run-path takes precedence over -m/--module and --no-python");
    c.module = false;
    c.no_python = false;
  }
  if (c.node_rank >= c.nnodes_max) {
    throw ConfigError(fmt::format(
        "--node-rank {} is out of range for --nnodes {} (node ranks are 0..{}); fix --node-rank "
        "or --nnodes",
        c.node_rank, c.nnodes_max, c.nnodes_max - 1));
  }
  if (c.standalone) {
    if (st.given.count("--rdzv-backend") || st.given.count("--rdzv-endpoint") ||
        st.given.count("--rdzv-id")) {
      c.notes.push_back(
          "--standalone ignores --rdzv-backend, --rdzv-endpoint and --rdzv-id (as torchrun)");
    }
    if (c.nnodes_max > 1) {
      throw ConfigError(fmt::format(
          "--standalone is single-node but --nnodes is {}; drop --standalone or use --nnodes 1",
          c.nnodes_max));
    }
    c.rdzv_backend = "c10d";
    c.rdzv_endpoint = "localhost:0";
    c.rdzv_id = make_uuid4();
  }
  if (c.rdzv_backend == "static" && !c.rdzv_endpoint.empty()) {
    // torchrun: with static, a non-empty endpoint replaces master_addr:master_port.
    auto [host, port] = split_endpoint(c.rdzv_endpoint, "--rdzv-endpoint");
    if (port < 0) {
      throw ConfigError(fmt::format(
          "port is absent in --rdzv-endpoint '{}' (the static backend needs HOST:PORT); add a "
          "port or use --master-addr/--master-port",
          c.rdzv_endpoint));
    }
    if (!host.empty()) c.master_addr = host;
    c.master_port = port;
  } else if (c.rdzv_backend == "c10d" && !c.rdzv_endpoint.empty()) {
    auto [host, port] = split_endpoint(c.rdzv_endpoint, "--rdzv-endpoint");
    // One node hosts the rendezvous store on the endpoint's port (torchrun shares it with the
    // workers: MASTER_PORT); --standalone's "localhost:0" is a free port.
    if (c.nnodes_max == 1 && port >= 0 && !st.given.count("--master-port")) c.master_port = port;
  }
  if (c.local_addr) {
    if (c.rdzv_backend == "c10d" && c.nnodes_max == 1) {
      // torchrun: the address this node advertises, MASTER_ADDR when it hosts the store (the
      // store is bound there). Multi-node c10d: see run_multinode.cc.
      c.master_addr = *c.local_addr;
    } else if (c.rdzv_backend == "static") {
      c.notes.push_back(
          "--local-addr is used with --rdzv-backend c10d or --standalone (as torchrun); the "
          "static backend's store address is --master-addr");
    }
  }
  if (c.nnodes_max > 1) {
    if (c.rdzv_backend == "static" && !c.master_port) {
      c.master_port = 29500;  // every node must agree on the port: torchrun's default
    }
    if (c.rdzv_backend == "c10d" && c.rdzv_endpoint.empty()) {
      throw ConfigError(fmt::format(
          "--nnodes {} with --rdzv-backend c10d needs --rdzv-endpoint HOST[:PORT] (the nodes "
          "would otherwise each wait on their own localhost); pass the address of one node",
          c.nnodes_max));
    }
    if (c.nnodes_min != c.nnodes_max && c.rdzv_backend == "static") {
      throw ConfigError(fmt::format(
          "--nnodes {}:{} needs an elastic rendezvous but --rdzv-backend is static; use "
          "--nnodes {} or --rdzv-backend c10d",
          c.nnodes_min, c.nnodes_max, c.nnodes_max));
    }
  }
  if (c.standalone) c.master_port.reset();  // the store gets a free port

  // rdzv_conf timeout keys feed --rdzv-timeout when it was not given (seconds, as torchrun).
  if (!st.given.count("--rdzv-timeout")) {
    for (const char* key : {"join_timeout", "timeout"}) {
      auto it = c.rdzv_conf.find(key);
      if (it != c.rdzv_conf.end()) {
        c.rdzv_timeout = parse_duration(it->second, fmt::format("--rdzv-conf {}", key));
        break;
      }
    }
  }
  if (!st.given.count("--shutdown-timeout")) {
    if (auto v = env_get(env, "TORCH_ELASTIC_SHUTDOWN_TIMEOUT")) {
      c.shutdown_timeout = c.failure_shutdown_timeout =
          parse_duration(*v, "environment variable TORCH_ELASTIC_SHUTDOWN_TIMEOUT");
    }
  }
  if (c.signals_to_handle.empty()) c.signals_to_handle = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};
  if (!st.color_given) {
    auto nc = env_get(env, "NO_COLOR");
    if (nc && !nc->empty()) c.color = ColorMode::kNever;
  }
  if (auto p = env_get(env, "PYTHON_EXEC"); p && !p->empty()) {
    c.python = *p;
  } else if (auto q = env_get(env, "PYTHON"); q && !q->empty()) {
    c.python = *q;
  }
  if (c.virtual_local_rank && c.narrow_visible_devices) {
    // Both narrow CUDA_VISIBLE_DEVICES; --virtual-local-rank also sets LOCAL_RANK=0.
    c.notes.push_back("--virtual-local-rank already narrows CUDA_VISIBLE_DEVICES per worker");
  }
}

}  // namespace

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

  std::size_t prog = parse_options(st, args, i);
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
  apply_env_fallbacks(st, env);
  apply_slurm(st.cfg, st.given, env);  // srun gpurun: nodes, node rank, rendezvous from Slurm
  finish(st, env);

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

bool file_needs_python(const std::string& program) {
  // The file Python would open: the path as given, relative to the working directory.
  UniqueFd fd(::open(program.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd) return false;  // not here: a command in PATH, or missing (exec will say which)
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  char head[4] = {};
  const ssize_t n = ::read(fd.get(), head, sizeof head);
  if (n == 4 && std::memcmp(head,
                            "\x7f"
                            "ELF",
                            4) == 0)
    return false;  // a native binary
  const bool shebang = n >= 2 && head[0] == '#' && head[1] == '!';
  return !(shebang && ::access(program.c_str(), X_OK) == 0);  // an executable script runs as is
}

bool runs_with_python(const LaunchConfig& cfg) {
  if (cfg.run_path) return true;
  if (cfg.no_python) return false;
  if (cfg.module) return true;
  const std::string& p = cfg.program;
  if (p.size() >= 3 && p.compare(p.size() - 3, 3, ".py") == 0) return true;
  return file_needs_python(p);
}

std::vector<std::string> base_command(const LaunchConfig& cfg) {
  std::vector<std::string> cmd;
  if (runs_with_python(cfg)) {
    cmd.push_back(cfg.python);
    cmd.push_back("-u");
    if (cfg.module) cmd.push_back("-m");
  }
  cmd.push_back(cfg.program);
  cmd.insert(cmd.end(), cfg.program_args.begin(), cfg.program_args.end());
  return cmd;
}

std::string substitute_local_rank(const std::string& arg, int local_rank) {
  // string.Template's pattern (case-insensitive identifiers): $$ | $identifier | ${identifier};
  // safe_substitute leaves unknown names and a lone '$' as they are.
  auto is_start = [](char c) { return c == '_' || std::isalpha(static_cast<unsigned char>(c)); };
  auto is_cont = [](char c) { return c == '_' || std::isalnum(static_cast<unsigned char>(c)); };
  const std::string value = std::to_string(local_rank);
  std::string out;
  out.reserve(arg.size());
  std::size_t i = 0;
  while (i < arg.size()) {
    if (arg[i] != '$' || i + 1 >= arg.size()) {
      out += arg[i++];
      continue;
    }
    char next = arg[i + 1];
    if (next == '$') {
      out += '$';
      i += 2;
    } else if (is_start(next)) {
      std::size_t j = i + 1;
      while (j < arg.size() && is_cont(arg[j])) ++j;
      std::string name = arg.substr(i + 1, j - i - 1);
      out += name == "local_rank" ? value : arg.substr(i, j - i);
      i = j;
    } else if (next == '{') {
      auto close = arg.find('}', i + 2);
      std::string name = close == std::string::npos ? "" : arg.substr(i + 2, close - i - 2);
      bool ident =
          !name.empty() && is_start(name[0]) && std::all_of(name.begin(), name.end(), is_cont);
      if (ident) {
        out += name == "local_rank" ? value : arg.substr(i, close - i + 1);
        i = close + 1;
      } else {
        out += arg[i++];
      }
    } else {
      out += arg[i++];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// --help, --version, --dump-config
// ---------------------------------------------------------------------------------------------

std::string version_text() {
  return fmt::format(
      "gpurun {}\n"
      "a torchrun-compatible launcher (command line and worker environment of "
      "torch.distributed.run)\n",
      GPURUN_VERSION);
}

std::string help_text() {
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
    for (const auto& o : options()) {
      if (o.group != g.group) continue;
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

std::string config_to_json(const LaunchConfig& c) {
  using nlohmann::json;
  auto action_name = [](Action a) {
    switch (a) {
      case Action::kRun:
        return "run";
      case Action::kHelp:
        return "help";
      case Action::kVersion:
        return "version";
      case Action::kInfo:
        return "info";
      case Action::kDryRun:
        return "dry-run";
      case Action::kDumpConfig:
        return "dump-config";
      case Action::kStore:
        return "store";
    }
    return "?";
  };
  auto nproc_name = [](NprocKind k) {
    switch (k) {
      case NprocKind::kNumber:
        return "number";
      case NprocKind::kGpu:
        return "gpu";
      case NprocKind::kCpu:
        return "cpu";
      case NprocKind::kAuto:
        return "auto";
    }
    return "?";
  };
  auto std_json = [](const StdSpec& s) {
    json per = json::object();
    for (const auto& [r, m] : s.per_rank) per[std::to_string(r)] = m;
    return json{{"all", s.all}, {"per_rank", per}};
  };
  auto opt_str = [](const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); };
  json j;
  j["action"] = action_name(c.action);
  if (c.action == Action::kStore) j["store_args"] = c.store_args;
  j["nnodes"] = {{"min", c.nnodes_min}, {"max", c.nnodes_max}};
  j["node_rank"] = c.node_rank;
  j["nproc_per_node"] =
      c.nproc_kind == NprocKind::kNumber ? json(c.nproc_per_node) : json(nproc_name(c.nproc_kind));
  j["rdzv_backend"] = c.rdzv_backend;
  j["rdzv_endpoint"] = c.rdzv_endpoint;
  j["rdzv_id"] = c.rdzv_id;
  j["rdzv_conf"] = c.rdzv_conf;
  j["standalone"] = c.standalone;
  j["max_restarts"] = c.max_restarts;
  j["monitor_interval_ms"] = c.monitor_interval.count();
  j["start_method"] = c.start_method;
  j["role"] = c.role;
  j["module"] = c.module;
  j["no_python"] = c.no_python;
  j["run_path"] = c.run_path;
  j["log_dir"] = opt_str(c.log_dir);
  j["redirects"] = std_json(c.redirects);
  j["tee"] = std_json(c.tee);
  j["local_ranks_filter"] = c.local_ranks_filter ? json(*c.local_ranks_filter) : json(nullptr);
  j["duplicate_stdout_filters"] = c.duplicate_stdout_filters;
  j["duplicate_stderr_filters"] = c.duplicate_stderr_filters;
  j["master_addr"] = c.master_addr;
  j["master_port"] = c.master_port ? json(*c.master_port) : json(nullptr);
  j["local_addr"] = opt_str(c.local_addr);
  json sigs = json::array();
  for (int s : c.signals_to_handle) sigs.push_back(signal_name(s));
  j["signals_to_handle"] = sigs;
  j["shutdown_timeout_ms"] = c.shutdown_timeout.count();
  j["failure_shutdown_timeout_ms"] = c.failure_shutdown_timeout.count();
  j["exit_barrier_timeout_ms"] = c.exit_barrier_timeout.count();
  j["virtual_local_rank"] = c.virtual_local_rank;
  j["numa_binding"] = c.numa_binding ? json(to_string(*c.numa_binding)) : json(nullptr);
  j["event_log_handler"] = c.event_log_handler;
  j["per_worker_visible_devices"] = c.narrow_visible_devices;
  j["timeout_ms"] = c.run_timeout ? json(c.run_timeout->count()) : json(nullptr);
  j["rdzv_timeout_ms"] = c.rdzv_timeout.count();
  j["summary_json"] = opt_str(c.summary_json);
  j["exit_code_mode"] = c.torchrun_exit_codes ? "torchrun" : "gpurun";
  j["color"] = c.color == ColorMode::kAuto     ? "auto"
               : c.color == ColorMode::kAlways ? "always"
                                               : "never";
  j["tag_output"] = c.tag_output;
  j["python"] = c.python;
  j["stdin_rank"] = c.stdin_rank ? json(*c.stdin_rank) : json(nullptr);
  j["program"] = c.program;
  j["program_args"] = c.program_args;
  j["command"] = c.program.empty() ? json::array() : json(base_command(c));
  j["notes"] = c.notes;
  return j.dump(2);
}

}  // namespace gpurun::launcher
