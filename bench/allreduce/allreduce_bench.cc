// allreduce_bench: the SDK's Gloo all_reduce against torch.distributed's gloo all_reduce, 2 ranks
// on CPU, float32 sum, sizes 4 KiB .. 64 MiB (powers of 4), same warm-up and iteration counts,
// in the same run. Each side runs `--rounds` times alternately; the best round per size counts
// (the machine is shared). Prints a table and a JSON line (and writes the JSON to --json PATH).
//
//   allreduce_bench [--rounds 2] [--max-bytes 67108864] [--json PATH] [--no-torch]
//
// It starts its own ranks: run it directly, not under gpurun/torchrun/mpirun (it refuses).
// The SDK side: this binary re-executes itself as 2 worker processes (RANK/WORLD_SIZE/
// MASTER_ADDR/MASTER_PORT set, a StoreServerThread in this process as the store) that call
// gpurun::init(). The torch side: bench/allreduce/torch_allreduce.py with /usr/bin/python3.
// With a CUDA build and a visible GPU it also times NCCL all_reduce at world size 1.
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "../common/bench_common.h"
#include "gpurun/rendezvous/store_server.h"
#include "gpurun/worker/console.h"
#include "gpurun/worker/worker.h"
#if GPURUN_HAS_CUDA
#include <cuda_runtime_api.h>
#endif

using namespace gpurun::worker;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kWarmup = 5;

std::vector<std::size_t> default_sizes(std::size_t max_bytes) {
  std::vector<std::size_t> s;
  for (std::size_t b = 4096; b <= max_bytes; b *= 4) s.push_back(b);
  return s;
}

int iters_for(std::size_t bytes) {
  // ~1 GiB of payload per size, between 10 and 500 iterations.
  auto n = static_cast<long long>((1ull << 30) / bytes);
  return static_cast<int>(std::clamp<long long>(n, 10, 500));
}

std::string join(const std::vector<std::size_t>& v) {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

std::vector<std::size_t> parse_list(const std::string& s) {
  std::vector<std::size_t> out;
  std::size_t pos = 0;
  while (pos < s.size()) {
    auto comma = s.find(',', pos);
    out.push_back(std::stoull(s.substr(pos, comma - pos)));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

// ---- worker side ----
int child_main(const std::vector<std::size_t>& sizes) {
  auto ctx = gpurun::init();
  auto& comm = ctx->comm();
  for (std::size_t bytes : sizes) {
    const int iters = iters_for(bytes);
    std::vector<float> buf(bytes / sizeof(float), 1.0f);
    for (int i = 0; i < kWarmup; ++i) comm.all_reduce(std::span(buf));
    comm.barrier();
    auto start = Clock::now();
    for (int i = 0; i < iters; ++i) comm.all_reduce(std::span(buf));
    double secs = std::chrono::duration<double>(Clock::now() - start).count() / iters;
    secs = comm.all_reduce_value(secs, ReduceOp::kMax);
    if (ctx->is_root()) {
      std::printf("RESULT {\"bytes\": %zu, \"iters\": %d, \"seconds\": %.9g}\n", bytes, iters,
                  secs);
      std::fflush(stdout);
    }
  }
  return 0;
}

int nccl_child_main(const std::vector<std::size_t>& sizes) {
  auto ctx = gpurun::init();
  if (ctx->backend() != Backend::kNccl) {
    std::printf("NOGPU %s\n", ctx->device().str().c_str());
    return 0;
  }
#if GPURUN_HAS_CUDA
  for (std::size_t bytes : sizes) {
    void* d = nullptr;
    if (cudaMalloc(&d, bytes) != cudaSuccess) throw std::runtime_error("cudaMalloc failed");
    const int iters = iters_for(bytes);
    for (int i = 0; i < kWarmup; ++i)
      ctx->comm().all_reduce(d, bytes / 4, DataType::kFloat32, ReduceOp::kSum);
    auto start = Clock::now();
    for (int i = 0; i < iters; ++i)
      ctx->comm().all_reduce(d, bytes / 4, DataType::kFloat32, ReduceOp::kSum);
    double secs = std::chrono::duration<double>(Clock::now() - start).count() / iters;
    std::printf("RESULT {\"bytes\": %zu, \"iters\": %d, \"seconds\": %.9g}\n", bytes, iters, secs);
    cudaFree(d);
  }
#else
  (void)sizes;
#endif
  return 0;
}

// ---- driver side ----
struct Child {
  pid_t pid;
  int out_fd;
};

Child spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
            bool capture) {
  int fds[2] = {-1, -1};
  if (capture && ::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    if (capture) ::dup2(fds[1], STDOUT_FILENO);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::perror("execv");
    ::_exit(127);
  }
  if (capture) ::close(fds[1]);
  return {pid, capture ? fds[0] : -1};
}

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

int wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// bytes -> seconds per all_reduce
using Results = std::map<std::size_t, double>;

Results parse_results(const std::string& text, const std::string& prefix) {
  Results r;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    if (line.rfind(prefix, 0) != 0) continue;
    auto j = nlohmann::json::parse(line.substr(prefix.size()));
    r[j["bytes"].get<std::size_t>()] = j["seconds"].get<double>();
  }
  return r;
}

using gpurun_bench::free_port;

Results run_sdk(const std::string& self, const std::vector<std::size_t>& sizes, int port,
                int round) {
  std::vector<Child> kids;
  for (int r = 0; r < 2; ++r) {
    std::map<std::string, std::string> env{{"RANK", std::to_string(r)},
                                           {"WORLD_SIZE", "2"},
                                           {"LOCAL_RANK", std::to_string(r)},
                                           {"LOCAL_WORLD_SIZE", "2"},
                                           {"MASTER_ADDR", "127.0.0.1"},
                                           {"MASTER_PORT", std::to_string(port)},
                                           {"TORCHELASTIC_RUN_ID", fmt::format("bench{}", round)},
                                           {"GPURUN_BACKEND", "gloo"}};
    kids.push_back(spawn({self, "--child", join(sizes)}, env, r == 0));
  }
  std::string out = read_all(kids[0].out_fd);
  int rc0 = wait_child(kids[0].pid), rc1 = wait_child(kids[1].pid);
  if (rc0 != 0 || rc1 != 0) {
    throw std::runtime_error(fmt::format("SDK workers failed (exit {} and {})", rc0, rc1));
  }
  return parse_results(out, "RESULT ");
}

Results run_torch(const std::string& script, const std::vector<std::size_t>& sizes) {
  std::vector<std::size_t> iters;
  for (auto s : sizes) iters.push_back(static_cast<std::size_t>(iters_for(s)));
  auto c = spawn({"/usr/bin/python3", script, "--port", std::to_string(free_port()), "--sizes",
                  join(sizes), "--iters", join(iters), "--warmup", std::to_string(kWarmup)},
                 {}, true);
  std::string out = read_all(c.out_fd);
  int rc = wait_child(c.pid);
  if (rc != 0) throw std::runtime_error(fmt::format("torch_allreduce.py failed (exit {})", rc));
  return parse_results(out, "");
}

std::string human(std::size_t b) {
  if (b >= (1u << 20)) return fmt::format("{} MiB", b >> 20);
  return fmt::format("{} KiB", b >> 10);
}

}  // namespace

int main(int argc, char** argv) {
  return run_main([&]() -> int {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() == 2 && args[0] == "--child") return child_main(parse_list(args[1]));
    if (args.size() == 2 && args[0] == "--nccl-child") return nccl_child_main(parse_list(args[1]));

    namespace po = boost::program_options;
    int rounds = 2;
    std::size_t max_bytes = 64u << 20;
    std::string json_path;
    po::options_description desc(
        "allreduce_bench: the SDK's all_reduce (2 CPU ranks) against torch.distributed gloo, in "
        "the same run.\nusage: allreduce_bench [options]\noptions");
    desc.add_options()("help,h", "print this help")(
        "rounds", po::value<int>(&rounds)->default_value(2), "alternate rounds; best one counts")(
        "max-bytes", po::value<std::size_t>(&max_bytes)->default_value(max_bytes),
        "largest message (sizes: 4 KiB, x4, ...)")("json", po::value<std::string>(&json_path),
                                                   "also write the JSON to this file")(
        "no-torch", "skip the torch.distributed side");
    po::variables_map vm;
    try {
      po::store(po::command_line_parser(args).options(desc).run(), vm);
      po::notify(vm);
    } catch (const po::error& e) {
      std::fprintf(stderr, "allreduce_bench: error: %s; see --help\n", e.what());
      return 2;
    }
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return 0;
    }
    const bool torch = vm.count("no-torch") == 0;
    // It starts its own ranks; under a launcher every copy would start two more and wait for a
    // store that is not theirs.
    for (const char* var : {"TORCHELASTIC_RUN_ID", "OMPI_COMM_WORLD_SIZE"}) {
      if (std::getenv(var) != nullptr) {
        std::fprintf(stderr,
                     "allreduce_bench: error: %s is set: this looks like a run under a launcher; "
                     "the bench starts its own 2 ranks and store; run it directly "
                     "(build/bench/allreduce/allreduce_bench)\n",
                     var);
        return 2;
      }
    }
    const std::string self = "/proc/self/exe";
    char exe[4096];
    ssize_t n = ::readlink(self.c_str(), exe, sizeof exe - 1);
    std::string exe_path = n > 0 ? std::string(exe, static_cast<std::size_t>(n)) : argv[0];
    std::string script = std::string(GPURUN_BENCH_SOURCE_DIR) + "/torch_allreduce.py";
    auto sizes = default_sizes(max_bytes);

    gpurun::rendezvous::StoreServerOptions so;
    so.host = "127.0.0.1";
    so.port = 0;
    gpurun::rendezvous::StoreServerThread server(so);

    Results sdk, ref;
    for (int round = 0; round < rounds; ++round) {
      auto s = run_sdk(exe_path, sizes, server.port(), round);
      for (auto [b, t] : s) sdk[b] = sdk.count(b) ? std::min(sdk[b], t) : t;
      if (torch) {
        auto r = run_torch(script, sizes);
        for (auto [b, t] : r) ref[b] = ref.count(b) ? std::min(ref[b], t) : t;
      }
    }

    std::printf(
        "all_reduce, 2 ranks on CPU (gpurun: shared memory, same host; torch: gloo over loopback "
        "TCP), float32 sum, best of %d rounds\n",
        rounds);
    std::printf("%10s %7s | %12s %12s | %12s %12s | %9s\n", "size", "iters", "sdk time",
                "sdk algbw", "torch time", "torch algbw", "sdk/torch");
    nlohmann::json rows = nlohmann::json::array();
    for (auto b : sizes) {
      double ts = sdk.count(b) ? sdk[b] : 0, tt = ref.count(b) ? ref[b] : 0;
      double bws = ts > 0 ? b / ts / 1e9 : 0, bwt = tt > 0 ? b / tt / 1e9 : 0;
      std::printf("%10s %7d | %9.1f us %7.3f GB/s | %9.1f us %7.3f GB/s | %8.2fx\n",
                  human(b).c_str(), iters_for(b), ts * 1e6, bws, tt * 1e6, bwt,
                  tt > 0 ? tt / ts : 0.0);
      rows.push_back({{"bytes", b},
                      {"iters", iters_for(b)},
                      {"sdk_seconds", ts},
                      {"sdk_algbw_GBps", bws},
                      {"torch_seconds", tt},
                      {"torch_algbw_GBps", bwt},
                      {"speedup_vs_torch", tt > 0 && ts > 0 ? tt / ts : 0.0}});
    }

    // NCCL at world size 1, when a GPU is visible.
    std::string nccl_note;
    {
      auto c = spawn({exe_path, "--nccl-child", join(sizes)}, {}, true);
      std::string out = read_all(c.out_fd);
      int rc = wait_child(c.pid);
      auto nr = parse_results(out, "RESULT ");
      if (rc != 0) {
        nccl_note = fmt::format("NCCL: worker failed (exit {})", rc);
      } else if (nr.empty()) {
        nccl_note = "NCCL: no GPU visible here (skipped; the Gloo table above is the CPU path)";
      } else {
        nccl_note = "NCCL world size 1 (algbw; busbw is 0 by definition at 1 rank):";
        for (auto [b, t] : nr) nccl_note += fmt::format(" {}={:.1f}GB/s", human(b), b / t / 1e9);
      }
    }
    std::printf("%s\n", nccl_note.c_str());
    nlohmann::json doc{{"benchmark", "allreduce"}, {"world_size", 2}, {"dtype", "float32"},
                       {"rounds", rounds},         {"rows", rows},    {"nccl", nccl_note}};
    if (!json_path.empty()) std::ofstream(json_path) << doc.dump() << "\n";
    std::printf("JSON %s\n", doc.dump().c_str());
    return 0;
  });
}
