#include "gloo_setup.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gloo/allreduce.h>
#include <gloo/transport/tcp/device.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "gloo_store_adapter.h"
#include "gpurun/common/duration.h"
#include "gpurun/common/error.h"
#include "gpurun/common/log.h"
#include "gpurun/common/net.h"
#include "gpurun/rendezvous/prefix_store.h"
#include "reduce_kernels.h"

namespace gpurun::worker::detail {

TransportAddress choose_transport_address(const EnvMap& env, const std::string& master_addr,
                                          std::uint16_t master_port) {
  for (const char* var : {"GPURUN_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"}) {
    if (auto v = env_get(env, var); v && !v->empty()) {
      auto first = split(*v, ',').front();
      return {"", first, fmt::format("{}={}", var, *v)};
    }
  }
  if (is_loopback_name(master_addr)) {
    return {"127.0.0.1", "",
            master_addr.empty() ? "no MASTER_ADDR: loopback"
                                : fmt::format("MASTER_ADDR={} is loopback", master_addr)};
  }
  std::string why;
  if (auto local = source_address_for(master_addr, &why, master_port == 0 ? 29500 : master_port)) {
    return {*local, "",
            fmt::format("the local address that routes to MASTER_ADDR={}", master_addr)};
  }
  std::array<char, 256> host{};
  ::gethostname(host.data(), host.size() - 1);
  return {host.data(), "", "hostname (no route to MASTER_ADDR found)"};
}

GlooConnection connect_gloo(const GlooConfig& cfg) {
  ::gloo::transport::tcp::attr attr;
  if (!cfg.address.iface.empty()) {
    // Checked here rather than left to Gloo: its error path for an unknown interface leaks the
    // getifaddrs list, and our message can list the interfaces that do exist.
    std::vector<std::string> names;  // the interfaces with an IPv4 or IPv6 address
    for (const auto& i : list_interfaces()) {
      if (!i.addresses.empty()) names.push_back(i.name);
    }
    if (std::find(names.begin(), names.end(), cfg.address.iface) == names.end()) {
      throw CommError(fmt::format(
          "cannot open the Gloo TCP transport on interface {} ({}; no such interface with an IP "
          "address; this host has: {}); set GPURUN_SOCKET_IFNAME to one of them (see `ip -brief "
          "addr`)",
          cfg.address.iface, cfg.address.how, fmt::join(names, ", ")));
    }
    attr.iface = cfg.address.iface;
  } else {
    attr.hostname = cfg.address.hostname;
  }
  std::shared_ptr<::gloo::transport::Device> dev;
  std::shared_ptr<LoopKicker> kicker;
  try {
    auto shared = shared_device(attr);
    dev = shared.device;
    kicker = shared.kicker;
  } catch (const std::exception& e) {
    throw CommError(fmt::format(
        "cannot open the Gloo TCP transport on {} ({}; {}); set GPURUN_SOCKET_IFNAME to an "
        "interface that reaches the other hosts (see `ip -brief addr`)",
        cfg.address.iface.empty() ? cfg.address.hostname : "interface " + cfg.address.iface,
        cfg.address.how, e.what()));
  }
  const auto timeout = std::min(cfg.timeout, kGlooMaxTimeout);
  auto ctx = std::make_shared<::gloo::rendezvous::Context>(cfg.rank, cfg.size);
  ctx->setTimeout(timeout);
  auto mesh_store = std::make_shared<rendezvous::PrefixStore>("gloo", cfg.store);
  GlooStoreAdapter adapter(mesh_store, timeout);
  try {
    const LoopKicker::Kick kick(kicker.get());
    ctx->connectFullMesh(adapter, dev);
  } catch (const std::exception& e) {
    // Which ranks never published their address?
    std::vector<int> missing;
    try {
      for (int r = 0; r < cfg.size; ++r) {
        if (!mesh_store->check({std::to_string(r)})) missing.push_back(r);
      }
    } catch (const std::exception&) {
    }
    std::string who = missing.empty()
                          ? std::string("every rank published its address")
                          : fmt::format("rank{} {} never joined", missing.size() == 1 ? "" : "s",
                                        fmt::join(missing, ","));
    throw CommError(fmt::format(
        "gloo setup on rank {}/{} failed (timeout {}; {}; {}); check the named ranks' logs, or "
        "GPURUN_SOCKET_IFNAME if the hosts cannot reach each other",
        cfg.rank, cfg.size, format_duration(timeout), e.what(), who));
  }
  GPURUN_LOG_INFO("comm", "gloo connected: rank {}/{} on {} ({})", cfg.rank, cfg.size,
                  cfg.address.iface.empty() ? cfg.address.hostname : cfg.address.iface,
                  cfg.address.how);
  std::unique_ptr<ShmCollectives> shm;
  if (cfg.size > 1) {
    // Same-host ranks run all_reduce, all_gather, broadcast, barrier through shared memory
    // and gather (reduce_scatter stays on Gloo's pairs). Every rank takes part in the setup
    // (even with GPURUN_SHM=0: it votes no), and a 1-int Gloo all_reduce makes the vote unanimous.
    auto agree = [&](int ok) {
      std::int32_t v = ok;
      ::gloo::AllreduceOptions o(ctx);
      o.setOutput(&v, 1);
      o.setReduceFunction(min_kernel<std::int32_t>());
      o.setTag(0);  // collectives use tags from 1
      o.setTimeout(timeout);
      ::gloo::allreduce(o);
      return v;
    };
    std::string why;
    try {
      auto shm_store = std::make_shared<rendezvous::PrefixStore>("shm", cfg.store);
      shm = ShmCollectives::create(cfg.rank, cfg.size, *shm_store, cfg.shm, agree, &why);
    } catch (const std::exception& e) {
      throw CommError(fmt::format(
          "gloo setup on rank {}/{} failed while agreeing on shared memory (timeout {}; {}); "
          "check the other ranks' logs",
          cfg.rank, cfg.size, format_duration(timeout), e.what()));
    }
    if (shm) {
      GPURUN_LOG_INFO("comm",
                      "collectives through shared memory ({} ranks on this host, {} KiB "
                      "slots)",
                      cfg.size, shm->slot_bytes() >> 10);
    } else {
      GPURUN_LOG_INFO("comm", "collectives over TCP (shared memory not used: {})", why);
    }
  }
  return {std::move(ctx), std::move(shm), std::move(kicker)};
}

}  // namespace gpurun::worker::detail
