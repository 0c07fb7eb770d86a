// ArrivalTracker: which collective each rank last entered, recorded in the store so that a
// timeout can name the ranks that never arrived. The fast path is one relaxed atomic store per
// collective; a background thread publishes "arrive/<rank>" = "<seq> <op>" only when it changed,
// at most once per period. Only the failure path reads the other ranks' keys.
// Owns the publisher thread; the store must outlive it. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gpurun/rendezvous/store.h"

namespace gpurun::worker::detail {

class ArrivalTracker {
 public:
  // `store` is already scoped to this group (keys are "arrive/<rank>" under it).
  ArrivalTracker(std::shared_ptr<rendezvous::Store> store, int rank, int size,
                 std::chrono::milliseconds timeout);
  ~ArrivalTracker();
  ArrivalTracker(const ArrivalTracker&) = delete;
  ArrivalTracker& operator=(const ArrivalTracker&) = delete;

  // Fast path: records that this rank entered its next collective `op` (a string literal).
  // Returns the collective's sequence number (1, 2, ...), identical across ranks that call
  // collectives in the same order.
  std::uint64_t enter(const char* op) noexcept;

  struct Laggard {
    int rank;
    std::uint64_t last_seq;  // 0 = never entered a collective
    std::string last_op;     // empty when unknown
  };
  // Failure path: publishes this rank's position now, then gives the others a short grace period
  // (they publish on their own timer or their own failure path) and returns the ranks whose last
  // published collective is before `seq`. Never throws (store trouble yields an empty result and
  // `note` explains).
  std::vector<Laggard> laggards(std::uint64_t seq, std::string* note = nullptr);

  // "ranks that have not arrived at <op> #12: 2 (last seen in barrier #11), 3 (never entered a
  // collective)" or "every rank reached #12 ...". Used in CommError messages.
  std::string describe_laggards(std::uint64_t seq, const char* op);

  std::chrono::milliseconds period() const { return period_; }

 private:
  void publish_loop();
  void publish_now();

  std::shared_ptr<rendezvous::Store> store_;
  int rank_;
  int size_;
  std::chrono::milliseconds period_;
  std::chrono::milliseconds grace_;
  std::atomic<std::uint64_t> seq_{0};
  std::atomic<const char*> op_{"setup"};
  std::uint64_t published_ = ~std::uint64_t{0};
  std::mutex mu_;  // guards published_ and stop_
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace gpurun::worker::detail
