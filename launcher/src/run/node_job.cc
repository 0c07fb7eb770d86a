// run_node(): one node's part of a job, as a job with named phases (run_internal.h):
//   1. bind_store: the store is bound FIRST, on master_addr:master_port (port 0/unset = the
//      kernel picks, atomically: the bound socket is the one we serve on, MASTER_PORT is read
//      back from it), or node 0's / the round's store is used (multi-node);
//   2. open_output + plan_attempt: the log tree (torchrun's layout), the console mux, and per
//      attempt the workers' env, streams and stdin;
//   3. supervise: spawn each attempt's workers and watch them (restarts, signals, --timeout);
//   4. summarize: the failure report (stderr, --summary-json), events, the exit code.
// The GPUs and the process runner come from the caller (NodeTools), so the phases run in unit
// tests with FakeGpuProbe and FakeProcessRunner (node_job_test.cc).
// A busy --master-port is exit 3 (ExitCode::kRendezvousFailed): it is not a usage error (the
// same command works once the port is free), and 3 is what scripts see for any store failure.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <map>
#include <memory>
#include <optional>

#include "cli/config.h"
#include "gpurun/common/error.h"
#include "gpurun/rendezvous/bind_error.h"
#include "gpurun/rendezvous/job_access.h"
#include "gpurun/rendezvous/store_server.h"
#include "output/failure_summary.h"
#include "output/output_mux.h"
#include "probe/numa.h"
#include "process/process_runner.h"
#include "process/supervisor.h"
#include "run/run_internal.h"
#include "run/worker_env.h"

namespace gpurun::launcher {

namespace {

std::string hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

// Python's socket.getfqdn(), which torchrun prints as `host`: the host name's first address,
// looked up in reverse; its canonical name and aliases, the first one with a dot, else the
// canonical name; the plain host name when a lookup fails.
std::string fqdn() {
  const std::string name = hostname();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  addrinfo* res = nullptr;
  if (::getaddrinfo(name.c_str(), nullptr, &hints, &res) != 0 || res == nullptr) return name;
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(res, ::freeaddrinfo);
  const void* addr = nullptr;
  socklen_t len = 0;
  if (res->ai_family == AF_INET) {
    addr = &reinterpret_cast<const sockaddr_in*>(res->ai_addr)->sin_addr;
    len = sizeof(in_addr);
  } else if (res->ai_family == AF_INET6) {
    addr = &reinterpret_cast<const sockaddr_in6*>(res->ai_addr)->sin6_addr;
    len = sizeof(in6_addr);
  } else {
    return name;
  }
  hostent he{};
  hostent* out = nullptr;
  int herr = 0;
  std::vector<char> buf(16384);
  if (::gethostbyaddr_r(addr, len, res->ai_family, &he, buf.data(), buf.size(), &out, &herr) != 0 ||
      out == nullptr || out->h_name == nullptr) {
    return name;
  }
  if (std::strchr(out->h_name, '.') != nullptr) return out->h_name;
  for (char** a = out->h_aliases; a != nullptr && *a != nullptr; ++a) {
    if (std::strchr(*a, '.') != nullptr) return *a;
  }
  return out->h_name;
}

bool use_color(ColorMode mode, const EnvMap& env) {
  if (mode == ColorMode::kAlways) return true;
  if (mode == ColorMode::kNever) return false;
  auto term = env_get(env, "TERM");
  if (term && *term == "dumb") return false;
  return ::isatty(1) && ::isatty(2);
}

std::vector<int> forward_only_signals(const LaunchConfig& cfg) {
  std::vector<int> out;
  for (int s : {SIGUSR1, SIGUSR2}) {
    if (std::find(cfg.signals_to_handle.begin(), cfg.signals_to_handle.end(), s) ==
        cfg.signals_to_handle.end()) {
      out.push_back(s);
    }
  }
  return out;
}

FailureEntry make_entry(const WorkerRecord& w, const std::map<int, WorkerSpec>& specs,
                        const OutputMux& mux, const LaunchConfig& cfg) {
  FailureEntry f;
  f.worker = w;
  if (runs_with_python(cfg)) f.python_program = cfg.program;
  auto it = specs.find(w.local_rank);
  if (it != specs.end()) {
    auto ef = env_get(it->second.env, "TORCHELASTIC_ERROR_FILE");
    if (ef && !ef->empty()) f.error_file = read_error_file(*ef);
    const WorkerSpec& spec = it->second;
    if (!spec.stderr_path.empty() && !spec.console_stderr) {
      f.last_lines = tail_file(spec.stderr_path, 10);
      f.last_lines_from = spec.stderr_path;
    }
  }
  if (f.last_lines.empty()) {
    f.last_lines = mux.last_lines(w.local_rank, Stream::kStderr);
    f.last_lines_from = "stderr";
  }
  if (f.last_lines.empty()) {
    f.last_lines = mux.last_lines(w.local_rank, Stream::kStdout);
    f.last_lines_from = "stdout";
  }
  return f;
}

std::string entrypoint_of(const LaunchConfig& cfg) { return cfg.program; }

class NodeJob {
 public:
  NodeJob(const LaunchConfig& cfg, const EnvMap& env, const NodeFacts& node, const NodeTools& tools)
      : cfg_(cfg), env_(env), node_(node), tools_(tools) {}

  // nproc from the GPUs the caller probed; the notes found while resolving.
  void begin() {
    nproc_ = resolve_nproc(cfg_, tools_.gpus, cpu_count());
    if (nproc_ < 1) throw ConfigError("--nproc-per-node must be at least 1");
    if (!node_.print_notes) return;  // an elastic agent's later round: printed once already
    for (const auto& n : cfg_.notes) print_note(n);
    // A CUDA_VISIBLE_DEVICES entry CUDA would stop at (e.g. "1,zz,0" drops GPU 0, "zz" leaves
    // the workers on CPU) is a likely typo: say so at once (the dry run shows it in the plan).
    for (const auto& n : tools_.gpus.notes) {
      if (n.rfind("CUDA_VISIBLE_DEVICES=", 0) == 0 && n.find("ignored") != std::string::npos) {
        print_note(n);
      }
    }
  }

  // Phase 1. nullopt: the store is up (or elsewhere); else the exit code of a bind failure,
  // already reported.
  std::optional<int> bind_store() {
    master_addr_ = cfg_.master_addr;
    master_port_ = cfg_.master_port.value_or(0);
    if (node_.external_store) {
      master_addr_ = node_.master_addr;
      master_port_ = node_.master_port;
      return std::nullopt;
    }
    rendezvous::StoreServerOptions so;
    rendezvous::apply_store_env(so, env_);  // GPURUN_JOB_SECRET among them
    // One node and no job secret given: one of its own, for its workers (job_access.h).
    if (so.job_secret.empty() && node_.group_world_size <= 1) {
      so.job_secret = rendezvous::generate_job_secret();
      job_secret_ = so.job_secret;
    }
    so.host = node_.bind_host.empty() ? cfg_.master_addr : node_.bind_host;
    so.port = master_port_;
    try {
      store_ = std::make_unique<rendezvous::StoreServerThread>(so);
    } catch (const BindError& e) {
      const std::string msg = rendezvous::bind_failure_message(
          e,
          {.in_use = "pass --master-port 0 (auto) or pick a free port",
           .not_local = "--master-addr must be an address of this host (or 127.0.0.1)",
           .denied = "ports below 1024 need privileges, pick another --master-port or 0 (auto)",
           .other = "check --master-addr/--master-port"},
          e.code() == std::errc::address_in_use ? describe_port_holder(e.port()) : "");
      write_stderr("gpurun: error: " + msg);
      const int code = static_cast<int>(ExitCode::kRendezvousFailed);
      if (cfg_.summary_json) write_summary_json(*cfg_.summary_json, error_summary_json(code, msg));
      return cfg_.torchrun_exit_codes ? torchrun_exit_code(code) : code;
    }
    master_port_ = store_->port();
    return std::nullopt;
  }

  // Phase 2a: the log tree and the console.
  void open_output() {
    logs_ = LogTree::create(cfg_, cfg_.rdzv_id, env_);
    world_size_ = node_.world_size > 0 ? node_.world_size : nproc_;
    OutputOptions oo;
    oo.tag = cfg_.tag_output;
    oo.color = use_color(cfg_.color, env_);
    oo.prefix_template = env_get(env_, "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE").value_or("");
    oo.role = cfg_.role;
    if (node_.group_world_size > 1) oo.host = hostname();
    oo.stdout_filters = cfg_.duplicate_stdout_filters;
    oo.stderr_filters = cfg_.duplicate_stderr_filters;
    mux_ = std::make_unique<OutputMux>(oo);
    // Output goes through gpurun when it is tagged (several workers) or tee'd; a single worker
    // without files keeps the terminal itself (colours, isatty, interactive debuggers).
    pipe_console_ = cfg_.tag_output && world_size_ > 1;
    // stdin: torchrun's workers inherit it. On a terminal only one worker can have it: the one
    // --stdin-rank names (by default the only worker of a one-worker node), which also becomes
    // the terminal's foreground process group; the others read /dev/null (a background process
    // group reading its terminal would stop).
    stdin_tty_ = ::isatty(0) != 0;
    stdin_rank_ = cfg_.stdin_rank ? *cfg_.stdin_rank : nproc_ == 1 ? node_.base_global_rank : -1;
  }

  // Phase 2b, once per attempt (the supervisor calls it right before spawning).
  std::vector<PlannedWorker> plan_attempt(int restart_count) {
    AttemptFacts facts;
    facts.restart_count = node_.restart_count + restart_count;
    facts.run_id = cfg_.rdzv_id;
    facts.master_addr = master_addr_;
    facts.master_port = master_port_;
    facts.attempt_log_dir = logs_.begin_attempt(facts.restart_count, nproc_);
    facts.group_rank = node_.group_rank;
    facts.group_world_size = node_.group_world_size;
    facts.base_global_rank = node_.base_global_rank;
    facts.world_size = world_size_;
    std::vector<std::string> notes;
    auto specs = plan_workers(cfg_, nproc_, tools_.gpus, facts, env_, &notes);
    apply_numa_binding(cfg_, tools_.gpus, env_, specs, &notes);
    if (!job_secret_.empty()) {  // generated here (a given one is in env_ already)
      for (auto& spec : specs) spec.env[rendezvous::kJobSecretEnv] = job_secret_;
    }
    if (!notes_printed_) {
      for (const auto& n : notes) print_note(n);
      notes_printed_ = true;
    }
    std::vector<PlannedWorker> planned;
    std::vector<RankOutput> outputs;
    last_specs_.clear();
    for (auto& s : specs) {
      PlannedWorker p;
      p.rank = s.rank;
      p.request.id = s.local_rank;
      p.request.argv = s.argv;
      p.request.env = s.env;
      const bool has_stdin = s.rank == stdin_rank_;
      p.request.stdin_null =
          !has_stdin && (stdin_tty_ || (cfg_.stdin_rank && *cfg_.stdin_rank >= 0));
      p.request.foreground = stdin_tty_ && has_stdin;
      p.request.cpus = s.cpus;
      RankOutput ro;
      // The interactive worker writes to the terminal itself (prompts without a newline).
      auto [out, err] = wire_streams(s, pipe_console_ && !has_stdin, &ro);
      p.request.out = out;
      p.request.err = err;
      outputs.push_back(ro);
      planned.push_back(std::move(p));
      last_specs_.emplace(s.local_rank, std::move(s));
    }
    // --duplicate-*-filters act on tee'd streams (as torchrun's), into the attempt's directory.
    std::string filtered[2];
    for (int k = 0; k < 2; ++k) {
      const bool is_out = k == 0;
      const auto& filters = is_out ? cfg_.duplicate_stdout_filters : cfg_.duplicate_stderr_filters;
      if (filters.empty()) continue;
      const bool teed = std::any_of(outputs.begin(), outputs.end(), [&](const RankOutput& o) {
        return !(is_out ? o.tee_stdout_path : o.tee_stderr_path).empty();
      });
      if (teed && !facts.attempt_log_dir.empty()) {
        filtered[k] =
            fmt::format("{}/filtered_{}.log", facts.attempt_log_dir, is_out ? "stdout" : "stderr");
      } else if (restart_count == 0 && node_.print_notes) {
        print_note(fmt::format(
            "--duplicate-{0}-filters: no rank's {0} is tee'd to a log file, so nothing is "
            "duplicated; add -t {1} (or -t 3) and a --log-dir other than /dev/null",
            is_out ? "stdout" : "stderr", is_out ? 1 : 2));
      }
    }
    mux_->begin_attempt(outputs, filtered[0], filtered[1]);
    return planned;
  }

  // Phase 3: spawn and supervise every attempt.
  void supervise() {
    SupervisorOptions so;
    so.shutdown_timeout = cfg_.shutdown_timeout;
    so.failure_shutdown_timeout = cfg_.failure_shutdown_timeout;
    so.run_timeout = cfg_.run_timeout;
    so.max_restarts = node_.stop_requested ? 0 : cfg_.max_restarts;
    so.stop_requested = node_.stop_requested;
    so.stop_signals = cfg_.signals_to_handle;
    so.forward_signals = forward_only_signals(cfg_);

    // kill -9 gpurun: its watchdog kills what the workers started and removes the temporary base.
    ReaperOptions reaper;
    reaper.cleanup_dir = logs_.temp_base();
    if (!logs_.run_dir().empty())
      reaper.env_marker = "TORCHELASTIC_ERROR_FILE=" + logs_.run_dir() + "/";
    runner_ = tools_.make_runner(reaper);
    Supervisor sup(*runner_, so, mux_.get(), [](const std::string& line) { write_stderr(line); });
    result_ = sup.run([this](int restart_count) { return plan_attempt(restart_count); });
    if (node_.result_out) *node_.result_out = result_;
    mux_->flush_all();
  }

  // Phase 4: the report and the exit code; the runner, the store and the log tree are closed.
  int summarize() {
    FailureReport report;
    report.entrypoint = entrypoint_of(cfg_);
    report.host = fqdn();
    report.result = result_;
    report.torchrun_exit_codes = cfg_.torchrun_exit_codes;
    if (result_.first_failure) {
      report.root = make_entry(*result_.first_failure, last_specs_, *mux_, cfg_);
    }
    for (const auto& o : result_.other_failures) {
      report.others.push_back(make_entry(o, last_specs_, *mux_, cfg_));
    }
    if (cfg_.event_log_handler == "console") {
      EventContext ec;
      ec.run_id = cfg_.rdzv_id;
      ec.group_rank = node_.group_rank;
      ec.group_world_size = node_.group_world_size;
      ec.role = cfg_.role;
      ec.rdzv_backend = cfg_.rdzv_backend;
      ec.total_run_time_s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start_).count();
      ec.timestamp_s = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
      for (const auto& e : worker_events(report, ec)) write_stderr(e.dump());
    }
    const std::string summary = format_failure_summary(report);
    if (node_.summary_out) {
      *node_.summary_out = summary;
    } else if (!summary.empty()) {
      write_stderr(summary);
    }
    if (cfg_.summary_json) write_summary_json(*cfg_.summary_json, summary_json(report));
    // The cgroup knows an OOM kill for sure (a SIGKILL alone could be anyone's).
    if (const long ooms = result_.first_failure ? runner_->oom_kills() : 0; ooms > 0) {
      write_stderr(fmt::format(
          "gpurun: {} worker process{} of this run {} killed by the kernel's OOM killer "
          "(oom_kill in {}); give the job more memory or use less per rank\n",
          ooms, ooms == 1 ? "" : "es", ooms == 1 ? "was" : "were", runner_->oom_source()));
    }
    runner_.reset();
    if (store_) store_->stop();
    logs_.finish();
    return exit_origin(report).exit_code;
  }

 private:
  const LaunchConfig& cfg_;
  const EnvMap& env_;
  std::string job_secret_;  // generated for this node's workers ("" = given, or none)
  const NodeFacts& node_;
  const NodeTools& tools_;
  const std::chrono::steady_clock::time_point t_start_ = std::chrono::steady_clock::now();
  int nproc_ = 0;
  int world_size_ = 0;
  std::unique_ptr<rendezvous::StoreServerThread> store_;
  std::string master_addr_;
  std::uint16_t master_port_ = 0;
  LogTree logs_;
  std::unique_ptr<OutputMux> mux_;
  bool pipe_console_ = false;
  bool stdin_tty_ = false;
  int stdin_rank_ = -1;
  bool notes_printed_ = !node_.print_notes;
  std::map<int, WorkerSpec> last_specs_;
  std::unique_ptr<ProcessRunner> runner_;
  SupervisorResult result_;
};

}  // namespace

int run_node(const LaunchConfig& cfg, const EnvMap& env, const NodeFacts& node,
             const NodeTools& tools) {
  NodeJob job(cfg, env, node, tools);
  job.begin();
  if (const auto failed = job.bind_store()) return *failed;
  job.open_output();
  job.supervise();
  return job.summarize();
}

}  // namespace gpurun::launcher
