#include "gpurun/rendezvous/memory_store.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "gpurun/common/error.h"
#include "kv_state.h"

namespace gpurun::rendezvous {
namespace {

std::string_view view(const Bytes& b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}
Bytes bytes(std::string_view s) { return Bytes(s.begin(), s.end()); }

// The in-memory store has no limits, so a refusal can only be a value that is not a counter.
void require_ok(const KvStatus& st, std::string_view op, const std::string& key) {
  if (st.ok()) return;
  if (st.code == KvStatus::kNotInteger) {
    throw Error(fmt::format("add on key '{}' whose value is not an integer; use a fresh key", key));
  }
  throw Error(fmt::format("{} on key '{}' refused by the in-memory store", op, key));
}

}  // namespace

MemoryStore::MemoryStore(std::chrono::milliseconds timeout)
    : Store(timeout), state_(std::make_unique<KvState>()) {}
MemoryStore::~MemoryStore() = default;

void MemoryStore::set(const std::string& key, const Bytes& value) {
  {
    std::lock_guard lock(mu_);
    require_ok(state_->set(key, view(value)), "set", key);
  }
  cv_.notify_all();
}

Bytes MemoryStore::get(const std::string& key) {
  std::unique_lock lock(mu_);
  wait_locked(lock, {key}, timeout(), "get");
  const std::string* v = state_->find(key);
  return v == nullptr ? Bytes() : bytes(*v);
}

std::int64_t MemoryStore::add(const std::string& key, std::int64_t delta) {
  std::int64_t result = 0;
  {
    std::lock_guard lock(mu_);
    require_ok(state_->add(key, delta, result), "add", key);
  }
  cv_.notify_all();
  return result;
}

Bytes MemoryStore::compare_set(const std::string& key, const Bytes& expected,
                               const Bytes& desired) {
  Bytes reply;
  {
    std::lock_guard lock(mu_);
    std::string_view r;
    require_ok(state_->compare_set(key, view(expected), view(desired), r), "compare_set", key);
    reply = bytes(r);
  }
  cv_.notify_all();
  return reply;
}

bool MemoryStore::check(const std::vector<std::string>& keys) {
  std::lock_guard lock(mu_);
  for (const auto& k : keys) {
    if (!state_->exists(k)) return false;
  }
  return true;
}

void MemoryStore::wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  wait_locked(lock, keys, timeout, "wait");
}

void MemoryStore::wait_locked(std::unique_lock<std::mutex>& lock,
                              const std::vector<std::string>& keys,
                              std::chrono::milliseconds timeout, std::string_view op) {
  auto all_present = [&] {
    for (const auto& k : keys) {
      if (!state_->exists(k)) return false;
    }
    return true;
  };
  auto deadline = deadline_after(timeout);
  if (deadline == Clock::time_point::max()) {
    cv_.wait(lock, all_present);
    return;
  }
  if (!cv_.wait_until(lock, deadline, all_present)) {
    std::vector<std::string> missing;
    for (const auto& k : keys) {
      if (!state_->exists(k)) missing.push_back("'" + k + "'");
    }
    throw StoreTimeout(fmt::format("{}: timed out after {} in {} waiting for key(s) {}", describe(),
                                   format_duration(timeout), op, fmt::join(missing, ", ")));
  }
}

bool MemoryStore::delete_key(const std::string& key) {
  std::lock_guard lock(mu_);
  return state_->erase(key);
}

std::int64_t MemoryStore::num_keys() {
  std::lock_guard lock(mu_);
  return static_cast<std::int64_t>(state_->num_keys());
}

std::vector<Bytes> MemoryStore::multi_get(const std::vector<std::string>& keys) {
  std::unique_lock lock(mu_);
  wait_locked(lock, keys, timeout(), "multi_get");
  std::vector<Bytes> out;
  out.reserve(keys.size());
  for (const auto& k : keys) {
    const std::string* v = state_->find(k);
    out.push_back(v == nullptr ? Bytes() : bytes(*v));
  }
  return out;
}

void MemoryStore::multi_set(const std::vector<std::string>& keys,
                            const std::vector<Bytes>& values) {
  if (keys.size() != values.size()) {
    throw Error(fmt::format("multi_set: {} keys but {} values; pass one value per key", keys.size(),
                            values.size()));
  }
  std::vector<std::string_view> ks(keys.begin(), keys.end());
  std::vector<std::string_view> vs;
  vs.reserve(values.size());
  for (const auto& v : values) vs.push_back(view(v));
  {
    std::lock_guard lock(mu_);
    require_ok(state_->multi_set(ks, vs), "multi_set", keys.empty() ? std::string() : keys[0]);
  }
  cv_.notify_all();
}

void MemoryStore::append(const std::string& key, const Bytes& value) {
  {
    std::lock_guard lock(mu_);
    require_ok(state_->append(key, view(value)), "append", key);
  }
  cv_.notify_all();
}

}  // namespace gpurun::rendezvous
