// KvState: the store's data and its rules, apart from any transport (as c10d's TCPStoreBackend or
// Gloo's rendezvous store): keys and values, ADD counters, compare_set, queues, wait
// registrations, and the memory budget. One implementation for MemoryStore (in-process, under its
// mutex) and the StoreServer (on its event loop); neither has rules of its own.
//
// Not thread-safe: the caller serialises every call (MemoryStore's mutex, the server's loop).
// A write that is refused changes nothing and says why (KvStatus); the callers word the error.
#pragma once

#include <cstdint>
#include <deque>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace gpurun::rendezvous {

// Bookkeeping charged per stored entry, queue item and wait registration on top of its bytes, so
// that millions of empty keys still count against the budget.
inline constexpr std::size_t kKvEntryOverhead = 64;

// std::stoll rules (PROTOCOL.md §5.3): leading whitespace, an optional sign, digits; trailing
// junk ignored. "+-5", "", "x" are not integers.
std::optional<std::int64_t> parse_counter(std::string_view s);
// ADD's arithmetic: two's-complement wrap at the int64 bounds (no signed-overflow UB).
inline std::int64_t wrapping_add(std::int64_t a, std::int64_t b) {
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(a) + static_cast<std::uint64_t>(b));
}

// A map from string keys that is searched with string_views (no temporary std::string).
struct StrHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};
template <typename V>
using StrMap = std::unordered_map<std::string, V, StrHash, std::equal_to<>>;

// Someone blocked in a WAIT. keys_ready() is called (from KvState::deliver) once every key of its
// registration exists; the registration is gone by then.
class KvWaiter {
 public:
  virtual void keys_ready() = 0;

 protected:
  ~KvWaiter() = default;
};

// Optional hooks of the owner. before_mutate: `key`'s stored value is about to change or go
// (the server streams large values straight from the store). dispose: a value that was replaced
// or deleted (the server frees large ones on another thread).
class KvHooks {
 public:
  virtual void before_mutate(std::string_view key) = 0;
  virtual void dispose(std::string&& old_value) = 0;

 protected:
  ~KvHooks() = default;
};

struct KvLimits {
  std::uint64_t max_store_bytes = std::numeric_limits<std::uint64_t>::max();
  std::size_t max_value_bytes = std::numeric_limits<std::size_t>::max();  // APPEND's result
};

// What a write did. On refusal nothing changed; `amount` is the bytes the write needed more
// (kOverBudget) or the value size it would have made (kValueTooLarge).
struct KvStatus {
  enum Code { kOk, kOverBudget, kNotInteger, kValueTooLarge };
  Code code = kOk;
  std::uint64_t amount = 0;
  bool ok() const { return code == kOk; }
};

class KvState {
 public:
  explicit KvState(KvLimits limits = {}, KvHooks* hooks = nullptr)
      : limits_(limits), hooks_(hooks) {}
  KvState(const KvState&) = delete;
  KvState& operator=(const KvState&) = delete;

  // ---- reads ----
  // The stored value (valid until the next write), or nullptr.
  const std::string* find(std::string_view key) const;
  // A value, or a non-empty queue, is stored under `key` (what CHECK and WAIT look for).
  bool exists(std::string_view key) const;
  std::size_t num_keys() const { return kv_.size(); }  // values only, not queues
  std::size_t queue_len(std::string_view key) const;
  const std::string* queue_front(std::string_view key) const;  // nullptr when empty

  // ---- writes (each wakes the waiters of what it creates) ----
  [[nodiscard]] KvStatus set(std::string_view key, std::string_view value);
  // The same, taking ownership of `value` (a large value is moved in, not copied).
  [[nodiscard]] KvStatus set_moved(std::string key, std::string&& value);
  // Whether set(key, <size bytes>) would fit the budget now.
  [[nodiscard]] KvStatus can_set(std::string_view key, std::size_t size) const;
  // Adds to the counter at `key` (absent = 0; two's-complement wrap, no overflow), stores it as
  // ASCII decimal and returns it in `result`.
  [[nodiscard]] KvStatus add(std::string_view key, std::int64_t delta, std::int64_t& result);
  // c10d's four cases: absent + expected "" -> store desired, reply desired; absent + expected
  // non-empty -> reply expected; current == expected -> store desired, reply desired; otherwise
  // reply the current value. `reply` views `expected`, `desired` or the stored value.
  [[nodiscard]] KvStatus compare_set(std::string_view key, std::string_view expected,
                                     std::string_view desired, std::string_view& reply);
  [[nodiscard]] KvStatus append(std::string_view key, std::string_view value);
  // All pairs or none (the budget is checked for the whole request first).
  [[nodiscard]] KvStatus multi_set(std::span<const std::string_view> keys,
                                   std::span<const std::string_view> values);
  bool erase(std::string_view key);  // true if the key had a value
  // Queues: a FIFO per key apart from the values. A push wakes one registration on the key.
  [[nodiscard]] KvStatus queue_push(std::string_view key, std::string_view value);
  void queue_pop(std::string_view key);  // drops the head (no-op when empty)

  // ---- waits: one registration per waiter (a new one replaces the old) ----
  // Registers `w` for the missing `keys` (a key listed twice counts twice); `ready` tells that
  // none was missing (nothing registered). Registrations count against the budget.
  [[nodiscard]] KvStatus wait(KvWaiter& w, std::span<const std::string_view> keys, bool& ready);
  void cancel_wait(KvWaiter& w);  // drops its registration, also one about to be delivered
  std::size_t waiters() const { return waits_.size() + ready_.size(); }
  // Calls keys_ready() on every waiter whose keys all exist now. The owner calls this after the
  // reply to the request that woke them is written (so a pipelined reply keeps its order).
  void deliver();

  // ---- budget ----
  std::uint64_t bytes() const { return bytes_; }
  const KvLimits& limits() const { return limits_; }
  // For data the owner keeps outside (the server's last wills): whether `delta` bytes more fit,
  // and counting them.
  [[nodiscard]] KvStatus reserve(std::int64_t delta) const;
  void charge(std::int64_t delta) { bytes_ += static_cast<std::uint64_t>(delta); }
  static std::size_t entry_bytes(std::string_view key, std::size_t value) {
    return key.size() + value + kKvEntryOverhead;
  }
  // What bytes() should be, recounted from the data (without charge()d bytes). Linear.
  std::uint64_t recount() const;
  // "" when every waiter's count of missing keys matches its registrations, else what differs.
  std::string audit_waits() const;

 private:
  struct Wait {
    std::size_t remaining = 0;
    std::size_t bytes = 0;          // budget charged for the registrations
    std::vector<std::string> keys;  // the registrations, for cancel_wait
  };

  std::int64_t set_delta(std::string_view key, std::size_t size) const;
  void store(std::string_view key, std::string_view value);  // budget already checked
  void mutate(std::string_view key) {
    if (hooks_ != nullptr) hooks_->before_mutate(key);
  }
  void dispose(std::string&& v) {
    if (hooks_ != nullptr) hooks_->dispose(std::move(v));
  }
  void wake_all(std::string_view key);
  void wake_one(std::string_view key);
  void key_ready(KvWaiter* w);

  KvLimits limits_;
  KvHooks* hooks_;
  StrMap<std::string> kv_;
  StrMap<std::deque<std::string>> queues_;
  // key -> one entry per registration; waits_ holds each waiter's registrations.
  StrMap<std::vector<KvWaiter*>> waiting_on_;
  std::unordered_map<KvWaiter*, Wait> waits_;
  std::deque<KvWaiter*> ready_;  // woken, keys_ready() not yet called
  std::uint64_t bytes_ = 0;
};

}  // namespace gpurun::rendezvous
