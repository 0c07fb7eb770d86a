#include "kv_state.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace gpurun::rendezvous {

std::optional<std::int64_t> parse_counter(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r'))) ++i;
  s.remove_prefix(i);
  if (!s.empty() && s.front() == '+') {
    s.remove_prefix(1);
    if (!s.empty() && s.front() == '-') return std::nullopt;
  }
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p == s.data()) return std::nullopt;
  return v;
}

const std::string* KvState::find(std::string_view key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

bool KvState::exists(std::string_view key) const {
  if (kv_.find(key) != kv_.end()) return true;
  auto q = queues_.find(key);
  return q != queues_.end() && !q->second.empty();
}

std::size_t KvState::queue_len(std::string_view key) const {
  auto it = queues_.find(key);
  return it == queues_.end() ? 0 : it->second.size();
}

const std::string* KvState::queue_front(std::string_view key) const {
  auto it = queues_.find(key);
  return it == queues_.end() || it->second.empty() ? nullptr : &it->second.front();
}

KvStatus KvState::reserve(std::int64_t delta) const {
  if (delta <= 0 || bytes_ + static_cast<std::uint64_t>(delta) <= limits_.max_store_bytes) {
    return {};
  }
  return {KvStatus::kOverBudget, static_cast<std::uint64_t>(delta)};
}

std::int64_t KvState::set_delta(std::string_view key, std::size_t size) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) return static_cast<std::int64_t>(entry_bytes(key, size));
  return static_cast<std::int64_t>(size) - static_cast<std::int64_t>(it->second.size());
}

KvStatus KvState::can_set(std::string_view key, std::size_t size) const {
  return reserve(set_delta(key, size));
}

void KvState::store(std::string_view key, std::string_view value) {
  mutate(key);
  auto it = kv_.find(key);
  if (it == kv_.end()) {
    bytes_ += entry_bytes(key, value.size());
    kv_.emplace(std::string(key), std::string(value));
  } else {
    bytes_ += value.size();
    bytes_ -= it->second.size();
    // A large old buffer goes to the owner (freed elsewhere); a small one is reused.
    if (hooks_ != nullptr && it->second.capacity() >= (std::size_t{1} << 20)) {
      dispose(std::move(it->second));
      it->second = std::string(value);
    } else {
      it->second.assign(value);
    }
  }
  wake_all(key);
}

KvStatus KvState::set(std::string_view key, std::string_view value) {
  if (auto st = can_set(key, value.size()); !st.ok()) return st;
  store(key, value);
  return {};
}

KvStatus KvState::set_moved(std::string key, std::string&& value) {
  if (auto st = can_set(key, value.size()); !st.ok()) return st;
  mutate(key);
  auto it = kv_.find(key);
  if (it == kv_.end()) {
    bytes_ += entry_bytes(key, value.size());
    it = kv_.emplace(std::move(key), std::move(value)).first;
  } else {
    bytes_ += value.size();
    bytes_ -= it->second.size();
    std::swap(it->second, value);
    dispose(std::move(value));
  }
  wake_all(it->first);
  return {};
}

KvStatus KvState::add(std::string_view key, std::int64_t delta, std::int64_t& result) {
  std::int64_t current = 0;
  if (auto it = kv_.find(key); it != kv_.end()) {
    auto v = parse_counter(it->second);
    if (!v) return {KvStatus::kNotInteger, 0};
    current = *v;
  }
  const std::int64_t sum = wrapping_add(current, delta);
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, sum);
  (void)ec;
  std::string_view text(digits, static_cast<std::size_t>(end - digits));
  if (auto st = set(key, text); !st.ok()) return st;
  result = sum;
  return {};
}

KvStatus KvState::compare_set(std::string_view key, std::string_view expected,
                              std::string_view desired, std::string_view& reply) {
  auto it = kv_.find(key);
  if (it == kv_.end() ? !expected.empty() : it->second != expected) {
    reply = it == kv_.end() ? expected : std::string_view(it->second);
    return {};
  }
  if (auto st = set(key, desired); !st.ok()) return st;
  reply = desired;
  return {};
}

KvStatus KvState::append(std::string_view key, std::string_view value) {
  auto it = kv_.find(key);
  std::size_t old = it == kv_.end() ? 0 : it->second.size();
  if (old + value.size() > limits_.max_value_bytes) {
    return {KvStatus::kValueTooLarge, old + value.size()};
  }
  if (auto st = reserve(set_delta(key, old + value.size())); !st.ok()) return st;
  if (it == kv_.end()) {
    bytes_ += entry_bytes(key, value.size());
    kv_.emplace(std::string(key), std::string(value));
  } else {
    mutate(key);
    bytes_ += value.size();
    it->second.append(value);
  }
  wake_all(key);
  return {};
}

KvStatus KvState::multi_set(std::span<const std::string_view> keys,
                            std::span<const std::string_view> values) {
  // An upper bound (a key set twice counts twice): the whole request or none of it.
  std::int64_t cost = 0;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    cost += std::max<std::int64_t>(0, set_delta(keys[i], values[i].size()));
  }
  if (auto st = reserve(cost); !st.ok()) return st;
  for (std::size_t i = 0; i < keys.size(); ++i) store(keys[i], values[i]);
  return {};
}

bool KvState::erase(std::string_view key) {
  auto it = kv_.find(key);
  if (it == kv_.end()) return false;
  mutate(key);
  bytes_ -= entry_bytes(it->first, it->second.size());
  dispose(std::move(it->second));
  kv_.erase(it);
  return true;
}

KvStatus KvState::queue_push(std::string_view key, std::string_view value) {
  auto it = queues_.find(key);
  std::size_t cost = value.size() + kKvEntryOverhead;
  if (it == queues_.end()) cost += key.size() + kKvEntryOverhead;
  if (auto st = reserve(static_cast<std::int64_t>(cost)); !st.ok()) return st;
  if (it == queues_.end()) it = queues_.emplace(std::string(key), 0).first;
  it->second.emplace_back(value);
  bytes_ += cost;
  wake_one(key);
  return {};
}

void KvState::queue_pop(std::string_view key) {
  auto it = queues_.find(key);
  if (it == queues_.end() || it->second.empty()) return;
  bytes_ -= it->second.front().size() + kKvEntryOverhead;
  it->second.pop_front();
  if (it->second.empty()) {
    bytes_ -= it->first.size() + kKvEntryOverhead;
    queues_.erase(it);
  }
}

KvStatus KvState::wait(KvWaiter& w, std::span<const std::string_view> keys, bool& ready) {
  cancel_wait(w);         // one registration per waiter: a new WAIT replaces the old one
  std::int64_t cost = 0;  // each registration: the key in waiting_on_ and in Wait::keys
  for (auto k : keys) {
    if (!exists(k)) cost += static_cast<std::int64_t>(2 * k.size() + kKvEntryOverhead);
  }
  if (auto st = reserve(cost); !st.ok()) return st;
  ready = cost == 0;
  if (ready) return {};
  Wait& reg = waits_[&w];
  for (auto k : keys) {
    if (exists(k)) continue;
    auto it = waiting_on_.find(k);
    if (it == waiting_on_.end()) it = waiting_on_.emplace(std::string(k), 0).first;
    it->second.push_back(&w);
    reg.keys.emplace_back(k);
    ++reg.remaining;
  }
  reg.bytes = static_cast<std::size_t>(cost);
  bytes_ += reg.bytes;
  return {};
}

void KvState::cancel_wait(KvWaiter& w) {
  if (auto r = std::find(ready_.begin(), ready_.end(), &w); r != ready_.end()) ready_.erase(r);
  auto it = waits_.find(&w);
  if (it == waits_.end()) return;
  for (const auto& key : it->second.keys) {
    auto q = waiting_on_.find(key);
    if (q == waiting_on_.end()) continue;
    std::erase(q->second, &w);
    if (q->second.empty()) waiting_on_.erase(q);
  }
  bytes_ -= it->second.bytes;
  waits_.erase(it);
}

void KvState::key_ready(KvWaiter* w) {
  auto it = waits_.find(w);
  if (it == waits_.end() || --it->second.remaining > 0) return;
  bytes_ -= it->second.bytes;
  waits_.erase(it);
  ready_.push_back(w);
}

void KvState::wake_all(std::string_view key) {
  if (waiting_on_.empty()) return;
  auto it = waiting_on_.find(key);
  if (it == waiting_on_.end()) return;
  std::vector<KvWaiter*> list = std::move(it->second);
  waiting_on_.erase(it);
  for (KvWaiter* w : list) key_ready(w);
}

void KvState::wake_one(std::string_view key) {
  if (waiting_on_.empty()) return;
  auto it = waiting_on_.find(key);
  if (it == waiting_on_.end()) return;
  KvWaiter* w = it->second.front();
  it->second.erase(it->second.begin());
  if (it->second.empty()) waiting_on_.erase(it);
  key_ready(w);
}

void KvState::deliver() {
  while (!ready_.empty()) {
    KvWaiter* w = ready_.front();
    ready_.pop_front();
    w->keys_ready();  // may write, close (cancel_wait) or register again
  }
}

std::uint64_t KvState::recount() const {
  std::uint64_t bytes = 0;
  for (const auto& [k, v] : kv_) bytes += entry_bytes(k, v.size());
  for (const auto& [k, q] : queues_) {
    bytes += k.size() + kKvEntryOverhead;
    for (const auto& item : q) bytes += item.size() + kKvEntryOverhead;
  }
  for (const auto& [w, reg] : waits_) {
    for (const auto& k : reg.keys) bytes += 2 * k.size() + kKvEntryOverhead;
  }
  return bytes;
}

std::string KvState::audit_waits() const {
  std::size_t remaining = 0, listed = 0;
  for (const auto& [w, reg] : waits_) remaining += reg.remaining;
  for (const auto& [k, list] : waiting_on_) listed += list.size();
  if (remaining == listed) return "";
  return fmt::format("wait registrations counted {} but {} listed; ", remaining, listed);
}

}  // namespace gpurun::rendezvous
