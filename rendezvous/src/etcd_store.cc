// EtcdStore: the Store contract as etcd v3 requests (see etcd_store.h).
#include "gpurun/rendezvous/etcd_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <random>
#include <thread>

#include "etcd_client.h"
#include "gpurun/common/error.h"
#include "kv_state.h"

namespace gpurun::rendezvous {

using etcd::b64encode;
using etcd::json;
using etcd::KeyValue;

namespace {

constexpr std::size_t kTxnOps = 100;  // etcd's default --max-txn-ops is 128

json range_op(const std::string& key, bool count_only = false) {
  json r{{"key", b64encode(key)}};
  if (count_only) r["count_only"] = true;
  return json{{"request_range", r}};
}

json put_op(const std::string& key, const Bytes& value) {
  return json{{"request_put", {{"key", b64encode(key)}, {"value", b64encode(to_string(value))}}}};
}

json cmp_mod(const std::string& key, std::int64_t mod_revision) {
  return json{{"key", b64encode(key)},
              {"target", "MOD"},
              {"result", "EQUAL"},
              {"mod_revision", std::to_string(mod_revision)}};
}

// The kv of the i-th response of a txn (a request_range), if the key was there.
std::optional<KeyValue> range_result(const json& txn, std::size_t i) {
  const auto& rs = txn.value("responses", json::array());
  if (i >= rs.size()) return std::nullopt;
  const json& rr = rs[i].value("response_range", json::object());
  if (!rr.contains("kvs") || rr["kvs"].empty()) return std::nullopt;
  return etcd::kv_from_json(rr["kvs"][0]);
}

std::int64_t range_count(const json& txn, std::size_t i) {
  const auto& rs = txn.value("responses", json::array());
  if (i >= rs.size()) return 0;
  const json& rr = rs[i].value("response_range", json::object());
  auto it = rr.find("count");
  if (it == rr.end()) return 0;
  return it->is_string() ? std::stoll(it->get<std::string>()) : it->get<std::int64_t>();
}

std::int64_t header_revision(const json& j) {
  const json& h = j.value("header", json::object());
  auto it = h.find("revision");
  if (it == h.end()) return 0;
  return it->is_string() ? std::stoll(it->get<std::string>()) : it->get<std::int64_t>();
}

// The counter rules of every Store (kv_state.h: std::stoll's, '+-5' refused).
std::int64_t parse_counter(const std::string& key, const Bytes& v) {
  const std::string s = to_string(v);
  if (auto n = rendezvous::parse_counter(s)) return *n;
  throw ProtocolError(fmt::format("etcd store: add() on '{}' whose value '{}' is not an integer",
                                  key, s.substr(0, 64)));
}

}  // namespace

EtcdStore::EtcdStore(EtcdStoreOptions o)
    : Store(o.timeout),
      c_(std::make_unique<etcd::EtcdClient>(etcd::parse_endpoints(o.endpoints), o.request_timeout)),
      prefix_(std::move(o.prefix)) {
  c_->get(prefix_ +
          "gpurun.etcd.hello");  // fails here, naming every endpoint, if etcd is not there
}

EtcdStore::~EtcdStore() = default;

std::string EtcdStore::describe() const { return c_->describe(); }

void EtcdStore::set(const std::string& key, const Bytes& value) { c_->put(full(key), value); }

// Reads the key; when absent, watches it from the read's revision until a put or the deadline.
static std::optional<KeyValue> await_key(etcd::EtcdClient& c, const std::string& key,
                                         Clock::time_point deadline) {
  for (;;) {
    std::int64_t rev = 0;
    if (auto kv = c.get(key, &rev)) return kv;
    std::optional<KeyValue> got;
    c.watch(key, "", rev + 1, false, deadline, [&](const etcd::WatchEvent& e) {
      if (e.deleted) return true;
      got = e.kv;
      return false;
    });
    if (got) return got;
    if (remaining(deadline) == milliseconds::zero()) return std::nullopt;
  }
}

Bytes EtcdStore::get(const std::string& key) {
  const auto deadline = deadline_after(timeout());
  if (auto kv = await_key(*c_, full(key), deadline)) return kv->value;
  throw StoreTimeout(fmt::format(
      "timed out after {} waiting for key '{}' in {} (get); the process that should set it did "
      "not, or raise the timeout",
      format_duration(timeout()), key, describe()));
}

void EtcdStore::wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
  const auto deadline = deadline_after(timeout);
  for (const auto& k : keys) {
    if (await_key(*c_, full(k), deadline)) continue;
    std::vector<std::string> missing;
    for (const auto& m : keys) {
      if (!check({m})) missing.push_back("'" + m + "'");
    }
    if (missing.empty()) return;  // set right at the deadline
    throw StoreTimeout(fmt::format(
        "timed out after {} waiting for key{} {} in {} (wait); the process that should set {} "
        "did not, or raise the timeout",
        format_duration(timeout), missing.size() == 1 ? "" : "s", fmt::join(missing, ", "),
        describe(), missing.size() == 1 ? "it" : "them"));
  }
}

// After a lost compare-and-swap race: a short random pause that grows with the losses, so N
// writers racing for one counter take ~N transactions through raft, not ~N^2 (contention backoff,
// not a wait for anything).
static void backoff_after_loss(int losses) {
  thread_local std::minstd_rand rng(std::random_device{}());
  const int cap_us = std::min(50'000, 500 << std::min(losses, 7));
  std::this_thread::sleep_for(std::chrono::microseconds(rng() % static_cast<unsigned>(cap_us)));
}

std::int64_t EtcdStore::add(const std::string& key, std::int64_t delta) {
  const std::string k = full(key);
  std::optional<KeyValue> cur = c_->get(k);
  for (int losses = 0;; backoff_after_loss(++losses)) {
    const std::int64_t now = cur ? parse_counter(key, cur->value) : 0;
    const std::int64_t next = wrapping_add(now, delta);
    if (delta == 0 && cur) return now;
    json t{{"compare", json::array({cmp_mod(k, cur ? cur->mod_revision : 0)})},
           {"success", json::array({put_op(k, to_bytes(std::to_string(next)))})},
           {"failure", json::array({range_op(k)})}};
    json r = c_->call("/v3/kv/txn", t);
    if (r.value("succeeded", false)) return next;
    cur = range_result(r, 0);  // lost a race: retry on the value that won
  }
}

void EtcdStore::append(const std::string& key, const Bytes& value) {
  const std::string k = full(key);
  std::optional<KeyValue> cur = c_->get(k);
  for (int losses = 0;; backoff_after_loss(++losses)) {
    Bytes next = cur ? cur->value : Bytes{};
    next.insert(next.end(), value.begin(), value.end());
    json t{{"compare", json::array({cmp_mod(k, cur ? cur->mod_revision : 0)})},
           {"success", json::array({put_op(k, next)})},
           {"failure", json::array({range_op(k)})}};
    json r = c_->call("/v3/kv/txn", t);
    if (r.value("succeeded", false)) return;
    cur = range_result(r, 0);
  }
}

Bytes EtcdStore::compare_set(const std::string& key, const Bytes& expected, const Bytes& desired) {
  const std::string k = full(key);
  // present == expected: store desired.
  json t{{"compare", json::array({json{{"key", b64encode(k)},
                                       {"target", "VALUE"},
                                       {"result", "EQUAL"},
                                       {"value", b64encode(to_string(expected))}}})},
         {"success", json::array({put_op(k, desired)})},
         {"failure", json::array({range_op(k)})}};
  json r = c_->call("/v3/kv/txn", t);
  if (r.value("succeeded", false)) return desired;
  if (auto cur = range_result(r, 0)) return cur->value;
  if (!expected.empty()) return expected;  // absent, expected something: no change
  // absent, expected empty: create it unless someone else just did.
  json c{{"compare", json::array({cmp_mod(k, 0)})},
         {"success", json::array({put_op(k, desired)})},
         {"failure", json::array({range_op(k)})}};
  r = c_->call("/v3/kv/txn", c);
  if (r.value("succeeded", false)) return desired;
  auto cur = range_result(r, 0);
  return cur ? cur->value : expected;
}

bool EtcdStore::check(const std::vector<std::string>& keys) {
  for (std::size_t at = 0; at < keys.size(); at += kTxnOps) {
    json ops = json::array();
    const std::size_t end = std::min(keys.size(), at + kTxnOps);
    for (std::size_t i = at; i < end; ++i) ops.push_back(range_op(full(keys[i]), true));
    json r = c_->call("/v3/kv/txn", {{"success", ops}});
    for (std::size_t i = 0; i < end - at; ++i) {
      if (range_count(r, i) == 0) return false;
    }
  }
  return true;
}

bool EtcdStore::delete_key(const std::string& key) { return c_->del(full(key)) > 0; }

std::int64_t EtcdStore::num_keys() {
  return prefix_.empty() ? c_->count(std::string(1, '\0'), std::string(1, '\0'))
                         : c_->count(prefix_, etcd::prefix_end(prefix_));
}

std::vector<Bytes> EtcdStore::multi_get(const std::vector<std::string>& keys) {
  for (;;) {
    wait(keys, timeout());
    std::vector<Bytes> out;
    bool all = true;
    for (std::size_t at = 0; at < keys.size() && all; at += kTxnOps) {
      json ops = json::array();
      const std::size_t end = std::min(keys.size(), at + kTxnOps);
      for (std::size_t i = at; i < end; ++i) ops.push_back(range_op(full(keys[i])));
      json r = c_->call("/v3/kv/txn", {{"success", ops}});
      for (std::size_t i = 0; i < end - at; ++i) {
        auto kv = range_result(r, i);
        if (!kv) {
          all = false;  // deleted since the wait: wait again
          break;
        }
        out.push_back(std::move(kv->value));
      }
    }
    if (all) return out;
  }
}

void EtcdStore::multi_set(const std::vector<std::string>& keys, const std::vector<Bytes>& values) {
  if (keys.size() != values.size()) {
    throw Error("etcd store: multi_set needs as many values as keys");
  }
  // Atomic per batch of kTxnOps keys (etcd bounds the operations of one txn).
  for (std::size_t at = 0; at < keys.size(); at += kTxnOps) {
    json ops = json::array();
    const std::size_t end = std::min(keys.size(), at + kTxnOps);
    for (std::size_t i = at; i < end; ++i) ops.push_back(put_op(full(keys[i]), values[i]));
    c_->call("/v3/kv/txn", {{"success", ops}});
  }
}

// ---- leases ----

std::int64_t EtcdStore::grant_lease(std::chrono::milliseconds ttl) {
  const std::int64_t secs = std::max<std::int64_t>(1, (ttl.count() + 999) / 1000);
  return c_->lease_grant(secs);
}

bool EtcdStore::keep_alive(std::int64_t lease) { return c_->lease_keepalive(lease) > 0; }

void EtcdStore::revoke_lease(std::int64_t lease) { c_->lease_revoke(lease); }

void EtcdStore::set_with_lease(const std::string& key, const Bytes& value, std::int64_t lease) {
  c_->put(full(key), value, lease);
}

std::int64_t EtcdStore::revision() {
  return header_revision(c_->call("/v3/kv/range", {{"key", b64encode(full("gpurun.etcd.rev"))}}));
}

std::int64_t EtcdStore::watch_deletes(
    const std::string& key_prefix, std::int64_t from_revision, Clock::time_point deadline,
    const std::function<bool(const std::string& key, const Bytes& value)>& on_delete,
    const std::atomic<bool>* cancel) {
  const std::string p = full(key_prefix);
  std::int64_t next = from_revision;
  c_->watch(
      p, etcd::prefix_end(p), from_revision, true, deadline,
      [&](const etcd::WatchEvent& e) {
        next = std::max(next, e.kv.mod_revision + 1);
        if (!e.deleted) return true;
        return on_delete(e.kv.key.substr(prefix_.size()), e.prev ? e.prev->value : Bytes{});
      },
      cancel);
  return next;
}

}  // namespace gpurun::rendezvous
