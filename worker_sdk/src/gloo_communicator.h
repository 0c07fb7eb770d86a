// GlooCommunicator: collectives for CPU ranks (and GPU ranks of a hybrid job, staged through host
// memory by DeviceMemory), rendezvous through our Store. A dispatcher: per collective it checks
// the descriptor on every rank (collective_desc.h) and picks the algorithm: shared memory when
// every rank is on this host (shm_collectives.h), else Gloo's ring allreduce, broadcast,
// allgather and barrier (what torch.distributed's gloo backend uses) or ours over Gloo's pairs
// (gloo_algorithms.h: one-round all_reduce, point-to-point gather). The Gloo device is shared per
// address (gloo_device.h); which address comes from choose_transport_address.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "device.h"
#include "gpurun/common/env.h"
#include "gpurun/rendezvous/store.h"
#include "gpurun/worker/communicator.h"

namespace gpurun::worker::detail {

// Where the Gloo TCP transport listens. Exactly one of hostname / iface is set.
struct TransportAddress {
  std::string hostname;  // an address or name to bind (e.g. "127.0.0.1")
  std::string iface;     // a network interface name (e.g. "eth0")
  std::string how;       // for logs: "GPURUN_SOCKET_IFNAME=eth0", "route to 10.0.0.1"
};

// GPURUN_SOCKET_IFNAME, else GLOO_SOCKET_IFNAME (first of a comma list), else the local address
// the kernel uses to reach master_addr (127.0.0.1 for loopback or no master), else the hostname.
TransportAddress choose_transport_address(const EnvMap& env, const std::string& master_addr,
                                          std::uint16_t master_port);

// Up to this many bytes sent per rank, all_reduce exchanges whole buffers in one round instead of
// Gloo's ring: one message to each peer and one from each, against the ring's 2 x (N - 1)
// dependent steps, each a wake-up of Gloo's transport thread and of the caller. At 2 ranks the
// bytes sent are the same as the ring's. Measured at 2 ranks on loopback (allreduce_bench): 2-5x
// lower latency up to 256 KiB, the ring faster from 1 MiB (its pipelining overlaps the sums).
// GPURUN_GLOO_DIRECT_MAX_BYTES overrides it (0: always the ring).
inline constexpr std::size_t kGlooDirectMaxBytes = std::size_t{512} << 10;

struct GlooConfig {
  int rank = 0;
  int size = 1;
  std::shared_ptr<rendezvous::Store> store;  // already scoped to this group
  TransportAddress address{"127.0.0.1", "", "default"};
  std::chrono::milliseconds timeout{30 * 60 * 1000};
  std::chrono::milliseconds progress_after{10'000};  // GPURUN_WAIT_PROGRESS; 0: no progress lines
  std::unique_ptr<DeviceMemory> memory;              // null: host memory
  std::size_t direct_max_bytes = kGlooDirectMaxBytes;
  // all_reduce through shared memory when every rank is on this host (GPURUN_SHM=0 turns it off;
  // the ranks agree, so one rank that cannot map the segment turns it off for all).
  bool shm = true;
  // Over TCP, the descriptor round before each collective (GPURUN_COMM_CHECK=0 turns it off: one
  // round trip less per collective, and a mismatch there goes unnoticed, as in torch).
  bool check_tcp = true;
};

// Connects the full mesh (blocks up to cfg.timeout; CommError names the ranks that did not join).
std::unique_ptr<Communicator> make_gloo_communicator(GlooConfig cfg);

}  // namespace gpurun::worker::detail
