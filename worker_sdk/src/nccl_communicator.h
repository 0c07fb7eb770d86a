// NcclCommunicator (built only with GPURUN_HAS_NCCL): collectives on GPU buffers through NCCL.
// Rank 0 creates the ncclUniqueId and publishes it in the store under "nccl/<group>/uid"; the
// other ranks wait for it with the run timeout. Every collective runs on the communicator's own
// stream and is waited for by polling cudaStreamQuery + ncclCommGetAsyncError against the
// deadline; on timeout the communicator is aborted and CommError names the missing ranks.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "gpurun/rendezvous/store.h"
#include "gpurun/worker/communicator.h"

namespace gpurun::worker::detail {

struct NcclConfig {
  int rank = 0;
  int size = 1;
  int device = 0;                                  // CUDA ordinal
  std::shared_ptr<rendezvous::Store> run_store;    // run/attempt-scoped (uid key lives here)
  std::shared_ptr<rendezvous::Store> group_store;  // group-scoped (arrival keys)
  std::string group = "default";
  std::chrono::milliseconds timeout{30 * 60 * 1000};
  std::chrono::milliseconds progress_after{10'000};  // GPURUN_WAIT_PROGRESS
  // Exchange every collective's descriptor (collective_desc.h) before its data, as the Gloo paths
  // always do: one extra 32-byte-per-rank ncclAllGather and a stream sync per collective, so it is
  // opt-in (GPURUN_COMM_CHECK=1, or TORCH_DISTRIBUTED_DEBUG=DETAIL as for torch's own check).
  bool check_descriptors = false;
};

std::unique_ptr<Communicator> make_nccl_communicator(const NcclConfig& cfg);

}  // namespace gpurun::worker::detail
