// run(): the orchestration of one gpurun job. Order matters:
//   1. GPUs and nproc (cheap: NVML is dlopen'ed, a missing driver is "0 GPUs");
//   2. the store is bound FIRST, on master_addr:master_port (port 0/unset = the kernel picks,
//      atomically: the bound socket is the one we serve on, MASTER_PORT is read back from it);
//   3. the log tree (torchrun's layout), then per attempt: plan_workers, spawn, supervise;
//   4. the summary (stderr, --summary-json) and the exit code.
// A busy --master-port is exit 3 (ExitCode::kRendezvousFailed): it is not a usage error (the
// same command works once the port is free), and 3 is what scripts see for any store failure.
#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <thread>

#include "cli/config.h"
#include "gpurun/common/error.h"
#include "gpurun/common/io.h"
#include "gpurun/common/log.h"
#include "gpurun/rendezvous/store_server.h"
#include "output/failure_summary.h"
#include "output/output_mux.h"
#include "probe/numa.h"
#include "process/process_runner.h"
#include "process/supervisor.h"
#include "run/run_internal.h"
#include "run/worker_env.h"

namespace gpurun::launcher {

namespace fs = std::filesystem;

void write_stderr(const std::string& text) {
  std::string t = text;
  if (t.empty() || t.back() != '\n') t += '\n';
  write_all(STDERR_FILENO, t);
}

namespace {

void print_note(const std::string& note) {
  if (!note.empty() && note[0] == '*') {
    write_stderr(note);  // torchrun's OMP banner, verbatim (people grep it)
  } else if (note.rfind("info: ", 0) == 0) {
    write_stderr("gpurun: " + note.substr(6));  // what gpurun inferred (e.g. from Slurm)
  } else {
    write_stderr("gpurun: warning: " + note);
  }
}

std::string random_suffix(std::size_t n) {
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789_";
  std::random_device rd;
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += kChars[rd() % (sizeof(kChars) - 1)];
  return s;
}

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

}  // namespace

// ---- log tree ----

LogTree LogTree::create(const LaunchConfig& cfg, const std::string& run_id, const EnvMap& env) {
  LogTree t;
  if (cfg.log_dir && *cfg.log_dir == "/dev/null") return t;  // torchrun: no files at all
  std::string base;
  if (cfg.log_dir) {
    base = *cfg.log_dir;
    std::error_code ec;
    fs::create_directories(base, ec);
    if (ec) {
      throw ConfigError(fmt::format("cannot create --log-dir '{}' ({}); pick a writable directory",
                                    base, ec.message()));
    }
  } else {
    std::string tmpl =
        env_get(env, "TMPDIR").value_or("/tmp") + "/gpurun_XXXXXX";  // torchrun: torchelastic_
    if (::mkdtemp(tmpl.data()) == nullptr) {
      throw ConfigError(
          fmt::format("cannot create a temporary log directory '{}' ({}); set "
                      "TMPDIR or pass --log-dir",
                      tmpl, std::strerror(errno)));
    }
    base = tmpl;
    t.temp_base_ = base;
  }
  // <base>/<run_id>_<random8>, created once per gpurun run (torchrun: mkdtemp(prefix=run_id_)).
  for (int tries = 0; tries < 100; ++tries) {
    std::string dir = fmt::format("{}/{}_{}", base, run_id, random_suffix(8));
    if (::mkdir(dir.c_str(), 0755) == 0) {
      t.run_dir_ = dir;
      return t;
    }
    if (errno != EEXIST) {
      throw ConfigError(fmt::format("cannot create log directory '{}' ({}); check --log-dir", dir,
                                    std::strerror(errno)));
    }
  }
  throw ConfigError("cannot create a unique log directory under " + base);
}

std::string LogTree::begin_attempt(int restart_count, int nproc) {
  if (run_dir_.empty()) return "";
  const std::string attempt = fmt::format("{}/attempt_{}", run_dir_, restart_count);
  std::error_code ec;
  fs::remove_all(attempt, ec);  // recreated at each attempt, as torchrun
  for (int lr = 0; lr < nproc; ++lr) {
    fs::create_directories(fmt::format("{}/{}", attempt, lr), ec);
    if (ec) {
      throw ConfigError(fmt::format("cannot create log directory '{}/{}' ({}); check --log-dir",
                                    attempt, lr, ec.message()));
    }
  }
  attempts_.emplace_back(attempt, nproc);
  return attempt;
}

void LogTree::finish() {
  // A temporary base that holds no file (no -r/-t, no error.json) leaves nothing behind:
  // rmdir bottom-up (N+3 syscalls); a directory holding a file stops it, and is kept.
  if (temp_base_.empty()) return;
  bool empty = true;
  for (const auto& [attempt, nproc] : attempts_) {
    for (int lr = 0; lr < nproc; ++lr) {
      empty = ::rmdir(fmt::format("{}/{}", attempt, lr).c_str()) == 0 && empty;
    }
    empty = ::rmdir(attempt.c_str()) == 0 && empty;
  }
  if (empty && ::rmdir(run_dir_.c_str()) == 0) ::rmdir(temp_base_.c_str());
}

// ---- stream wiring ----

std::pair<StreamSetup, StreamSetup> wire_streams(const WorkerSpec& w, bool pipe_console,
                                                 RankOutput* mux_out) {
  auto one = [&](const std::string& path, bool console, bool is_stderr, std::string* tee) {
    StreamSetup s;
    if (!path.empty() && console) {
      s.mode = StreamMode::kPipe;  // tee: gpurun copies to the file and the console
      *tee = path;
    } else if (!path.empty()) {
      s.mode = StreamMode::kFile;  // -r without -t: the child writes the file itself
      s.path = path;
    } else if (console) {
      s.mode = pipe_console ? StreamMode::kPipe : StreamMode::kInherit;
    } else {
      // Outside --local-ranks-filter: torchrun sends it to /dev/null. gpurun still reads stderr
      // (never shown) so the failure summary can quote it.
      s.mode = is_stderr ? StreamMode::kPipe : StreamMode::kNull;
    }
    return s;
  };
  RankOutput r;
  r.local_rank = w.local_rank;
  r.rank = w.rank;
  r.console_stdout = w.console_stdout;
  r.console_stderr = w.console_stderr;
  auto out = one(w.stdout_path, w.console_stdout, false, &r.tee_stdout_path);
  auto err = one(w.stderr_path, w.console_stderr, true, &r.tee_stderr_path);
  if (mux_out) *mux_out = r;
  return {out, err};
}

// ---- the run ----

namespace {

std::string bind_error_message(const BindError& e, const std::string& host, int port) {
  const std::string addr = fmt::format("{}:{}", host, port);
  if (e.code() == std::errc::address_in_use) {
    const std::string holder = describe_port_holder(port);
    return fmt::format(
        "cannot bind store on {} (address already in use{}); pass --master-port 0 (auto) or pick "
        "a free port",
        addr, holder.empty() ? "" : " by " + holder);
  }
  if (e.code() == std::errc::address_not_available) {
    return fmt::format(
        "cannot bind store on {} ({}); --master-addr must be an address of this host (or "
        "127.0.0.1)",
        addr, e.code().message());
  }
  if (e.code() == std::errc::permission_denied) {
    return fmt::format(
        "cannot bind store on {} ({}); ports below 1024 need privileges, pick "
        "another --master-port or 0 (auto)",
        addr, e.code().message());
  }
  return fmt::format("cannot bind store on {} ({}); check --master-addr/--master-port", addr,
                     e.what());
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

}  // namespace

int run(const LaunchConfig& cfg, const EnvMap& env) {
  if (cfg.nnodes_max > 1 && cfg.action == Action::kDryRun) {
    // A multi-node dry run never touches the network (no store, no rendezvous): this node's plan
    // from what it knows, ranks as if every node ran as many workers as this one.
    NodeFacts node;
    node.group_world_size = cfg.nnodes_max;
    if (cfg.rdzv_backend != "static") {
      print_note(
          fmt::format("info: dry run: the group rank and the global ranks are assigned at "
                      "rendezvous on {} (shown for group rank 0 of {} nodes)",
                      cfg.rdzv_endpoint, cfg.nnodes_max));
    } else {
      node.group_rank = cfg.node_rank;
      print_note(fmt::format(
          "info: dry run: node rank {} of {}; the global ranks assume every "
          "node runs as many workers as this one (the real ranges come from "
          "every node's count at rendezvous on {}:{})",
          cfg.node_rank, cfg.nnodes_max, cfg.master_addr, cfg.master_port.value_or(29500)));
    }
    return run_node(cfg, env, node);
  }
  if (cfg.nnodes_max > 1) {
    return cfg.rdzv_backend == "static" ? run_multinode(cfg, env) : run_elastic(cfg, env);
  }
  return run_node(cfg, env, NodeFacts{});
}

int run_node(const LaunchConfig& cfg, const EnvMap& env, const NodeFacts& node) {
  const auto t_start = std::chrono::steady_clock::now();
  for (const auto& n : cfg.notes) print_note(n);

  auto probe = make_default_gpu_probe();
  const GpuInventory gpus = probe->probe(env);
  const int cpus = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int nproc = resolve_nproc(cfg, gpus, cpus);
  if (nproc < 1) throw ConfigError("--nproc-per-node must be at least 1");

  const std::string run_id = cfg.rdzv_id;

  if (cfg.action != Action::kDryRun) {
    // A CUDA_VISIBLE_DEVICES entry CUDA would stop at (e.g. "1,zz,0" drops GPU 0, "zz" leaves the
    // workers on CPU) is a likely typo: say so at once (the dry run shows it in the plan).
    for (const auto& n : gpus.notes) {
      if (n.rfind("CUDA_VISIBLE_DEVICES=", 0) == 0 && n.find("ignored") != std::string::npos) {
        print_note(n);
      }
    }
  }

  if (cfg.action == Action::kDryRun) {
    AttemptFacts facts;
    facts.run_id = run_id;
    facts.master_addr = cfg.master_addr;
    facts.master_port = cfg.master_port.value_or(0);
    facts.attempt_log_dir = cfg.log_dir && *cfg.log_dir != "/dev/null"
                                ? fmt::format("{}/{}_XXXXXXXX/attempt_0", *cfg.log_dir, run_id)
                                : "";
    facts.group_rank = node.group_rank;
    facts.group_world_size = node.group_world_size;
    facts.base_global_rank = node.group_rank * nproc;
    facts.world_size = nproc * node.group_world_size;
    std::vector<std::string> notes;
    auto workers = plan_workers(cfg, nproc, gpus, facts, env, &notes);
    apply_numa_binding(cfg, gpus, env, workers, &notes);
    for (const auto& n : notes) print_note(n);
    std::fputs(format_plan(cfg, workers, gpus).c_str(), stdout);
    std::fflush(stdout);
    return 0;
  }

  // 2. The store, bound before anything else (or the store of node 0, multi-node).
  std::unique_ptr<rendezvous::StoreServerThread> store;
  std::string master_addr = cfg.master_addr;
  int master_port = cfg.master_port.value_or(0);
  if (node.external_store) {
    master_addr = node.master_addr;
    master_port = node.master_port;
  } else {
    rendezvous::StoreServerOptions so;
    rendezvous::apply_store_env(so, env);
    so.host = node.bind_host.empty() ? cfg.master_addr : node.bind_host;
    so.port = static_cast<std::uint16_t>(master_port);
    try {
      store = std::make_unique<rendezvous::StoreServerThread>(so);
    } catch (const BindError& e) {
      const std::string msg = bind_error_message(e, so.host, master_port);
      write_stderr("gpurun: error: " + msg);
      const int code = static_cast<int>(ExitCode::kRendezvousFailed);
      if (cfg.summary_json) write_summary_json(*cfg.summary_json, error_summary_json(code, msg));
      return cfg.torchrun_exit_codes ? torchrun_exit_code(code) : code;
    }
    master_port = store->port();
  }

  // 3. Logs, output, supervision.
  LogTree logs = LogTree::create(cfg, run_id, env);
  const int world_size = node.world_size > 0 ? node.world_size : nproc;
  const bool multi = node.group_world_size > 1;

  OutputOptions oo;
  oo.tag = cfg.tag_output;
  oo.color = use_color(cfg.color, env);
  oo.prefix_template = env_get(env, "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE").value_or("");
  oo.role = cfg.role;
  if (multi) oo.host = hostname();
  oo.stdout_filters = cfg.duplicate_stdout_filters;
  oo.stderr_filters = cfg.duplicate_stderr_filters;
  OutputMux mux(oo);
  // Output goes through gpurun when it is tagged (several workers) or tee'd; a single worker
  // without files keeps the terminal itself (colours, isatty, interactive debuggers).
  const bool pipe_console = cfg.tag_output && world_size > 1;
  // stdin: torchrun's workers inherit it. On a terminal only one worker can have it: the one
  // --stdin-rank names (by default the only worker of a one-worker node), which also becomes
  // the terminal's foreground process group; the others read /dev/null (a background process
  // group reading its terminal would stop).
  const bool stdin_tty = ::isatty(0) != 0;
  const int stdin_rank = cfg.stdin_rank ? *cfg.stdin_rank : nproc == 1 ? node.base_global_rank : -1;

  std::map<int, WorkerSpec> last_specs;
  bool notes_printed = false;
  auto plan = [&](int restart_count) {
    AttemptFacts facts;
    facts.restart_count = node.restart_count + restart_count;
    facts.run_id = run_id;
    facts.master_addr = master_addr;
    facts.master_port = master_port;
    facts.attempt_log_dir = logs.begin_attempt(facts.restart_count, nproc);
    facts.group_rank = node.group_rank;
    facts.group_world_size = node.group_world_size;
    facts.base_global_rank = node.base_global_rank;
    facts.world_size = world_size;
    std::vector<std::string> notes;
    auto specs = plan_workers(cfg, nproc, gpus, facts, env, &notes);
    apply_numa_binding(cfg, gpus, env, specs, &notes);
    if (!notes_printed) {
      for (const auto& n : notes) print_note(n);
      notes_printed = true;
    }
    std::vector<PlannedWorker> planned;
    std::vector<RankOutput> outputs;
    last_specs.clear();
    for (auto& s : specs) {
      PlannedWorker p;
      p.rank = s.rank;
      p.request.id = s.local_rank;
      p.request.argv = s.argv;
      p.request.env = s.env;
      const bool has_stdin = s.rank == stdin_rank;
      p.request.stdin_null = !has_stdin && (stdin_tty || (cfg.stdin_rank && *cfg.stdin_rank >= 0));
      p.request.foreground = stdin_tty && has_stdin;
      p.request.cpus = s.cpus;
      RankOutput ro;
      // The interactive worker writes to the terminal itself (prompts without a newline).
      auto [out, err] = wire_streams(s, pipe_console && !has_stdin, &ro);
      p.request.out = out;
      p.request.err = err;
      outputs.push_back(ro);
      planned.push_back(std::move(p));
      last_specs.emplace(s.local_rank, std::move(s));
    }
    // --duplicate-*-filters act on tee'd streams (as torchrun's), into the attempt's directory.
    std::string filtered[2];
    for (int k = 0; k < 2; ++k) {
      const bool is_out = k == 0;
      const auto& filters = is_out ? cfg.duplicate_stdout_filters : cfg.duplicate_stderr_filters;
      if (filters.empty()) continue;
      const bool teed = std::any_of(outputs.begin(), outputs.end(), [&](const RankOutput& o) {
        return !(is_out ? o.tee_stdout_path : o.tee_stderr_path).empty();
      });
      if (teed && !facts.attempt_log_dir.empty()) {
        filtered[k] =
            fmt::format("{}/filtered_{}.log", facts.attempt_log_dir, is_out ? "stdout" : "stderr");
      } else if (restart_count == 0) {
        print_note(fmt::format(
            "--duplicate-{0}-filters: no rank's {0} is tee'd to a log file, so nothing is "
            "duplicated; add -t {1} (or -t 3) and a --log-dir other than /dev/null",
            is_out ? "stdout" : "stderr", is_out ? 1 : 2));
      }
    }
    mux.begin_attempt(outputs, filtered[0], filtered[1]);
    return planned;
  };

  SupervisorOptions so;
  so.shutdown_timeout = cfg.shutdown_timeout;
  so.failure_shutdown_timeout = cfg.failure_shutdown_timeout;
  so.run_timeout = cfg.run_timeout;
  so.max_restarts = node.stop_requested ? 0 : cfg.max_restarts;
  so.stop_requested = node.stop_requested;
  so.stop_signals = cfg.signals_to_handle;
  so.forward_signals = forward_only_signals(cfg);

  // kill -9 gpurun: its watchdog kills what the workers started and removes the temporary base.
  ReaperOptions reaper;
  reaper.cleanup_dir = logs.temp_base();
  if (!logs.run_dir().empty())
    reaper.env_marker = "TORCHELASTIC_ERROR_FILE=" + logs.run_dir() + "/";
  auto runner = make_posix_process_runner(reaper);
  Supervisor sup(*runner, so, &mux, [](const std::string& line) { write_stderr(line); });
  SupervisorResult result = sup.run(plan);
  if (node.result_out) *node.result_out = result;
  mux.flush_all();

  // 4. Summary.
  FailureReport report;
  report.entrypoint = entrypoint_of(cfg);
  report.host = fqdn();
  report.result = result;
  report.torchrun_exit_codes = cfg.torchrun_exit_codes;
  if (result.first_failure) {
    report.root = make_entry(*result.first_failure, last_specs, mux, cfg);
  }
  for (const auto& o : result.other_failures) {
    report.others.push_back(make_entry(o, last_specs, mux, cfg));
  }
  if (cfg.event_log_handler == "console") {
    EventContext ec;
    ec.run_id = run_id;
    ec.group_rank = node.group_rank;
    ec.group_world_size = node.group_world_size;
    ec.role = cfg.role;
    ec.rdzv_backend = cfg.rdzv_backend;
    ec.total_run_time_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    ec.timestamp_s = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    for (const auto& e : worker_events(report, ec)) write_stderr(e.dump());
  }
  const std::string summary = format_failure_summary(report);
  if (node.summary_out) {
    *node.summary_out = summary;
  } else if (!summary.empty()) {
    write_stderr(summary);
  }
  if (cfg.summary_json) write_summary_json(*cfg.summary_json, summary_json(report));
  // The cgroup knows an OOM kill for sure (a SIGKILL alone could be anyone's).
  if (const long ooms = result.first_failure ? runner->oom_kills() : 0; ooms > 0) {
    write_stderr(fmt::format(
        "gpurun: {} worker process{} of this run {} killed by the kernel's OOM killer "
        "(oom_kill in {}/memory.events); give the job more memory or use less per rank\n",
        ooms, ooms == 1 ? "" : "es", ooms == 1 ? "was" : "were", runner->cgroup()));
  }
  runner.reset();
  if (store) store->stop();
  logs.finish();
  return exit_origin(report).exit_code;
}

}  // namespace gpurun::launcher
