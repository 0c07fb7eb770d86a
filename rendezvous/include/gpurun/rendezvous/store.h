// The key-value store contract shared by the launcher, the worker SDK and the tests (modelled on
// c10d::Store and gloo::rendezvous::Store). Implementations: TcpStore (client of a StoreServer or
// of PyTorch's TCPStore), MemoryStore (in-process; doubles as the fake) and PrefixStore
// (decorator).
//
// Thread-safety: every implementation here may be called from several threads at once.
// Blocking calls (get, wait, multi_get) take the store's timeout unless given one; on expiry they
// throw gpurun::StoreTimeout whose message names the store, the operation and the missing keys.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gpurun/common/duration.h"

namespace gpurun::rendezvous {

using Bytes = std::vector<std::uint8_t>;

inline Bytes to_bytes(std::string_view s) { return Bytes(s.begin(), s.end()); }
inline std::string to_string(const Bytes& b) { return std::string(b.begin(), b.end()); }

class Store {
 public:
  // c10d's default is 300 s; gloo's is 30 s. We follow c10d for the store itself.
  static constexpr std::chrono::milliseconds kDefaultTimeout{300'000};

  explicit Store(std::chrono::milliseconds timeout = kDefaultTimeout) : timeout_(timeout) {}
  virtual ~Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Stores or overwrites; wakes waiters on `key`.
  virtual void set(const std::string& key, const Bytes& value) = 0;
  void set(const std::string& key, std::string_view value) { set(key, to_bytes(value)); }

  // Blocks until `key` exists (up to timeout()), then returns its value.
  virtual Bytes get(const std::string& key) = 0;

  // Atomically adds `delta` to the decimal integer stored at `key` (absent = 0), stores the result
  // as ASCII decimal and returns it. add(key, 0) reads a counter without blocking.
  virtual std::int64_t add(const std::string& key, std::int64_t delta) = 0;

  // c10d semantics: absent+expected empty -> store desired, return desired; absent+expected
  // non-empty -> no change, return expected; present==expected -> store desired, return desired;
  // otherwise no change, return the current value.
  virtual Bytes compare_set(const std::string& key, const Bytes& expected,
                            const Bytes& desired) = 0;

  // True if every key exists. Never blocks.
  virtual bool check(const std::vector<std::string>& keys) = 0;

  // Blocks until every key exists or `timeout` passes (StoreTimeout naming the missing keys).
  virtual void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) = 0;
  void wait(const std::vector<std::string>& keys) { wait(keys, timeout()); }

  // Returns true if the key existed.
  virtual bool delete_key(const std::string& key) = 0;

  virtual std::int64_t num_keys() = 0;

  // Blocks until every key exists, then returns the values in request order.
  virtual std::vector<Bytes> multi_get(const std::vector<std::string>& keys) = 0;
  // REQUIRES: keys.size() == values.size().
  virtual void multi_set(const std::vector<std::string>& keys,
                         const std::vector<Bytes>& values) = 0;

  // Creates `key` or appends to its value; wakes waiters.
  virtual void append(const std::string& key, const Bytes& value) = 0;

  std::chrono::milliseconds timeout() const { return timeout_; }
  void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }

  // Human-readable identity for error messages, e.g. "store 127.0.0.1:29500".
  virtual std::string describe() const = 0;

 protected:
  std::chrono::milliseconds timeout_;
};

}  // namespace gpurun::rendezvous
