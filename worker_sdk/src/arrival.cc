#include "arrival.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>

#include "gpurun/common/error.h"
#include "gpurun/common/log.h"

namespace gpurun::worker::detail {
namespace {

std::string key_of(int rank) { return fmt::format("arrive/{}", rank); }

}  // namespace

ArrivalTracker::ArrivalTracker(std::shared_ptr<rendezvous::Store> store, int rank, int size,
                               std::chrono::milliseconds timeout,
                               std::chrono::milliseconds progress_after, std::string backend)
    : store_(std::move(store)),
      rank_(rank),
      size_(size),
      timeout_(timeout),
      backend_(std::move(backend)),
      schedule_(progress_after) {
  // Publish often enough that a timeout always finds fresh positions: a tenth of the timeout,
  // between 10 ms and 1 s. The failure path waits two periods for ranks stuck in the same op.
  auto t = timeout == kNoTimeout ? std::chrono::milliseconds(10'000) : timeout;
  period_ = std::clamp(t / 10, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
  grace_ = 2 * period_ + std::chrono::milliseconds(100);
  publish_now();  // "setup": this rank exists
  if (size_ > 1) thread_ = std::thread([this] { publish_loop(); });
}

ArrivalTracker::~ArrivalTracker() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::uint64_t ArrivalTracker::enter(const char* op) noexcept {
  op_.store(op, std::memory_order_relaxed);
  return seq_.fetch_add(1, std::memory_order_release) + 1;
}

std::uint64_t ArrivalTracker::enter(const char* op, const CollectiveDesc& desc) noexcept {
  const std::uint64_t seq = enter(op);
  if (size_ > 1 && schedule_.enabled()) {
    static_assert(sizeof(CollectiveDesc) == kDescWords * sizeof(std::uint64_t));
    std::uint64_t words[kDescWords];
    std::memcpy(words, &desc, sizeof desc);
    const std::uint64_t v = version_.load(std::memory_order_relaxed);
    version_.store(v + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    for (std::size_t i = 0; i < kDescWords; ++i) {
      desc_words_[i].store(words[i], std::memory_order_relaxed);
    }
    desc_seq_.store(seq, std::memory_order_relaxed);
    version_.store(v + 2, std::memory_order_release);
    in_flight_.store(true, std::memory_order_release);
  }
  return seq;
}

void ArrivalTracker::leave() noexcept { in_flight_.store(false, std::memory_order_relaxed); }

void ArrivalTracker::report_progress() {
  if (!in_flight_.load(std::memory_order_acquire)) {
    schedule_seq_ = 0;
    return;
  }
  CollectiveDesc desc;
  std::uint64_t seq = 0;
  for (;;) {  // seqlock read: retry while the fast path writes
    const std::uint64_t v = version_.load(std::memory_order_acquire);
    if (v & 1) continue;
    std::uint64_t words[kDescWords];
    for (std::size_t i = 0; i < kDescWords; ++i) {
      words[i] = desc_words_[i].load(std::memory_order_relaxed);
    }
    seq = desc_seq_.load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (version_.load(std::memory_order_relaxed) != v) continue;
    std::memcpy(&desc, words, sizeof desc);
    break;
  }
  const auto now = Clock::now();
  if (seq != schedule_seq_) {
    schedule_.reset();
    schedule_seq_ = seq;
    schedule_since_ = now;
  }
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - schedule_since_);
  if (!schedule_.due(waited)) return;
  const char* op = to_string(desc.op);
  std::string who = describe_laggards(seq, op);
  if (!in_flight_.load(std::memory_order_acquire) || seq_.load(std::memory_order_acquire) != seq) {
    return;  // it finished meanwhile
  }
  const std::string left =
      timeout_ == kNoTimeout
          ? std::string("no timeout is set (GPURUN_COMM_TIMEOUT=0), so it waits forever")
          : fmt::format("the timeout ends the wait in {} (GPURUN_COMM_TIMEOUT={})",
                        format_duration(round_to_seconds(
                            std::max(std::chrono::milliseconds(0), timeout_ - waited))),
                        format_duration(timeout_));
  GPURUN_LOG_WARN("comm", "rank {}/{} still waiting in {} {} #{} after {}: {}; {}", rank_, size_,
                  backend_, describe(desc), seq, format_duration(round_to_seconds(waited)), who,
                  left);
}

void ArrivalTracker::publish_now() {
  std::uint64_t seq = seq_.load(std::memory_order_acquire);
  const char* op = op_.load(std::memory_order_relaxed);
  store_->set(key_of(rank_), fmt::format("{} {}", seq, op));
  std::lock_guard lock(mu_);
  published_ = seq;
}

void ArrivalTracker::publish_loop() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, period_, [this] { return stop_; });
    if (stop_) break;
    const bool changed = seq_.load(std::memory_order_acquire) != published_;
    lock.unlock();
    try {
      if (changed) publish_now();
      report_progress();
    } catch (const std::exception& e) {
      GPURUN_LOG_DEBUG("comm", "could not record collective position in the store: {}", e.what());
    }
    lock.lock();
  }
}

std::vector<ArrivalTracker::Laggard> ArrivalTracker::laggards(std::uint64_t seq,
                                                              std::string* note) {
  std::vector<Laggard> out;
  try {
    publish_now();
    auto deadline = Clock::now() + grace_;
    while (true) {
      out.clear();
      for (int r = 0; r < size_; ++r) {
        if (r == rank_) continue;
        Laggard l{r, 0, ""};
        std::string key = key_of(r);
        if (store_->check({key})) {
          auto v = rendezvous::to_string(store_->get(key));
          auto sp = v.find(' ');
          try {
            l.last_seq = static_cast<std::uint64_t>(std::stoull(v.substr(0, sp)));
          } catch (const std::exception&) {
            l.last_seq = 0;
          }
          if (sp != std::string::npos) l.last_op = v.substr(sp + 1);
        } else {
          l.last_op = "";  // never even set up
        }
        if (l.last_seq < seq) out.push_back(l);
      }
      if (out.empty() || Clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::min(period_, std::chrono::milliseconds(50)));
    }
  } catch (const std::exception& e) {
    out.clear();
    if (note) *note = fmt::format("could not ask the store which ranks arrived: {}", e.what());
  }
  return out;
}

std::string ArrivalTracker::describe_laggards(std::uint64_t seq, const char* op) {
  std::string note;
  auto lag = laggards(seq, &note);
  if (!note.empty()) return note;
  if (lag.empty()) {
    return fmt::format(
        "every rank reached {} #{}, so the failure is in the connection between "
        "ranks, not a missing rank",
        op, seq);
  }
  std::vector<std::string> parts;
  std::vector<int> ranks;
  for (const auto& l : lag) {
    ranks.push_back(l.rank);
    std::string state;
    if (l.last_seq == 0 && l.last_op.empty()) {
      state = "never joined";
    } else if (l.last_seq == 0) {
      state = "joined, no collective yet";
    } else {
      state = fmt::format("last seen in {} #{}", l.last_op, l.last_seq);
    }
    parts.push_back(lag.size() == 1 ? state : fmt::format("{}: {}", l.rank, state));
  }
  return fmt::format("rank{} {} ha{} not arrived at {} #{} ({})", ranks.size() == 1 ? "" : "s",
                     fmt::join(ranks, ","), ranks.size() == 1 ? "s" : "ve", op, seq,
                     fmt::join(parts, "; "));
}

}  // namespace gpurun::worker::detail
