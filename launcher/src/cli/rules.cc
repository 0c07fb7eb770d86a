// The rules between gpurun's options, applied once every flag and PET_/GPURUN_ variable is read:
// Slurm inference (slurm_infer.h), conflicts, validation, --standalone, the store address, and
// the defaults read from other variables (TORCH_ELASTIC_SHUTDOWN_TIMEOUT, NO_COLOR, PYTHON_EXEC).
#include "cli/rules.h"

#include <fmt/format.h>

#include <csignal>
#include <cstdint>
#include <random>

#include "cli/option_values.h"
#include "cli/slurm_infer.h"
#include "gpurun/common/duration.h"
#include "gpurun/common/env.h"
#include "gpurun/common/error.h"

namespace gpurun::launcher {

namespace {

std::string make_uuid4() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<std::uint64_t>(rd()) << 32) ^ rd());
  std::uint64_t hi = gen(), lo = gen();
  hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
  return fmt::format("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", hi >> 32, (hi >> 16) & 0xffff,
                     hi & 0xffff, lo >> 48, lo & 0xffffffffffffULL);
}

// Conflicts between options, validation that needs several of them, --standalone, the store
// address from --rdzv-endpoint, and the defaults that come from other environment variables.
void finish(ParseState& st, const EnvMap& env) {
  LaunchConfig& c = st.cfg;
  if (c.module && c.no_python) {
    throw ConfigError(
        "-m/--module and --no-python cannot be used together (one runs PROGRAM as a Python "
        "module, the other runs it directly); drop one of them");
  }
  if (c.run_path && (c.module || c.no_python)) {
    c.notes.push_back("--run-path takes precedence over -m/--module and --no-python");
    c.module = false;
    c.no_python = false;
  }
  if (c.node_rank >= c.nnodes_max) {
    throw ConfigError(fmt::format(
        "--node-rank {} is out of range for --nnodes {} (node ranks are 0..{}); fix --node-rank "
        "or --nnodes",
        c.node_rank, c.nnodes_max, c.nnodes_max - 1));
  }
  if (c.standalone) {
    if (st.given.count("--rdzv-backend") || st.given.count("--rdzv-endpoint") ||
        st.given.count("--rdzv-id")) {
      c.notes.push_back(
          "--standalone ignores --rdzv-backend, --rdzv-endpoint and --rdzv-id (as torchrun)");
    }
    if (c.nnodes_max > 1) {
      throw ConfigError(fmt::format(
          "--standalone is single-node but --nnodes is {}; drop --standalone or use --nnodes 1",
          c.nnodes_max));
    }
    c.rdzv_backend = "c10d";
    c.rdzv_endpoint = "localhost:0";
    c.rdzv_id = make_uuid4();
  }
  if (c.rdzv_backend == "static" && !c.rdzv_endpoint.empty()) {
    // torchrun: with static, a non-empty endpoint replaces master_addr:master_port.
    auto [host, port] = split_endpoint(c.rdzv_endpoint, "--rdzv-endpoint");
    if (port < 0) {
      throw ConfigError(fmt::format(
          "port is absent in --rdzv-endpoint '{}' (the static backend needs HOST:PORT); add a "
          "port or use --master-addr/--master-port",
          c.rdzv_endpoint));
    }
    if (!host.empty()) c.master_addr = host;
    c.master_port = port;
  } else if (c.rdzv_backend == "c10d" && !c.rdzv_endpoint.empty()) {
    auto [host, port] = split_endpoint(c.rdzv_endpoint, "--rdzv-endpoint");
    // One node hosts the rendezvous store on the endpoint's port (torchrun shares it with the
    // workers: MASTER_PORT); --standalone's "localhost:0" is a free port.
    if (c.nnodes_max == 1 && port >= 0 && !st.given.count("--master-port")) c.master_port = port;
  }
  if (c.local_addr) {
    if (c.rdzv_backend == "c10d" && c.nnodes_max == 1) {
      // torchrun: the address this node advertises, MASTER_ADDR when it hosts the store (the
      // store is bound there). Multi-node c10d: see run_multinode.cc.
      c.master_addr = *c.local_addr;
    } else if (c.rdzv_backend == "static") {
      c.notes.push_back(
          "--local-addr is used with --rdzv-backend c10d or --standalone (as torchrun); the "
          "static backend's store address is --master-addr");
    }
  }
  if (c.nnodes_max > 1) {
    if (c.rdzv_backend == "static" && !c.master_port) {
      c.master_port = 29500;  // every node must agree on the port: torchrun's default
    }
    if (c.rdzv_backend == "etcd" && c.rdzv_endpoint.empty()) {
      throw ConfigError(fmt::format(
          "--nnodes {} with --rdzv-backend etcd needs --rdzv-endpoint HOST:2379[,HOST:2379...] "
          "(the etcd cluster's client addresses)",
          c.nnodes_max));
    }
    if (c.rdzv_backend == "c10d" && c.rdzv_endpoint.empty()) {
      throw ConfigError(fmt::format(
          "--nnodes {} with --rdzv-backend c10d needs --rdzv-endpoint HOST[:PORT] (the nodes "
          "would otherwise each wait on their own localhost); pass the address of one node",
          c.nnodes_max));
    }
    if (c.nnodes_min != c.nnodes_max && c.rdzv_backend == "static") {
      throw ConfigError(fmt::format(
          "--nnodes {}:{} needs an elastic rendezvous but --rdzv-backend is static; use "
          "--nnodes {} or --rdzv-backend c10d",
          c.nnodes_min, c.nnodes_max, c.nnodes_max));
    }
  }
  if (c.standalone) c.master_port.reset();  // the store gets a free port

  // rdzv_conf timeout keys feed --rdzv-timeout when it was not given (seconds, as torchrun).
  if (!st.given.count("--rdzv-timeout")) {
    for (const char* key : {"join_timeout", "timeout"}) {
      auto it = c.rdzv_conf.find(key);
      if (it != c.rdzv_conf.end()) {
        c.rdzv_timeout = parse_duration(it->second, fmt::format("--rdzv-conf {}", key));
        break;
      }
    }
  }
  if (!st.given.count("--shutdown-timeout")) {
    if (auto v = env_get(env, "TORCH_ELASTIC_SHUTDOWN_TIMEOUT")) {
      c.shutdown_timeout = c.failure_shutdown_timeout =
          parse_duration(*v, "environment variable TORCH_ELASTIC_SHUTDOWN_TIMEOUT");
    }
  }
  if (c.signals_to_handle.empty()) c.signals_to_handle = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};
  if (!st.color_given) {
    auto nc = env_get(env, "NO_COLOR");
    if (nc && !nc->empty()) c.color = ColorMode::kNever;
  }
  if (auto p = env_get(env, "PYTHON_EXEC"); p && !p->empty()) {
    c.python = *p;
  } else if (auto q = env_get(env, "PYTHON"); q && !q->empty()) {
    c.python = *q;
  }
  if (c.virtual_local_rank && c.narrow_visible_devices) {
    // Both narrow CUDA_VISIBLE_DEVICES; --virtual-local-rank also sets LOCAL_RANK=0.
    c.notes.push_back("--virtual-local-rank already narrows CUDA_VISIBLE_DEVICES per worker");
  }
}

}  // namespace

void apply_rules(ParseState& st, const EnvMap& env) {
  apply_slurm(st.cfg, st.given, env);  // srun gpurun: nodes, node rank, rendezvous from Slurm
  finish(st, env);
}

}  // namespace gpurun::launcher
