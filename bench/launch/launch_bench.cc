// launch_bench: how fast gpurun starts workers and how fast it reacts to a crash, side by side
// with the floor (N fork/exec + waitpid of /bin/true done in-process: what any launcher must pay)
// and torchrun 1.13 (python3 -m torch.distributed.run). Prints a table and one JSON line
// (also written to --json PATH).
//
//   launch_bench [--runs 30] [--torchrun-runs 3] [--no-torchrun] [--sizes 1,2,8] [--json PATH]
//                [--gpurun PATH] [--hello-env PATH] [--python /usr/bin/python3]
//
// torchrun 1.13 on Python 3.11 crashes on its default `-r 0 -t 0` (Std.from_str("0") returns
// None under 3.11's IntFlag, pytorch#92319), so it runs with `-r 1 -t 1` (stdout to a log file,
// tee'd), the tested workaround; --master_port is a fresh free port per run; its monitor
// interval is left at the 1.13 default (5 s), which is what its users get.
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "../common/bench_common.h"
#include "gpurun/common/env.h"

extern char** environ;

using gpurun_bench::stats;
using gpurun_bench::Stats;

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Spawns argv with stdout/stderr to /dev/null (or kept), returns pid.
pid_t spawn(const std::vector<std::string>& args, bool quiet = true) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (quiet) {
      const int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
    }
    ::execve(argv[0], argv.data(), environ);
    ::_exit(127);
  }
  return pid;
}

double g_last_cpu_ms = 0;  // user+sys CPU of the last process waited for (and its children)

int wait_for(pid_t pid) {
  int st = 0;
  struct rusage ru {};
  while (::wait4(pid, &st, 0, &ru) < 0 && errno == EINTR) {
  }
  g_last_cpu_ms = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
                  static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// The floor: N fork/exec of /bin/true and N waitpid, in this process. *cpu_ms: the children's
// CPU time plus ours (fork cost) over the same interval.
double floor_once(int n, double* cpu_ms = nullptr) {
  struct rusage self0 {
  }, self1{};
  ::getrusage(RUSAGE_SELF, &self0);
  const auto t0 = Clock::now();
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) pids.push_back(spawn({"/bin/true"}));
  double children = 0;
  for (pid_t p : pids) {
    wait_for(p);
    children += g_last_cpu_ms;
  }
  const double wall = ms_since(t0);
  ::getrusage(RUSAGE_SELF, &self1);
  auto ms = [](const timeval& a, const timeval& b) {
    return static_cast<double>(b.tv_sec - a.tv_sec) * 1e3 +
           static_cast<double>(b.tv_usec - a.tv_usec) / 1e3;
  };
  if (cpu_ms) {
    *cpu_ms = children + ms(self0.ru_utime, self1.ru_utime) + ms(self0.ru_stime, self1.ru_stime);
  }
  return wall;
}

std::optional<double> command_once(const std::vector<std::string>& cmd, int* rc = nullptr) {
  const auto t0 = Clock::now();
  const int code = wait_for(spawn(cmd));
  const double ms = ms_since(t0);
  if (rc) *rc = code;
  if (code != 0 && !rc) return std::nullopt;
  return ms;
}

long long monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

struct CrashResult {
  std::optional<double> latency_ms;  // crash -> launcher exit
  int survivors = 0;                 // workers alive right after the launcher exited
  int exit_code = 0;
};

// One worker (rank 0) fails after 0.3 s while `n-1` others sleep 30 s. Latency is from the
// moment rank 0 wrote its stamp (just before exiting) to waitpid(launcher) returning.
CrashResult crash_once(const std::vector<std::string>& launcher_prefix, const std::string& hello,
                       int n) {
  CrashResult r;
  char tmpl[] = "/tmp/launch_bench_XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return r;
  const std::string dir = tmpl;
  std::vector<std::string> cmd = launcher_prefix;
  for (const char* a :
       {"--quiet", "--rank", "0", "--exit", "1", "--delay", "0.3", "--sleep", "30"}) {
    cmd.emplace_back(a);
  }
  cmd.insert(cmd.end(), {"--stamp", dir + "/stamp", "--pid-dir", dir});
  cmd.insert(cmd.begin() + static_cast<long>(launcher_prefix.size()), hello);
  const pid_t pid = spawn(cmd);
  r.exit_code = wait_for(pid);
  const long long t_exit = monotonic_ns();
  std::ifstream f(dir + "/stamp");
  long long t_crash = 0;
  if (f >> t_crash) r.latency_ms = static_cast<double>(t_exit - t_crash) / 1e6;
  for (int i = 0; i < n; ++i) {
    std::ifstream p(fmt::format("{}/{}.pid", dir, i));
    pid_t wp = 0;
    if (p >> wp && ::kill(wp, 0) == 0) {
      ++r.survivors;
      ::kill(wp, SIGKILL);
    }
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  return r;
}

std::string cell(const Stats& s, int prec = 2) {
  if (s.n == 0) return "-";
  return fmt::format("{:.{}f} / {:.{}f}", s.median, prec, s.p90, prec);
}

nlohmann::json js(const Stats& s) {
  return {{"median_ms", s.median}, {"p90_ms", s.p90}, {"min_ms", s.min}, {"runs", s.n}};
}

}  // namespace

int main(int argc, char** argv) {
  std::string gpurun = GPURUN_BENCH_GPURUN;
  std::string hello = GPURUN_BENCH_HELLO_ENV;
  std::string python = "/usr/bin/python3";
  std::string json_path;
  int runs = 30;
  int torchrun_runs = 3;
  bool torchrun = true;
  std::vector<int> sizes = {1, 2, 8};
  namespace po = boost::program_options;
  std::string sizes_text = "1,2,8";
  po::options_description desc(
      "launch_bench: gpurun's launch latency and crash-to-exit time against a fork/exec floor and "
      "torchrun 1.13, in the same run.\nusage: launch_bench [options]\noptions");
  desc.add_options()("help,h", "print this help")(
      "runs", po::value<int>(&runs)->default_value(runs), "runs per point (gpurun, floor)")(
      "torchrun-runs", po::value<int>(&torchrun_runs)->default_value(torchrun_runs),
      "runs per point for torchrun (slow)")("no-torchrun", "skip torchrun")(
      "sizes", po::value<std::string>(&sizes_text)->default_value(sizes_text),
      "worker counts, comma-separated")("json", po::value<std::string>(&json_path),
                                        "also write the JSON to this file")(
      "gpurun", po::value<std::string>(&gpurun)->default_value(gpurun), "the gpurun binary")(
      "hello-env", po::value<std::string>(&hello)->default_value(hello), "the no-op worker")(
      "python", po::value<std::string>(&python)->default_value(python), "python with torch");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
    sizes.clear();
    for (const auto& part : gpurun::split(sizes_text, ',')) {
      sizes.push_back(static_cast<int>(gpurun::parse_int(gpurun::trim(part), "--sizes")));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "launch_bench: error: %s; see --help\n", e.what());
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  torchrun = vm.count("no-torchrun") == 0;
  if (torchrun) {
    int rc = 0;
    command_once({python, "-c", "import torch.distributed.run"}, &rc);
    if (rc != 0) {
      std::fprintf(stderr, "launch_bench: torch not importable by %s; skipping torchrun\n",
                   python.c_str());
      torchrun = false;
    }
  }
  auto torchrun_cmd = [&](int n) {
    auto cmd = gpurun_bench::torchrun_command(python, n, "/tmp/launch_bench_torchrun_logs");
    cmd.insert(cmd.begin() + 4, "--no_python");
    return cmd;
  };

  nlohmann::json out;
  out["bench"] = "launch";
  out["runs"] = runs;
  out["torchrun_runs"] = torchrun ? torchrun_runs : 0;
  out["launch"] = nlohmann::json::array();

  // Decomposition aid: the cost of merely starting the gpurun binary (no workers, no store).
  std::vector<double> ver;
  for (int r = 0; r < runs; ++r) {
    if (auto ms = command_once({gpurun, "--version"})) ver.push_back(*ms);
  }
  const Stats vs = stats(ver);
  out["gpurun_version_only"] = js(vs);
  std::printf(
      "launch: N no-op workers (/bin/true), wall ms until every worker exited "
      "(median / p90; %d runs, torchrun %d)\n",
      runs, torchrun ? torchrun_runs : 0);
  std::printf("(starting the gpurun binary alone, `gpurun --version`: %s ms)\n", cell(vs).c_str());
  std::printf("%-4s %-18s %-18s %-14s %-16s %-22s\n", "N", "fork/exec floor", "gpurun",
              "gpurun/floor", "CPU floor/gpurun", "torchrun 1.13");
  for (int n : sizes) {
    // Warm-up (page cache, dynamic loader).
    floor_once(n);
    command_once({gpurun, "--nproc-per-node", std::to_string(n), "/bin/true"});
    std::vector<double> fl, gr, tr, flc, grc;
    for (int r = 0; r < runs; ++r) {
      double cpu = 0;
      fl.push_back(floor_once(n, &cpu));
      flc.push_back(cpu);
      if (auto ms = command_once({gpurun, "--nproc-per-node", std::to_string(n), "/bin/true"})) {
        gr.push_back(*ms);
        grc.push_back(g_last_cpu_ms);
      }
    }
    if (torchrun) {
      for (int r = 0; r < torchrun_runs; ++r) {
        auto cmd = torchrun_cmd(n);
        cmd.push_back("/bin/true");
        if (auto ms = command_once(cmd)) tr.push_back(*ms);
      }
    }
    const Stats f = stats(fl), g = stats(gr), t = stats(tr), fc = stats(flc), gc = stats(grc);
    const double ratio = f.median > 0 ? g.median / f.median : 0;
    std::printf("%-4d %-18s %-18s %-14s %-16s %-22s\n", n, cell(f).c_str(), cell(g).c_str(),
                fmt::format("{:.2f}x", ratio).c_str(),
                fmt::format("{:.1f} / {:.1f}", fc.median, gc.median).c_str(), cell(t, 0).c_str());
    out["launch"].push_back({{"n", n},
                             {"fork_floor", js(f)},
                             {"gpurun", js(g)},
                             {"gpurun_over_floor", ratio},
                             {"gpurun_minus_floor_ms", g.median - f.median},
                             {"cpu_ms_floor", js(fc)},
                             {"cpu_ms_gpurun", js(gc)},
                             {"torchrun", t.n ? js(t) : nlohmann::json(nullptr)}});
    std::fflush(stdout);
  }

  const int crash_n = 4;
  std::printf(
      "\ncrash-to-exit: %d workers, rank 0 exits 1 after 0.3 s, the others sleep 30 s;\n"
      "ms from the crash until the launcher exited (median / p90), workers left alive\n",
      crash_n);
  std::vector<double> gl, tl;
  int g_surv = 0, t_surv = 0, g_rc = 0, t_rc = 0;
  for (int r = 0; r < std::max(5, runs / 3); ++r) {
    auto c = crash_once({gpurun, "--nproc-per-node", std::to_string(crash_n)}, hello, crash_n);
    if (c.latency_ms) gl.push_back(*c.latency_ms);
    g_surv += c.survivors;
    g_rc = c.exit_code;
  }
  if (torchrun) {
    for (int r = 0; r < torchrun_runs; ++r) {
      auto c = crash_once(torchrun_cmd(crash_n), hello, crash_n);
      if (c.latency_ms) tl.push_back(*c.latency_ms);
      t_surv += c.survivors;
      t_rc = c.exit_code;
    }
  }
  const Stats g = stats(gl), t = stats(tl);
  std::printf("%-10s %-20s survivors %d, exit code %d\n", "gpurun", cell(g).c_str(), g_surv, g_rc);
  if (torchrun) {
    std::printf("%-10s %-20s survivors %d, exit code %d\n", "torchrun", cell(t, 0).c_str(), t_surv,
                t_rc);
  }
  out["crash_to_exit"] = {{"workers", crash_n},
                          {"gpurun", js(g)},
                          {"gpurun_survivors", g_surv},
                          {"gpurun_exit_code", g_rc},
                          {"torchrun", t.n ? js(t) : nlohmann::json(nullptr)},
                          {"torchrun_survivors", t_surv},
                          {"torchrun_exit_code", t_rc}};
  const std::string line = out.dump();
  std::printf("\n%s\n", line.c_str());
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  std::error_code ec;
  fs::remove_all("/tmp/launch_bench_torchrun_logs", ec);
  return 0;
}
