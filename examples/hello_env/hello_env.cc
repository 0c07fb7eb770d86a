// hello_env: prints the torchrun/gpurun environment of this worker, one "hello_env[RANK] KEY=VALUE"
// line per variable, then behaves as told:
//   --exit N          exit with code N                 --signal SIG  kill itself with SIG (SEGV,
//   11)
//   --rank R          only rank R does --exit/--signal; the others do --sleep and exit 0
//   --attempt K       ... and only when TORCHELASTIC_RESTART_COUNT == K
//   --sleep S         sleep S seconds (float) first (the failing rank: --delay S)
//   --delay S         the failing rank waits S seconds before failing
//   --lines N         print N numbered lines to stdout    --stderr-lines N: to stderr
//   --ignore-term     ignore SIGTERM (and SIGINT): only SIGKILL stops it
//   --pid-dir D       write D/<rank>.pid (tests check that no worker outlives gpurun)
//   --wait-peers      the failing rank first waits (up to 30 s) until all WORLD_SIZE ranks wrote
//                     their pid file, i.e. every peer is up and has its signal dispositions set
//   --quiet           do not print the environment
//   --stamp FILE      the failing rank writes CLOCK_MONOTONIC ns to FILE just before failing
//                     (launch_bench measures crash-to-exit latency from it)
// Usage: gpurun --nproc-per-node 4 ./hello_env --rank 2 --signal SEGV --sleep 30
#include <signal.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "gpurun/common/worker_env_contract.h"

namespace {

// Parsed by hand, not with Boost.Program_options: this is launch_bench's no-op worker, whose
// start-up time (mostly the dynamic loader) is part of what the bench measures.
constexpr const char* kUsage =
    "usage: hello_env [options]  (a test worker: prints its launcher environment, then as told)\n"
    "  --exit N           exit with code N\n"
    "  --signal SIG       kill itself with SIG (SEGV or 11)\n"
    "  --rank R           only rank R does --exit/--signal; the others --sleep and exit 0\n"
    "  --attempt K        ... and only when TORCHELASTIC_RESTART_COUNT == K\n"
    "  --sleep S          sleep S seconds first (the failing rank: --delay S)\n"
    "  --delay S          the failing rank waits S seconds before failing\n"
    "  --lines N          print N numbered lines to stdout (--stderr-lines N: to stderr)\n"
    "  --ignore-term      ignore SIGTERM and SIGINT\n"
    "  --pid-dir D        write D/<rank>.pid\n"
    "  --wait-peers       the failing rank waits until every rank wrote its pid file\n"
    "  --quiet            do not print the environment\n"
    "  --stamp FILE       the failing rank writes CLOCK_MONOTONIC ns to FILE before failing\n";

void sleep_seconds(double s) {
  if (s <= 0) return;
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(s);
  ts.tv_nsec = static_cast<long>((s - static_cast<double>(ts.tv_sec)) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

int parse_signal(const char* text) {
  if (std::isdigit(static_cast<unsigned char>(text[0]))) return std::atoi(text);
  std::string name = text;
  if (name.rfind("SIG", 0) == 0) name = name.substr(3);
  for (int sig = 1; sig < NSIG; ++sig) {
    const char* abbrev = sigabbrev_np(sig);
    if (abbrev != nullptr && name == abbrev) return sig;
  }
  std::fprintf(stderr, "hello_env: unknown signal '%s'\n", text);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  int exit_code = 0;
  int sig = 0;
  int only_rank = -1;
  int only_attempt = -1;
  double sleep_s = 0;
  double delay_s = 0;
  long lines = 0;
  long err_lines = 0;
  bool ignore_term = false;
  bool quiet = false;
  const char* pid_dir = nullptr;
  const char* stamp = nullptr;
  bool wait_peers = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "hello_env: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--exit")
      exit_code = std::atoi(value());
    else if (a == "--signal")
      sig = parse_signal(value());
    else if (a == "--rank")
      only_rank = std::atoi(value());
    else if (a == "--attempt")
      only_attempt = std::atoi(value());
    else if (a == "--sleep")
      sleep_s = std::atof(value());
    else if (a == "--delay")
      delay_s = std::atof(value());
    else if (a == "--lines")
      lines = std::atol(value());
    else if (a == "--stderr-lines")
      err_lines = std::atol(value());
    else if (a == "--ignore-term")
      ignore_term = true;
    else if (a == "--pid-dir")
      pid_dir = value();
    else if (a == "--quiet")
      quiet = true;
    else if (a == "--stamp")
      stamp = value();
    else if (a == "--wait-peers")
      wait_peers = true;
    else if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "hello_env: error: unknown option '%s'; see --help\n", a.c_str());
      return 2;
    }
  }
  if (ignore_term) {
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
  }
  const char* rank_env = std::getenv(gpurun::worker_env::kRank);
  const int rank = rank_env ? std::atoi(rank_env) : 0;
  const char* attempt_env = std::getenv(gpurun::worker_env::kRestartCount);
  const int attempt = attempt_env ? std::atoi(attempt_env) : 0;

  if (pid_dir != nullptr) {
    const std::string path = std::string(pid_dir) + "/" + std::to_string(rank) + ".pid";
    const std::string tmp = path + ".tmp";
    if (FILE* f = std::fopen(tmp.c_str(), "w")) {
      std::fprintf(f, "%d\n", static_cast<int>(getpid()));
      std::fclose(f);
      std::rename(tmp.c_str(), path.c_str());  // readers never see a half-written file
    }
  }
  if (!quiet) {
    for (const char* var : gpurun::worker_env::kWorkerEnvVars) {
      const char* v = std::getenv(var);
      if (v != nullptr) std::printf("hello_env[%d] %s=%s\n", rank, var, v);
    }
  }
  for (long i = 0; i < lines; ++i) std::printf("hello_env[%d] line %ld\n", rank, i);
  std::fflush(stdout);
  for (long i = 0; i < err_lines; ++i) std::fprintf(stderr, "hello_env[%d] err %ld\n", rank, i);

  const bool selected =
      (only_rank < 0 || only_rank == rank) && (only_attempt < 0 || only_attempt == attempt);
  const bool fails = sig != 0 || exit_code != 0;
  if (selected && fails) {
    if (wait_peers && pid_dir != nullptr) {
      const char* ws_env = std::getenv(gpurun::worker_env::kWorldSize);
      const int world = ws_env ? std::atoi(ws_env) : 1;
      for (int tries = 0; tries < 3000; ++tries) {
        int present = 0;
        for (int r = 0; r < world; ++r) {
          const std::string path = std::string(pid_dir) + "/" + std::to_string(r) + ".pid";
          present += access(path.c_str(), F_OK) == 0;
        }
        if (present == world) break;
        sleep_seconds(0.01);
      }
    }
    sleep_seconds(delay_s);
    if (stamp != nullptr) {
      timespec now{};
      clock_gettime(CLOCK_MONOTONIC, &now);
      if (FILE* f = std::fopen(stamp, "w")) {
        std::fprintf(f, "%lld\n", static_cast<long long>(now.tv_sec) * 1000000000LL + now.tv_nsec);
        std::fclose(f);
      }
    }
    if (sig != 0) {
      std::fprintf(stderr, "hello_env[%d]: raising %s\n", rank, strsignal(sig));
      signal(sig, SIG_DFL);
      raise(sig);
    }
    std::fprintf(stderr, "hello_env[%d]: exiting with code %d\n", rank, exit_code);
    return exit_code;
  }
  sleep_seconds(sleep_s);
  return 0;
}
