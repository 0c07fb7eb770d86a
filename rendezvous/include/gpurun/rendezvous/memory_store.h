// An in-process Store: the store's key-value state (the same rules as the StoreServer's) guarded
// by a mutex, with a condition variable for waiters. Used by tests as the fake store and by
// single-process jobs. Thread-safe.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>

#include "gpurun/rendezvous/store.h"

namespace gpurun::rendezvous {

class KvState;

class MemoryStore final : public Store {
 public:
  explicit MemoryStore(std::chrono::milliseconds timeout = kDefaultTimeout);
  ~MemoryStore() override;

  void set(const std::string& key, const Bytes& value) override;
  using Store::set;
  Bytes get(const std::string& key) override;
  std::int64_t add(const std::string& key, std::int64_t delta) override;
  Bytes compare_set(const std::string& key, const Bytes& expected, const Bytes& desired) override;
  bool check(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) override;
  using Store::wait;
  bool delete_key(const std::string& key) override;
  std::int64_t num_keys() override;
  std::vector<Bytes> multi_get(const std::vector<std::string>& keys) override;
  void multi_set(const std::vector<std::string>& keys, const std::vector<Bytes>& values) override;
  void append(const std::string& key, const Bytes& value) override;
  std::string describe() const override { return "in-memory store"; }

 private:
  void wait_locked(std::unique_lock<std::mutex>& lock, const std::vector<std::string>& keys,
                   std::chrono::milliseconds timeout, std::string_view op);

  std::mutex mu_;
  std::condition_variable cv_;
  std::unique_ptr<KvState> state_;
};

}  // namespace gpurun::rendezvous
