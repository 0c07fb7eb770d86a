// Internals of init()/init_with() that tests reach directly.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gpurun/common/env.h"
#include "gpurun/rendezvous/store.h"
#include "gpurun/worker/worker.h"

namespace gpurun::worker::detail {

// What one rank reports for the backend vote.
enum class GpuVote { kCpu, kCuda, kFakeCuda };

// The group's backend from every rank's vote. Pure. `requested_by` names where a non-auto request
// came from ("GPURUN_BACKEND=nccl"). Throws ConfigError with the fix when NCCL is requested but
// impossible.
Backend decide_backend(Backend requested, const std::string& requested_by,
                       const std::vector<GpuVote>& votes, bool nccl_compiled);

// "nccl" | "gloo" | "auto" (any case) -> Backend; ConfigError otherwise.
Backend parse_backend(const std::string& text, const std::string& what);

// The timeout of blocking calls: options.timeout, else GPURUN_COMM_TIMEOUT, else GPURUN_TIMEOUT
// (the launcher's whole-run limit), else kDefaultTimeout. A value of 0 means no limit.
std::chrono::milliseconds resolve_timeout(const InitOptions& options, const EnvMap& env);

// Whether NCCL collectives check their descriptors (GPURUN_COMM_CHECK, else
// TORCH_DISTRIBUTED_DEBUG=DETAIL); Gloo collectives always do.
bool nccl_check_descriptors(const EnvMap& env);

// Connects a TcpStore to MASTER_ADDR:MASTER_PORT (defined in init_env.cc), printing progress
// lines while it cannot (see gpurun/common/progress.h).
std::shared_ptr<rendezvous::Store> connect_store(const LaunchInfo& info,
                                                 std::chrono::milliseconds timeout,
                                                 std::chrono::milliseconds progress_after);

}  // namespace gpurun::worker::detail
