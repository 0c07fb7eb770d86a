// Reaper: frees large buffers on its own thread, so that the store's event loop never waits for
// munmap (unmapping 100 MB took 20-50 ms on a loaded VM). Small buffers are freed in place.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace gpurun::rendezvous::server {

struct FreeDeleter {
  void operator()(std::uint8_t* p) const noexcept { std::free(p); }
};
using ReadBuffer = std::unique_ptr<std::uint8_t, FreeDeleter>;  // malloc'd (grown by realloc)

class Reaper {
 public:
  static constexpr std::size_t kAbove = 1 << 20;
  Reaper() = default;
  Reaper(const Reaper&) = delete;
  Reaper& operator=(const Reaper&) = delete;
  ~Reaper() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }
  void drop(std::string&& s) {
    if (s.capacity() < kAbove) return;
    push(Item{std::move(s), nullptr});
  }
  void drop(ReadBuffer&& b, std::size_t cap) {
    if (cap < kAbove) {
      b.reset();
      return;
    }
    push(Item{std::string(), std::move(b)});
  }

 private:
  struct Item {
    std::string s;
    ReadBuffer b;
  };
  void push(Item&& item) {
    {
      std::lock_guard lock(mu_);
      items_.push_back(std::move(item));
      if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
    }
    cv_.notify_one();
  }
  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return done_ || !items_.empty(); });
      std::vector<Item> batch;
      batch.swap(items_);
      lock.unlock();
      batch.clear();  // the frees happen here, off the loop
      lock.lock();
      if (done_ && items_.empty()) return;
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Item> items_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace gpurun::rendezvous::server
