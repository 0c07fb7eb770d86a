#include "gpurun/rendezvous/memory_store.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <charconv>

#include "gpurun/common/error.h"

namespace gpurun::rendezvous {
namespace {

std::int64_t parse_counter(const Bytes& v, const std::string& key) {
  std::string_view s(reinterpret_cast<const char*>(v.data()), v.size());
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  std::int64_t out = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  if (ec != std::errc() || p == s.data()) {
    throw Error(fmt::format("add on key '{}' whose value is not an integer; use a fresh key", key));
  }
  return out;
}

}  // namespace

void MemoryStore::set(const std::string& key, const Bytes& value) {
  {
    std::lock_guard lock(mu_);
    data_[key] = value;
  }
  cv_.notify_all();
}

Bytes MemoryStore::get(const std::string& key) {
  std::unique_lock lock(mu_);
  wait_locked(lock, {key}, timeout(), "get");
  return data_.find(key)->second;
}

std::int64_t MemoryStore::add(const std::string& key, std::int64_t delta) {
  std::int64_t result;
  {
    std::lock_guard lock(mu_);
    auto it = data_.find(key);
    std::int64_t current = it == data_.end() ? 0 : parse_counter(it->second, key);
    result = current + delta;
    data_[key] = to_bytes(std::to_string(result));
  }
  cv_.notify_all();
  return result;
}

Bytes MemoryStore::compare_set(const std::string& key, const Bytes& expected,
                               const Bytes& desired) {
  Bytes reply;
  bool changed = false;
  {
    std::lock_guard lock(mu_);
    auto it = data_.find(key);
    if (it == data_.end()) {
      if (expected.empty()) {
        data_[key] = desired;
        reply = desired;
        changed = true;
      } else {
        reply = expected;
      }
    } else if (it->second == expected) {
      it->second = desired;
      reply = desired;
      changed = true;
    } else {
      reply = it->second;
    }
  }
  if (changed) cv_.notify_all();
  return reply;
}

bool MemoryStore::check(const std::vector<std::string>& keys) {
  std::lock_guard lock(mu_);
  for (const auto& k : keys) {
    if (data_.find(k) == data_.end()) return false;
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
      if (data_.find(k) == data_.end()) return false;
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
      if (data_.find(k) == data_.end()) missing.push_back("'" + k + "'");
    }
    throw StoreTimeout(fmt::format("{}: timed out after {} in {} waiting for key(s) {}", describe(),
                                   format_duration(timeout), op, fmt::join(missing, ", ")));
  }
}

bool MemoryStore::delete_key(const std::string& key) {
  std::lock_guard lock(mu_);
  return data_.erase(key) > 0;
}

std::int64_t MemoryStore::num_keys() {
  std::lock_guard lock(mu_);
  return static_cast<std::int64_t>(data_.size());
}

std::vector<Bytes> MemoryStore::multi_get(const std::vector<std::string>& keys) {
  std::unique_lock lock(mu_);
  wait_locked(lock, keys, timeout(), "multi_get");
  std::vector<Bytes> out;
  out.reserve(keys.size());
  for (const auto& k : keys) out.push_back(data_.find(k)->second);
  return out;
}

void MemoryStore::multi_set(const std::vector<std::string>& keys,
                            const std::vector<Bytes>& values) {
  if (keys.size() != values.size()) {
    throw Error(fmt::format("multi_set: {} keys but {} values; pass one value per key", keys.size(),
                            values.size()));
  }
  {
    std::lock_guard lock(mu_);
    for (std::size_t i = 0; i < keys.size(); ++i) data_[keys[i]] = values[i];
  }
  cv_.notify_all();
}

void MemoryStore::append(const std::string& key, const Bytes& value) {
  {
    std::lock_guard lock(mu_);
    auto& v = data_[key];
    v.insert(v.end(), value.begin(), value.end());
  }
  cv_.notify_all();
}

}  // namespace gpurun::rendezvous
