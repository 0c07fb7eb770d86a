// A small etcd v3 client over etcd's HTTP/JSON gateway (grpc-gateway: POST /v3/kv/range, put,
// txn, deleterange, /v3/lease/grant|keepalive|revoke, /v3/watch; keys and values base64, int64s
// as JSON strings, default-valued fields omitted). Boost.Beast for HTTP/1.1, nlohmann for JSON.
//
// Endpoint failover: a request goes to the member that answered last; a member that refuses,
// times out, drops the connection or answers "unavailable" (no leader, leader changed, stopping)
// is skipped for the next one in the list, sweeping the list with a short backoff until the
// request's deadline. When every member failed the NetworkError names each endpoint and what it
// answered. A gateway that is not there (404 on /v3/...) is a clear ConfigError-like message.
//
// Each request opens its own connection (loopback and LAN connects cost ~0.1 ms; no pool to go
// stale on failover). Thread-safe: no shared mutable state but the preferred-member index.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "gpurun/common/duration.h"
#include "gpurun/rendezvous/store.h"

namespace gpurun::rendezvous::etcd {

using nlohmann::json;

std::string b64encode(std::string_view bytes);
std::string b64decode(std::string_view text);  // throws ProtocolError on bad input

struct KeyValue {
  std::string key;
  Bytes value;
  std::int64_t create_revision = 0;
  std::int64_t mod_revision = 0;
  std::int64_t lease = 0;
};
KeyValue kv_from_json(const json& j);

struct WatchEvent {
  bool deleted = false;  // DELETE (a lease that expired or was revoked deletes its keys too)
  KeyValue kv;
  std::optional<KeyValue> prev;  // with prev_kv
};

struct HostPort {
  std::string host;
  std::string port;
  std::string str() const;
};
// "h:p,h2:p2" (also http://h:p, [v6]:p); default port 2379. Throws ConfigError.
std::vector<HostPort> parse_endpoints(const std::string& text);

class EtcdClient {
 public:
  explicit EtcdClient(std::vector<HostPort> endpoints,
                      milliseconds request_timeout = milliseconds(10'000));

  // One unary call with failover; returns the answer's JSON. Throws NetworkError.
  json call(const std::string& path, const json& body);
  json call(const std::string& path, const json& body, Clock::time_point deadline);

  // Range of one key (nullopt if absent); the header revision goes to *revision when given.
  std::optional<KeyValue> get(const std::string& key, std::int64_t* revision = nullptr);
  std::int64_t put(const std::string& key, const Bytes& value, std::int64_t lease = 0);
  // Number of keys deleted.
  std::int64_t del(const std::string& key, const std::string& range_end = "");
  std::int64_t count(const std::string& key, const std::string& range_end);

  std::int64_t lease_grant(std::int64_t ttl_seconds);  // the lease id
  // TTL left after the refresh; 0 when the lease is gone (expired or revoked).
  std::int64_t lease_keepalive(std::int64_t id);
  void lease_revoke(std::int64_t id);

  // Watches [key, range_end) (range_end "" = the key alone) from start_revision. Calls on_event
  // for every event in order until it returns false (then returns true) or the deadline passes
  // (returns false) or *cancel becomes true (returns false within 0.1 s). A member that fails
  // mid-watch is replaced by the next one, resuming after the last revision seen, so no event is
  // lost or repeated.
  bool watch(const std::string& key, const std::string& range_end, std::int64_t start_revision,
             bool prev_kv, Clock::time_point deadline,
             const std::function<bool(const WatchEvent&)>& on_event,
             const std::atomic<bool>* cancel = nullptr);

  const std::vector<HostPort>& endpoints() const { return eps_; }
  std::string describe() const;  // "etcd 127.0.0.1:2379,127.0.0.1:2479"
  milliseconds request_timeout() const { return timeout_; }

 private:
  std::vector<HostPort> eps_;
  milliseconds timeout_;
  std::atomic<std::size_t> preferred_{0};
};

// The end of the prefix range that starts with `prefix` (etcd's "prefix" range_end).
std::string prefix_end(const std::string& prefix);

}  // namespace gpurun::rendezvous::etcd
