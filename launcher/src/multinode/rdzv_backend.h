// Where the elastic rendezvous keeps its state (run_elastic.cc runs the same rounds over either):
//   c10d: a gpurun StoreServer hosted by the agent on the endpoint's address; a dead agent's
//         "last will" fires when its store connection drops (run_elastic.cc).
//   etcd: an etcd cluster (etcd_backend.cc); a dead agent's will fires when its lease ends.
#pragma once

#include <memory>
#include <string>

#include "gpurun/rendezvous/store.h"
#include "multinode/elastic_rdzv.h"

namespace gpurun::launcher {

class RdzvBackend {
 public:
  virtual ~RdzvBackend() = default;
  virtual rendezvous::Store& store() = 0;
  // "When this agent dies, set `target` = `value` unless `target` exists by then."
  virtual void set_will(const std::string& target, const std::string& value) = 0;
  virtual void cancel_will(const std::string& target) = 0;
  // This agent hosts the rendezvous state (c10d's store host): the others lose it when it exits.
  virtual bool hosts_store() const = 0;
  // The agent is leaving: how long the store must outlive the others (c10d's store host waits
  // for their byes unless !wait_for_others, e.g. after the exit barrier timed out; etcd outlives
  // every agent). `rdzv` is the agent's state machine.
  virtual void leave(ElasticRendezvous& rdzv, bool wait_for_others) = 0;
};

// Connects to the etcd cluster of --rdzv-endpoint (HOST:2379[,HOST:2379...]), grants this agent's
// lease and starts its keep-alive and the will watcher. Throws NetworkError naming every endpoint.
std::unique_ptr<RdzvBackend> make_etcd_backend(const RdzvSettings& s, const RdzvNode& me,
                                               const std::string& endpoints);

}  // namespace gpurun::launcher
