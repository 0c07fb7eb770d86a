// rdzv_bench: the elastic (c10d) rendezvous of gpurun side by side with torchrun 1.13's, in the
// same run, with agents on loopback (agent k uses --local-addr 127.0.x.y; agent 0 hosts the store
// on the endpoint) and one no-op worker per agent (/bin/sh writing a marker file):
//   join:   ms from the last agent's start until every worker runs (--nnodes N);
//   kill:   kill -9 of one agent of N (--nnodes 2:N, workers held running): ms until every old
//           worker is stopped, and until the re-formed round's workers all run.
//   etcd:   the same join with --rdzv-backend etcd (one etcd member started by the bench), and
//           kill -9 of the node hosting the workers' store (group rank 0): etcd re-forms, c10d
//           cannot (that node hosts its rendezvous store too).
// Prints a table and one JSON line (also written to --json PATH).
//
//   rdzv_bench [--sizes 2,8,16,64,256] [--torchrun-sizes 2,8] [--runs 3] [--kill-agents 4]
//              [--torchrun-kill-timeout 20] [--no-torchrun] [--json PATH]
//
// torchrun 1.13 needs `-r 1 -t 1` on Python 3.11 (pytorch#92319) and refuses last_call_timeout 0;
// with --nnodes N (min = max) the last call does not apply to either launcher.
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../common/bench_common.h"
#include "etcd_proc.h"
#include "gpurun/common/env.h"

extern char** environ;

using gpurun_bench::stats;
using gpurun_bench::Stats;

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

// The worker: a marker r<restart>.<rank> holding its pid (written then renamed: never half
// read; "$$$$" because both launchers turn "$$" into "$", torchrun's macro substitution), then,
// with BENCH_HOLD set, it stays until <dir>/go exists.
constexpr const char* kWorker =
    "f=\"$BENCH_DIR/r$TORCHELASTIC_RESTART_COUNT.$RANK\"; echo $$$$ > \"$f.tmp\" && mv \"$f.tmp\" "
    "\"$f\"; [ -z \"$BENCH_HOLD\" ] || while [ ! -e \"$BENCH_DIR/go\" ]; do sleep 0.02; done";

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

pid_t spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::setpgid(0, 0);
    ::execve(argv[0], argv.data(), environ);
    ::_exit(127);
  }
  return pid;
}

int count_markers(const std::string& dir, const std::string& prefix) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0 && name.find(".tmp") == std::string::npos) ++n;
  }
  return n;
}

std::vector<pid_t> marker_pids(const std::string& dir, const std::string& prefix) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || name.find(".tmp") != std::string::npos) continue;
    std::ifstream f(e.path());
    pid_t p = 0;
    if (f >> p) out.push_back(p);
  }
  return out;
}

bool alive(pid_t p) {
  if (::kill(p, 0) != 0) return false;
  std::ifstream f(fmt::format("/proc/{}/stat", p));
  std::string s;
  std::getline(f, s);
  const auto r = s.rfind(')');
  return r == std::string::npos || r + 2 >= s.size() || s[r + 2] != 'Z';
}

// Polls `pred` every 2 ms until it holds or `timeout` passes.
template <typename Pred>
bool wait_for(Pred pred, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return pred();
}

// Waits for every agent (bounded), then SIGKILLs the process group of any left.
void reap_all(std::vector<pid_t>& agents, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (pid_t p : agents) {
    int st = 0;
    while (::waitpid(p, &st, WNOHANG) == 0) {
      if (Clock::now() >= deadline) {
        ::kill(-p, SIGKILL);
        ::kill(p, SIGKILL);
        ::waitpid(p, &st, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  agents.clear();
}

struct Launcher {
  std::string name;
  // argv of agent k of n for the job (nnodes is "N" or "MIN:MAX").
  std::function<std::vector<std::string>(int k, const std::string& nnodes, int port,
                                         const std::string& dir, int max_restarts)>
      argv;
};

std::string agent_addr(int k) { return fmt::format("127.0.{}.{}", k / 250, k % 250 + 1); }

std::string make_dir() {
  char tmpl[] = "/tmp/rdzv_bench_XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

// Join: spawns n agents; ms from the last spawn until n markers exist. nullopt on timeout.
std::optional<double> join_once(const Launcher& l, int n, std::chrono::milliseconds timeout) {
  const std::string dir = make_dir();
  ::setenv("BENCH_DIR", dir.c_str(), 1);
  ::unsetenv("BENCH_HOLD");
  const int port = gpurun_bench::free_port();
  std::vector<pid_t> agents;
  for (int k = 0; k < n; ++k) agents.push_back(spawn(l.argv(k, std::to_string(n), port, dir, 0)));
  const auto t0 = Clock::now();
  std::optional<double> ms;
  if (wait_for([&] { return count_markers(dir, "r0.") >= n; }, timeout)) ms = ms_since(t0);
  reap_all(agents, std::chrono::seconds(60));
  std::error_code ec;
  fs::remove_all(dir, ec);
  return ms;
}

struct KillResult {
  std::optional<double> stopped_ms;   // kill -> every worker of the old round gone
  std::optional<double> reformed_ms;  // kill -> the new round's n-1 workers all run
};

pid_t parent_of(pid_t p) {
  std::ifstream f(fmt::format("/proc/{}/stat", p));
  std::string s;
  std::getline(f, s);
  const auto r = s.rfind(')');
  if (r == std::string::npos) return 0;
  std::istringstream rest(s.substr(r + 2));
  char state = 0;
  pid_t ppid = 0;
  rest >> state >> ppid;
  return ppid;
}

// The agent whose worker is global rank 0 of round 0: group rank 0, the workers' store host.
pid_t store_host(const std::string& dir, const std::vector<pid_t>& agents) {
  std::ifstream f(dir + "/r0.0");
  pid_t p = 0;
  if (!(f >> p)) return 0;
  for (int hops = 0; p > 1 && hops < 8; ++hops, p = parent_of(p)) {
    if (std::find(agents.begin(), agents.end(), p) != agents.end()) return p;
  }
  return 0;
}

// kill -9 of one agent of n: the last one (the agent only), or with `host` the workers' store
// host (group rank 0) with its whole process group, as when its node goes.
KillResult kill_once(const Launcher& l, int n, std::chrono::milliseconds timeout,
                     bool host = false) {
  KillResult r;
  const std::string dir = make_dir();
  ::setenv("BENCH_DIR", dir.c_str(), 1);
  ::setenv("BENCH_HOLD", "1", 1);
  const int port = gpurun_bench::free_port();
  std::vector<pid_t> agents;
  const std::string nnodes = fmt::format("{}:{}", n - 1, n);
  for (int k = 0; k < n; ++k) agents.push_back(spawn(l.argv(k, nnodes, port, dir, 3)));
  if (wait_for([&] { return count_markers(dir, "r0.") >= n; }, std::chrono::seconds(120))) {
    const auto old = marker_pids(dir, "r0.");
    const pid_t victim = host ? store_host(dir, agents) : agents.back();
    const auto t0 = Clock::now();
    if (host && victim > 0) {
      ::kill(-victim, SIGKILL);
    } else {
      ::kill(agents.back(), SIGKILL);  // the agent only: its workers are its business
    }
    bool stopped = false, reformed = false;
    wait_for(
        [&] {
          if (!stopped && std::none_of(old.begin(), old.end(), alive)) {
            stopped = true;
            r.stopped_ms = ms_since(t0);
          }
          if (!reformed && count_markers(dir, "r1.") >= n - 1) {
            reformed = true;
            r.reformed_ms = ms_since(t0);
          }
          return stopped && reformed;
        },
        timeout);
  }
  std::ofstream(dir + "/go").put('\n');
  reap_all(agents, std::chrono::seconds(30));
  ::unsetenv("BENCH_HOLD");
  std::error_code ec;
  fs::remove_all(dir, ec);
  return r;
}

std::string cell(const Stats& s, std::size_t runs) {
  if (s.n == 0) return runs ? "timed out" : "-";
  return fmt::format("{:.0f} / {:.0f}{}", s.median, s.p90,
                     s.n < runs ? fmt::format(" ({} of {})", s.n, runs) : "");
}

nlohmann::json js(const Stats& s, std::size_t runs) {
  if (s.n == 0) return nullptr;
  return {{"median_ms", s.median}, {"p90_ms", s.p90}, {"runs", s.n}, {"attempted", runs}};
}

std::vector<int> parse_sizes(const std::string& text) {
  std::vector<int> out;
  for (const auto& part : gpurun::split(text, ',')) {
    if (!gpurun::trim(part).empty()) {
      out.push_back(static_cast<int>(gpurun::parse_int(gpurun::trim(part), "sizes")));
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string gpurun = GPURUN_BENCH_GPURUN;
  std::string python = "/usr/bin/python3";
  std::string json_path, sizes_text = "2,8,16,64,256", tsizes_text = "2,8";
  std::string esizes_text = "2,16,64", etcd_exe = "/usr/bin/etcd";
  int runs = 3, kill_agents = 4, torchrun_kill_timeout_s = 20;
  namespace po = boost::program_options;
  po::options_description desc(
      "rdzv_bench: gpurun's elastic rendezvous (join time, kill -9 to re-formed) against "
      "torchrun 1.13's c10d, in the same run.\nusage: rdzv_bench [options]\noptions");
  desc.add_options()("help,h", "print this help")(
      "sizes", po::value<std::string>(&sizes_text)->default_value(sizes_text),
      "agent counts for gpurun")(
      "torchrun-sizes", po::value<std::string>(&tsizes_text)->default_value(tsizes_text),
      "agent counts for torchrun (slow)")("runs", po::value<int>(&runs)->default_value(runs),
                                          "runs per point (1 at 64 agents and more)")(
      "kill-agents", po::value<int>(&kill_agents)->default_value(kill_agents),
      "agents in the kill -9 test (one is killed)")(
      "torchrun-kill-timeout",
      po::value<int>(&torchrun_kill_timeout_s)->default_value(torchrun_kill_timeout_s),
      "seconds to wait for torchrun to stop/re-form after the kill")("no-torchrun",
                                                                     "skip torchrun")(
      "etcd-sizes", po::value<std::string>(&esizes_text)->default_value(esizes_text),
      "agent counts for gpurun --rdzv-backend etcd")(
      "etcd", po::value<std::string>(&etcd_exe)->default_value(etcd_exe), "the etcd binary")(
      "no-etcd", "skip the etcd backend")("json", po::value<std::string>(&json_path),
                                          "also write the JSON to this file")(
      "gpurun", po::value<std::string>(&gpurun)->default_value(gpurun), "the gpurun binary")(
      "python", po::value<std::string>(&python)->default_value(python), "python with torch");
  po::variables_map vm;
  std::vector<int> sizes, tsizes, esizes;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
    sizes = parse_sizes(sizes_text);
    tsizes = parse_sizes(tsizes_text);
    esizes = parse_sizes(esizes_text);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rdzv_bench: error: %s; see --help\n", e.what());
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  bool torchrun = vm.count("no-torchrun") == 0;
  if (torchrun) {
    const pid_t p = spawn({python, "-c", "import torch.distributed.run"});
    int st = 0;
    ::waitpid(p, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      std::fprintf(stderr, "rdzv_bench: torch not importable by %s; skipping torchrun\n",
                   python.c_str());
      torchrun = false;
    }
  }

  Launcher g{"gpurun",
             [&](int k, const std::string& nnodes, int port, const std::string&,
                 int restarts) -> std::vector<std::string> {
               return {gpurun, "--nnodes", nnodes, "--nproc-per-node", "1", "--rdzv-backend",
                       "c10d", "--rdzv-endpoint", fmt::format("127.0.0.1:{}", port), "--rdzv-id",
                       "bench", "--rdzv-conf",
                       // The kill test's first round must hold all N agents (the N-th closes
                       // it at once); the join test (min = max) has no last call anyway.
                       restarts > 0 ? "last_call_timeout=5" : "last_call_timeout=0",
                       "--max-restarts", std::to_string(restarts), "--local-addr", agent_addr(k),
                       "--log-dir", "/dev/null", "/bin/sh", "-c", kWorker};
             }};
  // --rdzv-backend etcd: one etcd member started here; a fresh --rdzv-id per job (the directory's
  // name), as etcd keeps a job's state. The kill test's TTL: keep_alive 1 s x 2.
  std::unique_ptr<rdzv_bench::EtcdProc> etcd;
  if (vm.count("no-etcd") == 0 && ::access(etcd_exe.c_str(), X_OK) == 0) {
    etcd = std::make_unique<rdzv_bench::EtcdProc>(etcd_exe);
  } else if (vm.count("no-etcd") == 0) {
    std::fprintf(stderr, "rdzv_bench: %s not found (apt-get install etcd-server); skipping etcd\n",
                 etcd_exe.c_str());
  }
  Launcher e{"gpurun etcd",
             [&](int k, const std::string& nnodes, int, const std::string& dir,
                 int restarts) -> std::vector<std::string> {
               return {gpurun,
                       "--nnodes",
                       nnodes,
                       "--nproc-per-node",
                       "1",
                       "--rdzv-backend",
                       "etcd",
                       "--rdzv-endpoint",
                       etcd ? etcd->endpoint() : "",
                       "--rdzv-id",
                       fs::path(dir).filename().string(),
                       "--rdzv-conf",
                       restarts > 0 ? "last_call_timeout=5,keep_alive_interval=1,"
                                      "keep_alive_max_attempt=2"
                                    : "last_call_timeout=0",
                       "--max-restarts",
                       std::to_string(restarts),
                       "--local-addr",
                       agent_addr(k),
                       "--log-dir",
                       "/dev/null",
                       "/bin/sh",
                       "-c",
                       kWorker};
             }};
  if (!etcd) esizes.clear();
  Launcher t{"torchrun",
             [&](int k, const std::string& nnodes, int port, const std::string& dir,
                 int restarts) -> std::vector<std::string> {
               return {python,
                       "-m",
                       "torch.distributed.run",
                       "--nnodes",
                       nnodes,
                       "--nproc_per_node",
                       "1",
                       "--rdzv_backend",
                       "c10d",
                       "--rdzv_endpoint",
                       fmt::format("127.0.0.1:{}", port),
                       "--rdzv_id",
                       "bench",
                       "--max_restarts",
                       std::to_string(restarts),
                       "--rdzv_conf",
                       "last_call_timeout=5",
                       "-r",
                       "1",
                       "-t",
                       "1",
                       "--log_dir",
                       fmt::format("{}/logs{}", dir, k),
                       "--no_python",
                       "/bin/sh",
                       "-c",
                       kWorker};
             }};

  nlohmann::json out;
  out["bench"] = "rdzv";
  out["join"] = nlohmann::json::array();
  std::printf(
      "join: N agents on loopback, 1 no-op worker each; ms from the last agent's start until "
      "every worker runs (median / p90)\n");
  std::printf("%-6s %-24s %-24s %-24s\n", "N", "gpurun (c10d)", "gpurun (etcd)",
              "torchrun 1.13 (c10d)");
  if (!torchrun) tsizes.clear();
  std::vector<int> all = sizes;
  for (int n : tsizes) {
    if (std::find(all.begin(), all.end(), n) == all.end()) all.push_back(n);
  }
  for (int n : esizes) {
    if (std::find(all.begin(), all.end(), n) == all.end()) all.push_back(n);
  }
  std::sort(all.begin(), all.end());
  for (int n : all) {
    const bool do_g = std::find(sizes.begin(), sizes.end(), n) != sizes.end();
    const bool do_t = torchrun && std::find(tsizes.begin(), tsizes.end(), n) != tsizes.end();
    const std::size_t r = n >= 64 ? 1 : static_cast<std::size_t>(runs);
    const bool do_e = std::find(esizes.begin(), esizes.end(), n) != esizes.end();
    std::vector<double> gv, tv, ev;
    for (std::size_t i = 0; i < r; ++i) {
      if (do_g) {
        if (auto ms = join_once(g, n, std::chrono::seconds(120))) gv.push_back(*ms);
      }
      if (do_e) {
        if (auto ms = join_once(e, n, std::chrono::seconds(120))) ev.push_back(*ms);
      }
      if (do_t) {
        if (auto ms = join_once(t, n, std::chrono::seconds(180))) tv.push_back(*ms);
      }
    }
    const Stats gs = stats(gv), ts = stats(tv), es = stats(ev);
    std::printf("%-6d %-24s %-24s %-24s\n", n, do_g ? cell(gs, r).c_str() : "-",
                do_e ? cell(es, r).c_str() : "-", do_t ? cell(ts, r).c_str() : "-");
    std::fflush(stdout);
    out["join"].push_back({{"agents", n},
                           {"gpurun", do_g ? js(gs, r) : nullptr},
                           {"gpurun_etcd", do_e ? js(es, r) : nullptr},
                           {"torchrun", do_t ? js(ts, r) : nullptr}});
  }

  std::printf(
      "\nkill -9 of one agent of %d (--nnodes %d:%d, --max-restarts 3, workers held): ms until "
      "every old worker stopped / until the re-formed round's %d workers all run\n",
      kill_agents, kill_agents - 1, kill_agents, kill_agents - 1);
  std::vector<double> gst, gre;
  for (int i = 0; i < runs; ++i) {
    auto k = kill_once(g, kill_agents, std::chrono::seconds(60));
    if (k.stopped_ms) gst.push_back(*k.stopped_ms);
    if (k.reformed_ms) gre.push_back(*k.reformed_ms);
  }
  const auto r_runs = static_cast<std::size_t>(runs);
  std::printf("%-10s stopped %-20s re-formed %-20s\n", "gpurun", cell(stats(gst), r_runs).c_str(),
              cell(stats(gre), r_runs).c_str());
  out["kill"] = {{"agents", kill_agents},
                 {"gpurun_stopped", js(stats(gst), r_runs)},
                 {"gpurun_reformed", js(stats(gre), r_runs)}};
  if (etcd) {
    // The node hosting the round's workers' store (group rank 0) dies, agent and workers: with
    // etcd the survivors re-form (noticed when its lease expires: keep_alive 1 s x 2); with c10d
    // that node also hosts the rendezvous store, so the job cannot re-form (one run).
    std::vector<double> est, ere;
    for (int i = 0; i < runs; ++i) {
      auto k = kill_once(e, kill_agents, std::chrono::seconds(60), /*host=*/true);
      if (k.stopped_ms) est.push_back(*k.stopped_ms);
      if (k.reformed_ms) ere.push_back(*k.reformed_ms);
    }
    std::printf("%-10s stopped %-20s re-formed %-20s (kill -9 of the store-hosting node)\n",
                "gpurun etcd", cell(stats(est), r_runs).c_str(), cell(stats(ere), r_runs).c_str());
    auto c = kill_once(g, kill_agents, std::chrono::seconds(10), /*host=*/true);
    std::printf(
        "%-10s stopped %-20s re-formed %-20s (kill -9 of the store-hosting node; one run, "
        "waited up to 10 s)\n",
        "gpurun c10d", c.stopped_ms ? fmt::format("{:.0f}", *c.stopped_ms).c_str() : "no",
        c.reformed_ms ? fmt::format("{:.0f}", *c.reformed_ms).c_str() : "never (job ends)");
    out["kill_store_host"] = {
        {"agents", kill_agents},
        {"etcd_stopped", js(stats(est), r_runs)},
        {"etcd_reformed", js(stats(ere), r_runs)},
        {"c10d_reformed_ms", c.reformed_ms ? nlohmann::json(*c.reformed_ms) : nullptr}};
  }
  if (torchrun) {
    auto k = kill_once(t, kill_agents, std::chrono::seconds(torchrun_kill_timeout_s));
    std::printf("%-10s stopped %-20s re-formed %-20s (one run, waited up to %d s)\n", "torchrun",
                k.stopped_ms ? fmt::format("{:.0f}", *k.stopped_ms).c_str() : "not within",
                k.reformed_ms ? fmt::format("{:.0f}", *k.reformed_ms).c_str() : "not within",
                torchrun_kill_timeout_s);
    out["kill"]["torchrun_stopped_ms"] = k.stopped_ms ? nlohmann::json(*k.stopped_ms) : nullptr;
    out["kill"]["torchrun_reformed_ms"] = k.reformed_ms ? nlohmann::json(*k.reformed_ms) : nullptr;
    out["kill"]["torchrun_waited_s"] = torchrun_kill_timeout_s;
  }
  const std::string line = out.dump();
  std::printf("\n%s\n", line.c_str());
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  return 0;
}
