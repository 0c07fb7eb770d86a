// Static multi-node (--nnodes N --node-rank k --master-addr/--master-port), torchrun §3.1/§3.4:
// node 0 hosts the store; every agent writes torchelastic/role_info/<k> = {role, rank,
// local_world_size} under the run-id prefix; node 0 reads them all and writes
// torchelastic/assigned_ranks/<k> = [base_global_rank, world_size, base_role_rank,
// role_world_size] (prefix sums, so nproc may differ per node); each agent waits for its own.
// Then every node runs its workers against node 0's store (MASTER_ADDR/PORT = node 0's), and an
// exit barrier keeps node 0 (the store) alive until every node is done. Restarts stay per node,
// as torchrun's static backend.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/config.h"
#include "gpurun/common/duration.h"
#include "gpurun/common/error.h"
#include "gpurun/common/log.h"
#include "gpurun/common/net.h"
#include "gpurun/rendezvous/bind_error.h"
#include "gpurun/rendezvous/job_access.h"
#include "gpurun/rendezvous/prefix_store.h"
#include "gpurun/rendezvous/store_server.h"
#include "gpurun/rendezvous/tcp_store.h"
#include "run/run_internal.h"
#include "run/worker_env.h"

namespace gpurun::launcher {

namespace {

using rendezvous::to_bytes;
using rendezvous::to_string;

constexpr std::string_view kLost = "lost";  // an exit-barrier key written by a node's will

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

// Waits for `keys`; on timeout names the nodes whose key never came.
void wait_for_nodes(rendezvous::Store& store, const std::vector<std::string>& keys,
                    milliseconds timeout, const std::string& what, const std::string& endpoint) {
  try {
    store.wait(keys, timeout);
  } catch (const StoreTimeout&) {
    std::vector<int> missing;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (!store.check({keys[i]})) missing.push_back(static_cast<int>(i));
    }
    throw StoreTimeout(fmt::format(
        "timed out after {} waiting for {} from node rank{} {} on the store at {}; start gpurun "
        "on every node with the same --nnodes/--master-addr/--master-port, or raise "
        "--rdzv-timeout{}",
        format_duration(timeout), what, missing.size() == 1 ? "" : "s", format_rank_list(missing),
        endpoint,
        is_loopback(endpoint.substr(0, endpoint.rfind(':')))
            ? " (the store is on a loopback address: only nodes on this host can reach it)"
            : ""));
  }
}

}  // namespace

int run_multinode(const LaunchConfig& cfg, const EnvMap& env, const NodeTools& tools) {
  const int nnodes = cfg.nnodes_max;
  const int node_rank = cfg.node_rank;
  const std::uint16_t port = cfg.master_port.value_or(0);  // resolve_config: 29500 when unset
  if (port == 0) {
    throw ConfigError(
        "--master-port 0 cannot work with --nnodes > 1 (the other nodes must know "
        "the port); pass the same fixed --master-port to every node");
  }
  const std::string endpoint = fmt::format("{}:{}", cfg.master_addr, port);

  // Node 0 hosts the store (bound first; a busy port is explained as for a single node).
  std::unique_ptr<rendezvous::StoreServerThread> server;
  if (node_rank == 0) {
    rendezvous::StoreServerOptions so;
    rendezvous::apply_store_env(so, env);
    // Binding follows the endpoint: --master-addr itself when it is an address of this host,
    // else every interface of its family ("::" takes IPv4 too); loopback only when it is.
    so.host = bind_address_for(cfg.master_addr);
    // Other hosts: --rdzv-allow, else the Slurm job's nodes, else any (job_access.h).
    const std::string allowed = rendezvous::apply_job_allow(so, env, cfg.rdzv_allow);
    if (!allowed.empty()) GPURUN_LOG_INFO("launch", "store on {}: {}", so.host, allowed);
    if (is_loopback(cfg.master_addr)) {
      std::fprintf(stderr,
                   "gpurun: warning: --master-addr %s is a loopback address: only nodes on this "
                   "host can reach the store; pass an address of node 0 the other nodes can "
                   "reach\n",
                   cfg.master_addr.c_str());
    }
    so.port = port;
    try {
      server = std::make_unique<rendezvous::StoreServerThread>(so);
    } catch (const BindError& e) {
      return rendezvous::report_bind_failure(
          e, {.other = "node 0 hosts the store: pick a free --master-port for every node"},
          e.code() == std::errc::address_in_use ? describe_port_holder(port) : "");
    }
  }

  rendezvous::TcpStoreOptions to;
  to.host = cfg.master_addr;
  to.port = port;
  to.timeout = cfg.rdzv_timeout;
  to.connect_timeout = cfg.rdzv_timeout;
  to.timeout_setting = "--rdzv-timeout";
  to.connect_hint =
      fmt::format("is node 0's gpurun running and reachable at --master-addr {} --master-port {}?",
                  cfg.master_addr, port);
  auto tcp = std::make_shared<rendezvous::TcpStore>(to);
  rendezvous::PrefixStore store(cfg.rdzv_id, tcp);
  // This node's last will: if its agent dies (kill -9) before the exit barrier, the store marks
  // its barrier key "lost" at once, so node 0's barrier ends instead of waiting --rdzv-timeout.
  rendezvous::TcpStore will(to);
  will.set(fmt::format("{}{}/torchelastic/exit_barrier/{}", rendezvous::kWillKeyPrefix, cfg.rdzv_id,
                       node_rank),
           to_bytes(std::string(kLost)));

  // nproc of this node (GPUs resolved locally, as torchrun).
  const int nproc = resolve_nproc(cfg, tools.gpus, cpu_count());  // GPUs probed once, by run()

  nlohmann::json info = {{"role", cfg.role}, {"rank", node_rank}, {"local_world_size", nproc}};
  store.set(fmt::format("torchelastic/role_info/{}", node_rank), to_bytes(info.dump()));

  if (node_rank == 0) {
    std::vector<std::string> keys;
    for (int g = 0; g < nnodes; ++g) keys.push_back(fmt::format("torchelastic/role_info/{}", g));
    wait_for_nodes(store, keys, cfg.rdzv_timeout, "role_info", endpoint);
    std::vector<int> lws;
    for (auto& v : store.multi_get(keys)) {
      lws.push_back(nlohmann::json::parse(to_string(v)).at("local_world_size").get<int>());
    }
    int world = 0;
    for (int l : lws) world += l;
    int base = 0;
    for (int g = 0; g < nnodes; ++g) {
      nlohmann::json assigned = {base, world, base, world};
      store.set(fmt::format("torchelastic/assigned_ranks/{}", g), to_bytes(assigned.dump()));
      base += lws[static_cast<std::size_t>(g)];
    }
  }
  const std::string mine = fmt::format("torchelastic/assigned_ranks/{}", node_rank);
  wait_for_nodes(store, {mine}, cfg.rdzv_timeout, "the rank assignment (node 0 writes it)",
                 endpoint);
  const auto assigned = nlohmann::json::parse(to_string(store.get(mine)));

  NodeFacts node;
  node.group_rank = node_rank;
  node.group_world_size = nnodes;
  node.base_global_rank = assigned.at(0).get<int>();
  node.world_size = assigned.at(1).get<int>();
  node.external_store = true;
  node.master_addr = cfg.master_addr;
  node.master_port = port;
  const int code = run_node(cfg, env, node, tools);

  // Exit barrier: node 0 keeps the store up until every node has finished (or the timeout).
  try {
    store.set(fmt::format("torchelastic/exit_barrier/{}", node_rank), to_bytes("1"));
    if (node_rank == 0) {
      std::vector<std::string> keys;
      for (int g = 0; g < nnodes; ++g)
        keys.push_back(fmt::format("torchelastic/exit_barrier/{}", g));
      wait_for_nodes(store, keys, cfg.rdzv_timeout, "the exit barrier", endpoint);
      std::vector<int> lost;
      const auto values = store.multi_get(keys);
      for (int g = 0; g < nnodes; ++g) {
        if (to_string(values[static_cast<std::size_t>(g)]) == kLost) lost.push_back(g);
      }
      if (!lost.empty()) {
        std::fprintf(stderr,
                     "gpurun: error: node rank%s %s exited without reaching the exit barrier "
                     "(its agent's connection to the store dropped: killed or crashed); the job "
                     "did not finish there\n",
                     lost.size() == 1 ? "" : "s", format_rank_list(lost).c_str());
        if (code == 0) return static_cast<int>(ExitCode::kRendezvousFailed);
      }
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "gpurun: warning: %s; stopping the store anyway\n", e.what());
  }
  return code;
}

}  // namespace gpurun::launcher
