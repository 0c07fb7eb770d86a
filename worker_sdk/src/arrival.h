// ArrivalTracker: which collective each rank last entered, recorded in the store so that a
// timeout can name the ranks that never arrived. The fast path is a few uncontended writes per
// collective; a background thread publishes "arrive/<rank>" = "<seq> <op>" only when it changed,
// at most once per period. Only the failure path and progress reports read the other ranks' keys.
//
// Waits that talk: while a collective is in flight for longer than the progress schedule's next
// step (GPURUN_WAIT_PROGRESS, default 10 s, then 30 s, 1 min, 5 min, 10 min, every 10 min), the
// background thread prints one line: which collective, for how long, which ranks have not
// arrived, and when the timeout ends the wait.
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

#include "collective_desc.h"
#include "gpurun/common/duration.h"
#include "gpurun/common/progress.h"
#include "gpurun/rendezvous/store.h"

namespace gpurun::worker::detail {

class ArrivalTracker {
 public:
  // `store` is already scoped to this group (keys are "arrive/<rank>" under it).
  ArrivalTracker(std::shared_ptr<rendezvous::Store> store, int rank, int size,
                 std::chrono::milliseconds timeout,
                 std::chrono::milliseconds progress_after = kDefaultProgressAfter,
                 std::string backend = "gloo");
  ~ArrivalTracker();
  ArrivalTracker(const ArrivalTracker&) = delete;
  ArrivalTracker& operator=(const ArrivalTracker&) = delete;

  // Fast path: records that this rank entered its next collective `op` (a string literal).
  // Returns the collective's sequence number (1, 2, ...), identical across ranks that call
  // collectives in the same order.
  std::uint64_t enter(const char* op) noexcept;
  // The same, with what the collective does (for progress reports); pair with leave().
  std::uint64_t enter(const char* op, const CollectiveDesc& desc) noexcept;
  // The collective entered last has returned (or failed).
  void leave() noexcept;
  // Calls leave() when it goes out of scope.
  class Leave {
   public:
    explicit Leave(ArrivalTracker& t) : t_(t) {}
    ~Leave() { t_.leave(); }
    Leave(const Leave&) = delete;
    Leave& operator=(const Leave&) = delete;

   private:
    ArrivalTracker& t_;
  };

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
  void report_progress();  // publisher thread: a progress line when one is due

  std::shared_ptr<rendezvous::Store> store_;
  int rank_;
  int size_;
  std::chrono::milliseconds period_;
  std::chrono::milliseconds grace_;
  std::atomic<std::uint64_t> seq_{0};
  std::atomic<const char*> op_{"setup"};
  std::chrono::milliseconds timeout_;
  std::string backend_;
  // The fast path writes what is in flight without a lock or a clock read: a seqlock over
  // (desc_seq_, desc_) (version_ odd while writing) and a flag. The publisher thread times a wait
  // from when it first saw that collective in flight (at most one period late).
  std::atomic<std::uint64_t> version_{0};
  std::atomic<bool> in_flight_{false};
  static constexpr std::size_t kDescWords = sizeof(CollectiveDesc) / sizeof(std::uint64_t);
  std::atomic<std::uint64_t> desc_words_[kDescWords] = {};  // a CollectiveDesc, word by word
  std::atomic<std::uint64_t> desc_seq_{0};
  ProgressSchedule schedule_;
  std::uint64_t schedule_seq_ = 0;    // publisher thread only: the collective being timed
  Clock::time_point schedule_since_;  // ... and when it was first seen in flight
  std::uint64_t published_ = ~std::uint64_t{0};
  std::mutex mu_;  // guards published_ and stop_
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace gpurun::worker::detail
