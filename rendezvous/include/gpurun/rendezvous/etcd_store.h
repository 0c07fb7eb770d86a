// The Store contract over etcd's v3 API (the HTTP/JSON gateway, src/etcd_client.h), so that the
// elastic rendezvous can keep its state in an etcd cluster instead of in one gpurun process.
//   set/delete_key/num_keys/check: one request each (check: one txn of ranges).
//   add/append/compare_set: transactions guarded by the key's mod_revision (or its value), so
//     concurrent writers never lose an update; a lost race retries with the value the failed txn
//     returned, not by re-polling.
//   get/wait/multi_get: a range, then a watch from the range's revision until the key is put:
//     no polling; StoreTimeout names the keys still missing and the endpoints.
//   Leases: the keep-alive of an elastic agent (its liveness keys die with its lease), and
//     watch_deletes() to learn at once when another agent's keys went.
// Every key lives under `prefix`. Endpoint failover across the cluster's members (etcd_client.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "gpurun/rendezvous/store.h"

namespace gpurun::rendezvous {

namespace etcd {
class EtcdClient;
}

struct EtcdStoreOptions {
  std::string endpoints = "127.0.0.1:2379";                    // "HOST:PORT[,HOST:PORT...]"
  std::string prefix;                                          // prepended to every key ("" = none)
  std::chrono::milliseconds timeout = Store::kDefaultTimeout;  // blocking get/wait
  // How long one request may take across every member (failover included) before the store
  // reports etcd unreachable.
  std::chrono::milliseconds request_timeout{15'000};
};

class EtcdStore final : public Store {
 public:
  // Checks that etcd answers (one range): throws NetworkError naming every endpoint tried and
  // what to check, ConfigError for a malformed endpoint list.
  explicit EtcdStore(EtcdStoreOptions options);
  ~EtcdStore() override;

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
  std::string describe() const override;  // "etcd 127.0.0.1:2379,127.0.0.1:2479"

  // ---- leases and deletion watches (the elastic agents' keep-alive) ----
  // A lease of `ttl` (rounded up to whole seconds, at least 1 s). Returns its id.
  std::int64_t grant_lease(std::chrono::milliseconds ttl);
  // Refreshes it; false when the lease is gone (expired or revoked).
  bool keep_alive(std::int64_t lease);
  void revoke_lease(std::int64_t lease);
  // set() with the key attached to `lease`: it is deleted when the lease ends.
  void set_with_lease(const std::string& key, const Bytes& value, std::int64_t lease);
  // The cluster's current revision (a watch from revision()+1 misses nothing after this call).
  std::int64_t revision();
  // Watches the keys under `key_prefix` (relative to the store's prefix) from `from_revision`
  // until `deadline`, calling on_delete(key, value it had) for each deletion, until it returns
  // false, or until *cancel becomes true (checked every 0.1 s). Returns the revision to resume
  // from.
  std::int64_t watch_deletes(
      const std::string& key_prefix, std::int64_t from_revision, Clock::time_point deadline,
      const std::function<bool(const std::string& key, const Bytes& value)>& on_delete,
      const std::atomic<bool>* cancel = nullptr);

 private:
  std::string full(const std::string& key) const { return prefix_ + key; }

  std::unique_ptr<etcd::EtcdClient> c_;
  std::string prefix_;
};

}  // namespace gpurun::rendezvous
