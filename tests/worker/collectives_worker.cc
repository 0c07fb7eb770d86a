// Test worker for the SDK's process-level tests (real gpurun, mpirun, srun). Every rank runs
// every collective for several types and sizes and checks the numbers; rank 0 prints one
// summary line. Modes:
//   collectives_worker                  all collectives, sizes 0,1,7,1000,65537
//   collectives_worker --allreduce      one all_reduce (the mpirun/srun smoke test)
//   collectives_worker --allreduce DIR  the same, but first rank 0 writes DIR/ready ("MASTER_ADDR
//                                      MASTER_PORT" of the job's store) and waits up to 120 s
//                                      for DIR/go (a test probes the store meanwhile)
//   collectives_worker --hang-rank R    rank R never enters the 2nd collective; the others must
//                                      get a CommError naming R (they print it and exit 17)
//   collectives_worker --mismatch K [--raise]
//                                      collective #2 differs on rank 1 (K: count = 500 floats
//                                      instead of 1000; skipped = rank 1 skips the float
//                                      all_reduce and calls the next one, an int32 max). Each rank
//                                      prints "CommError on rank r: ..." and whether its buffer
//                                      is unchanged, then exits 0; "returned normally" exits 3.
//                                      --raise lets the CommError reach run_main instead.
// Always prints "rank r/w backend=<b> device=<d> launcher=<l>" per rank.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "gpurun/common/error.h"
#include "gpurun/worker/console.h"
#include "gpurun/worker/worker.h"

using namespace gpurun::worker;

namespace {

void expect(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("check failed: " + what);
}

template <typename T>
T value(int rank, std::size_t i) {
  return static_cast<T>((rank + 1) * 3 + static_cast<int>(i % 5));
}

template <typename T>
void check_type(Communicator& comm, std::size_t n) {
  const int r = comm.rank(), w = comm.size();
  const std::string tn = to_string(data_type_of<T>());
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin, ReduceOp::kAvg}) {
    std::vector<T> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = value<T>(r, i);
    comm.all_reduce(std::span(v), op);
    for (std::size_t i = 0; i < n; ++i) {
      T sum = 0, mx = value<T>(0, i), mn = value<T>(0, i);
      for (int q = 0; q < w; ++q) {
        sum = static_cast<T>(sum + value<T>(q, i));
        mx = std::max(mx, value<T>(q, i));
        mn = std::min(mn, value<T>(q, i));
      }
      T want = op == ReduceOp::kSum   ? sum
               : op == ReduceOp::kMax ? mx
               : op == ReduceOp::kMin ? mn
                                      : static_cast<T>(sum / static_cast<T>(w));
      expect(v[i] == want, fmt::format("all_reduce {} {} n={} i={}", to_string(op), tn, n, i));
    }
  }
  std::vector<T> b(n, static_cast<T>(r));
  comm.broadcast(std::span(b), w - 1);
  for (auto x : b) expect(x == static_cast<T>(w - 1), fmt::format("broadcast {} n={}", tn, n));

  std::vector<T> mine(n);
  for (std::size_t i = 0; i < n; ++i) mine[i] = value<T>(r, i);
  auto all = comm.all_gather(std::span<const T>(mine));
  for (int q = 0; q < w; ++q)
    for (std::size_t i = 0; i < n; ++i)
      expect(all[static_cast<std::size_t>(q) * n + i] == value<T>(q, i),
             fmt::format("all_gather {} n={}", tn, n));

  std::vector<T> var(n + static_cast<std::size_t>(r));
  for (std::size_t i = 0; i < var.size(); ++i) var[i] = value<T>(r, i);
  auto got = comm.gather_host(std::span<const T>(var), 0);
  if (r == 0) {
    for (int q = 0; q < w; ++q) {
      const auto& g = got[static_cast<std::size_t>(q)];
      expect(g.size() == n + static_cast<std::size_t>(q),
             fmt::format("gather size {} n={}", tn, n));
      for (std::size_t i = 0; i < g.size(); ++i)
        expect(g[i] == value<T>(q, i), fmt::format("gather {} n={}", tn, n));
    }
  }

  std::vector<T> send(n * static_cast<std::size_t>(w));
  for (std::size_t i = 0; i < send.size(); ++i) send[i] = value<T>(r, i);
  std::vector<T> recv(n);
  comm.reduce_scatter(send.data(), recv.data(), n, data_type_of<T>(), ReduceOp::kMax);
  for (std::size_t i = 0; i < n; ++i) {
    T want = value<T>(0, static_cast<std::size_t>(r) * n + i);
    for (int q = 1; q < w; ++q)
      want = std::max(want, value<T>(q, static_cast<std::size_t>(r) * n + i));
    expect(recv[i] == want, fmt::format("reduce_scatter {} n={}", tn, n));
  }
  comm.barrier();
}

}  // namespace

int main(int argc, char** argv) {
  return run_main([&] {
    std::string mode = argc > 1 ? argv[1] : "";
    int hang_rank = -1;
    int exit_rank = -1;
    if (mode == "--hang-rank" && argc > 2) hang_rank = std::stoi(argv[2]);
    if (mode == "--exit-rank" && argc > 2) exit_rank = std::stoi(argv[2]);

    auto ctx = gpurun::init();
    auto& comm = ctx->comm();
    std::printf("rank %d/%d backend=%s device=%s launcher=%s local_rank=%d/%d\n", ctx->rank(),
                ctx->world_size(), to_string(ctx->backend()).c_str(), ctx->device().str().c_str(),
                to_string(ctx->info().launcher).c_str(), ctx->local_rank(),
                ctx->local_world_size());
    std::fflush(stdout);

    if (mode == "--allreduce") {
      if (argc > 2 && ctx->rank() == 0) {
        const std::string dir = argv[2];
        {
          std::FILE* f = std::fopen((dir + "/ready.tmp").c_str(), "w");
          expect(f != nullptr, "cannot write " + dir + "/ready.tmp");
          std::fprintf(f, "%s %d\n", ctx->info().master_addr.c_str(), ctx->info().master_port);
          std::fclose(f);
          std::rename((dir + "/ready.tmp").c_str(), (dir + "/ready").c_str());
        }
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
        while (!std::filesystem::exists(dir + "/go")) {
          expect(std::chrono::steady_clock::now() < deadline, "no " + dir + "/go within 120 s");
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
      }
      std::vector<double> v(1000, ctx->rank() + 1.0);
      comm.all_reduce(std::span(v));
      const double want = ctx->world_size() * (ctx->world_size() + 1) / 2.0;
      for (double x : v) expect(x == want, fmt::format("all_reduce got {} want {}", x, want));
      log0(*ctx, "allreduce ok: world {} sum {}", ctx->world_size(), want);
      return 0;
    }
    if (mode == "--mismatch" && argc > 2) {
      const std::string kind = argv[2];
      const bool raise = argc > 3 && std::string(argv[3]) == "--raise";
      comm.barrier();  // #1 matches
      const int r = ctx->rank();
      std::vector<float> v(kind == "count" && r == 1 ? 500 : 1000, 1.5f);
      std::int32_t x = 7;
      try {
        if (kind != "skipped" || r != 1) comm.all_reduce(std::span(v));
        if (kind == "skipped") comm.all_reduce(std::span(&x, 1), ReduceOp::kMax);
      } catch (const gpurun::CommError& e) {
        bool unchanged = x == 7;
        for (float f : v) unchanged = unchanged && f == 1.5f;
        std::printf("CommError on rank %d: %s\nrank %d buffer %s\n", r, e.what(), r,
                    unchanged ? "unchanged" : "CHANGED");
        std::fflush(stdout);
        if (raise) throw;
        return 0;
      }
      std::printf("rank %d returned normally (x=%d, v[999]=%g)\n", r, x,
                  static_cast<double>(v.back()));
      return 3;
    }
    if (exit_rank >= 0) {
      comm.barrier();                          // #1: everyone arrives
      if (ctx->rank() == exit_rank) return 0;  // leaves without the next collective
      std::vector<float> v(10, 1.0f);
      try {
        comm.all_reduce(std::span(v));
      } catch (const gpurun::CommError& e) {
        std::fprintf(stderr, "CommError on rank %d: %s\n", ctx->rank(), e.what());
        return 17;
      }
      std::fprintf(stderr, "rank %d: all_reduce unexpectedly succeeded\n", ctx->rank());
      return 1;
    }
    if (hang_rank >= 0) {
      comm.barrier();  // #1: everyone arrives
      if (ctx->rank() == hang_rank) {
        std::this_thread::sleep_for(std::chrono::minutes(5));  // killed by the launcher
        return 0;
      }
      std::vector<float> v(10, 1.0f);
      try {
        comm.all_reduce(std::span(v));
      } catch (const gpurun::CommError& e) {
        std::fprintf(stderr, "CommError on rank %d: %s\n", ctx->rank(), e.what());
        return 17;
      }
      std::fprintf(stderr, "rank %d: all_reduce unexpectedly succeeded\n", ctx->rank());
      return 1;
    }
    for (std::size_t n :
         {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{1000}, std::size_t{65537}}) {
      check_type<float>(comm, n);
      check_type<double>(comm, n);
      check_type<std::int32_t>(comm, n);
      check_type<std::int64_t>(comm, n);
      check_type<std::uint8_t>(comm, n);
    }
    log0(*ctx, "collectives ok: world {} backend {}", ctx->world_size(), to_string(ctx->backend()));
    return 0;
  });
}
