// --rdzv-backend etcd: the elastic rendezvous's state in an etcd cluster (rdzv_backend.h), so no
// gpurun process is a single point of failure: etcd survives the loss of a minority of its
// members, the workers' store of a round lives on that round's group-rank-0 agent, and a round
// that loses it re-forms on the survivors with a new group rank 0.
//
// Keep-alive: each agent holds an etcd lease of keep_alive_interval x keep_alive_max_attempt,
// refreshed every third of it. Its last wills are keys attached to that lease under
// "gpurun.wills.<run id>/<agent id>/", each valued {"target", "value"}. Every agent watches that
// prefix for deletions: when an agent dies its lease expires, etcd deletes its keys, and each
// watcher writes the will's value at its target unless the target exists (compare_set: the
// first writer wins, the others change nothing), as the c10d store server does on a dropped
// connection. Cancelling a will blanks it before deleting it, so that deletion fires nothing.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "gpurun/common/error.h"
#include "gpurun/rendezvous/etcd_store.h"
#include "multinode/rdzv_backend.h"
#include "run/run_internal.h"

namespace gpurun::launcher {

namespace {

using nlohmann::json;
using rendezvous::Bytes;
using rendezvous::to_bytes;
using rendezvous::to_string;

constexpr milliseconds kWatchSlice{30'000};  // one watch request of the will watcher (cancellable)
constexpr milliseconds kRetryPause{300};     // after etcd could not be reached

class EtcdBackend final : public RdzvBackend {
 public:
  EtcdBackend(const RdzvSettings& s, const RdzvNode& me, const std::string& endpoints)
      : ttl_(s.keep_alive_interval * s.keep_alive_max_attempt),
        wills_prefix_(fmt::format("gpurun.wills.{}/", s.run_id)),
        mine_(fmt::format("{}{}/", wills_prefix_, me.id)) {
    rendezvous::EtcdStoreOptions o;
    o.endpoints = endpoints;
    o.prefix = "/gpurun/";
    o.timeout = s.read_timeout;
    // How long etcd may be unreachable before the agent gives up (at start: join_timeout).
    o.request_timeout = std::clamp(s.join_timeout, milliseconds(1000), milliseconds(15'000));
    store_ = std::make_unique<rendezvous::EtcdStore>(o);
    lease_ = store_->grant_lease(ttl_);
    from_ = store_->revision() + 1;
    keeper_ = std::thread([this] { keep_alive_loop(); });
    watcher_ = std::thread([this] { watch_loop(); });
  }

  ~EtcdBackend() override { stop(); }

  rendezvous::Store& store() override { return *store_; }

  void set_will(const std::string& target, const std::string& value) override {
    std::lock_guard lk(mu_);
    auto it = wills_.find(target);
    const std::string key =
        it != wills_.end() ? it->second.first : mine_ + std::to_string(next_will_++);
    const std::string v = json{{"target", target}, {"value", value}}.dump();
    store_->set_with_lease(key, to_bytes(v), lease_);
    wills_[target] = {key, v};
  }

  void cancel_will(const std::string& target) override {
    std::lock_guard lk(mu_);
    auto it = wills_.find(target);
    if (it == wills_.end()) return;
    store_->set_with_lease(it->second.first, Bytes{}, lease_);  // a blank will fires nothing
    store_->delete_key(it->second.first);
    wills_.erase(it);
  }

  bool hosts_store() const override { return false; }
  void leave(ElasticRendezvous& rdzv, bool /*wait_for_others*/) override {
    try {
      rdzv.say_bye();
    } catch (const Error&) {
    }
    stop();
  }

 private:
  void stop() {
    {
      std::lock_guard lk(mu_);
      if (quit_) return;
      quit_ = true;
      cancel_ = true;
    }
    cv_.notify_all();
    if (keeper_.joinable()) keeper_.join();
    if (watcher_.joinable()) watcher_.join();
    try {
      store_->revoke_lease(lease_);  // our wills go; their targets exist by now (or never fire)
    } catch (const Error&) {
    }
  }

  void keep_alive_loop() {
    const auto every = std::max(milliseconds(200), ttl_ / 3);
    bool warned = false;
    std::unique_lock lk(mu_);
    while (!cv_.wait_for(lk, every, [this] { return quit_; })) {
      const auto lease = lease_;
      lk.unlock();
      bool alive = false;
      std::string error;
      try {
        alive = store_->keep_alive(lease);
      } catch (const Error& e) {
        error = e.what();
      }
      lk.lock();
      if (!error.empty()) {
        if (!warned) {
          write_stderr(fmt::format(
              "gpurun: warning: cannot refresh this agent's etcd lease ({}); retrying, the other "
              "agents declare this node lost if it stays unrefreshed for {}\n",
              error, format_duration(ttl_)));
        }
        warned = true;
        continue;
      }
      warned = false;
      if (!alive && !quit_) {
        // The lease ended (etcd unreachable for longer than its TTL): the others have been told
        // this node is lost. A new lease keeps the wills of the rounds still to come working.
        write_stderr(fmt::format(
            "gpurun: warning: this agent's etcd lease expired (not refreshed within {}); the "
            "other agents treat this node as lost\n",
            format_duration(ttl_)));
        try {
          lease_ = store_->grant_lease(ttl_);
          for (const auto& [target, kv] : wills_) {
            store_->set_with_lease(kv.first, to_bytes(kv.second), lease_);
          }
        } catch (const Error&) {
        }
      }
    }
  }

  void watch_loop() {
    for (;;) {
      {
        std::lock_guard lk(mu_);
        if (quit_) return;
      }
      try {
        from_ = store_->watch_deletes(
            wills_prefix_, from_, deadline_after(kWatchSlice),
            [this](const std::string&, const Bytes& value) {
              if (value.empty()) return true;  // a cancelled will
              auto j = json::parse(to_string(value), nullptr, false);
              if (j.is_discarded()) return true;
              store_->compare_set(j.value("target", ""), Bytes{},
                                  to_bytes(j.value("value", std::string())));
              return true;
            },
            &cancel_);
      } catch (const Error&) {
        // etcd unreachable for a while: the main loop reports it; try again shortly.
        std::unique_lock lk(mu_);
        cv_.wait_for(lk, kRetryPause, [this] { return quit_; });
      }
    }
  }

  milliseconds ttl_;
  std::string wills_prefix_;
  std::string mine_;
  std::unique_ptr<rendezvous::EtcdStore> store_;
  std::int64_t lease_ = 0;
  std::int64_t from_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool quit_ = false;
  std::atomic<bool> cancel_{false};  // quit_, readable by the watch without the lock
  std::map<std::string, std::pair<std::string, std::string>> wills_;  // target -> key, value
  int next_will_ = 0;
  std::thread keeper_;
  std::thread watcher_;
};

}  // namespace

std::unique_ptr<RdzvBackend> make_etcd_backend(const RdzvSettings& s, const RdzvNode& me,
                                               const std::string& endpoints) {
  return std::make_unique<EtcdBackend>(s, me, endpoints);
}

}  // namespace gpurun::launcher
