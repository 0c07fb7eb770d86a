// Test helpers: run N ranks as threads in one process on a shared MemoryStore.
#pragma once

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gpurun/common/env.h"
#include "gpurun/rendezvous/memory_store.h"
#include "gpurun/worker/worker.h"

namespace gpurun::worker::testing {

inline EnvMap rank_env(int rank, int world, const std::string& run_id, const EnvMap& extra = {}) {
  EnvMap env{
      {"RANK", std::to_string(rank)},       {"WORLD_SIZE", std::to_string(world)},
      {"LOCAL_RANK", std::to_string(rank)}, {"LOCAL_WORLD_SIZE", std::to_string(world)},
      {"MASTER_ADDR", "127.0.0.1"},         {"MASTER_PORT", "1"},  // unused: the store is passed in
      {"TORCHELASTIC_RUN_ID", run_id}};
  for (const auto& [k, v] : extra) env[k] = v;
  return env;
}

inline std::string unique_run_id() {
  static std::atomic<int> n{0};
  return fmt::format("test{}", n++);
}

// Throws (to be collected per rank) instead of Catch2 REQUIRE, which is not thread-safe.
inline void expect(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

// Runs body(ctx, rank) on `world` threads; returns each rank's exception message ("" = ok).
// `per_rank(r)`, when given, adds variables for rank r only.
inline std::vector<std::string> run_ranks(int world, const std::function<void(Context&, int)>& body,
                                          const EnvMap& extra = {}, InitOptions options = {},
                                          std::shared_ptr<rendezvous::Store> store = nullptr,
                                          const std::function<EnvMap(int)>& per_rank = nullptr) {
  if (!store) store = std::make_shared<rendezvous::MemoryStore>();
  if (!options.timeout) options.timeout = std::chrono::seconds(20);
  const std::string run_id = unique_run_id();
  std::vector<std::string> errors(static_cast<std::size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        EnvMap env = rank_env(r, world, run_id, extra);
        if (per_rank) {
          for (const auto& [k, v] : per_rank(r)) env[k] = v;
        }
        auto ctx = init_with(env, store, options);
        body(*ctx, r);
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
        if (errors[static_cast<std::size_t>(r)].empty()) errors[static_cast<std::size_t>(r)] = "?";
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

// Whether this machine gives POSIX shared memory (/dev/shm) to the SDK's same-host collectives;
// without it they fall back to TCP, and tests of shared-memory-only behaviour skip.
inline bool shm_available() {
  const std::string name = fmt::format("/gpurun-test-{}", ::getpid());
  const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) return false;
  ::shm_unlink(name.c_str());
  const bool ok = ::posix_fallocate(fd, 0, 4 << 20) == 0;
  ::close(fd);
  return ok;
}

inline std::string join_errors(const std::vector<std::string>& errs) {
  std::string out;
  for (std::size_t r = 0; r < errs.size(); ++r) {
    if (!errs[r].empty()) out += fmt::format("rank {}: {}\n", r, errs[r]);
  }
  return out;
}

}  // namespace gpurun::worker::testing
