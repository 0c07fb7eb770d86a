// The worker SDK entry point. A program launched by gpurun (or torchrun, mpirun, srun, or
// nothing at all = a 1-rank job) calls gpurun::init() and gets its rank, its device, a store
// namespaced to this run and attempt, and a communicator that works on GPUs and CPUs:
//
//   auto ctx = gpurun::init();
//   ctx->comm().all_reduce(grads, gpurun::worker::ReduceOp::kAvg);
//   if (ctx->is_root()) fmt::print("done\n");
//
// This one header is all a program needs: it also brings the store (ctx->store()), the error
// types (gpurun::ConfigError, gpurun::CommError, ...), log0/print_root/ProgressBar/run_main
// (console.h) and DistributedSampler (sampler.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "gpurun/common/env.h"
#include "gpurun/common/error.h"
#include "gpurun/rendezvous/store.h"
#include "gpurun/worker/communicator.h"
#include "gpurun/worker/sampler.h"

namespace gpurun::worker {

// Default for every blocking SDK call, like torch.distributed's 30 min; GPURUN_COMM_TIMEOUT (else
// GPURUN_TIMEOUT, gpurun's whole-run limit) overrides.
inline constexpr std::chrono::milliseconds kDefaultTimeout{30 * 60 * 1000};

enum class DeviceKind { kCpu, kCuda };

struct Device {
  DeviceKind kind = DeviceKind::kCpu;
  int index = -1;  // CUDA ordinal (in this process's CUDA_VISIBLE_DEVICES numbering); -1 on CPU
  bool is_cuda() const { return kind == DeviceKind::kCuda; }
  std::string str() const;  // "cpu" or "cuda:N"
};

// Where the rank/world facts came from.
enum class Launcher { kGpurun, kTorchrun, kMpirun, kSrun, kNone };
std::string to_string(Launcher l);

// Everything read from the environment. Pure data; see read_launch_info.
struct LaunchInfo {
  int rank = 0;
  int local_rank = 0;
  int world_size = 1;
  int local_world_size = 1;
  int restart_count = 0;
  std::string master_addr;  // empty for a 1-rank job with no store
  std::uint16_t master_port = 0;
  std::string run_id;  // TORCHELASTIC_RUN_ID / SLURM_JOB_ID / ... or "local"
  std::string hostname;
  Launcher launcher = Launcher::kNone;
  // Under srun/mpirun without MASTER_ADDR: rank 0 hosts the store itself at master_addr:
  // master_port (srun: the step's first node and a port derived from the job and step ids;
  // mpirun on one host: 127.0.0.1 and a port derived from the job id), the others connect there.
  bool self_hosted_store = false;
  std::string master_origin;  // where master_addr/port came from, for messages
};

// Reads RANK/LOCAL_RANK/WORLD_SIZE/LOCAL_WORLD_SIZE/MASTER_ADDR/MASTER_PORT/
// TORCHELASTIC_RESTART_COUNT; falls back to OMPI_COMM_WORLD_* then SLURM_* when RANK is absent,
// and to a 1-rank job when nothing is set. Under srun (and mpirun on one host) without
// MASTER_ADDR, rank 0 hosts the store (see LaunchInfo::self_hosted_store). Throws ConfigError
// naming the variable and how to launch correctly when values are missing or inconsistent (e.g.
// RANK >= WORLD_SIZE).
LaunchInfo read_launch_info(const EnvMap& env);

struct InitOptions {
  Backend backend = Backend::kAuto;  // GPURUN_BACKEND=nccl|gloo|auto overrides kAuto
  bool use_gpu = true;               // false: always CPU, even where a GPU is visible
  std::optional<std::chrono::milliseconds>
      timeout;  // default: GPURUN_COMM_TIMEOUT or kDefaultTimeout
  std::string group_name = "default";
};

class Context {
 public:
  virtual ~Context() = default;

  int rank() const { return info().rank; }
  int local_rank() const { return info().local_rank; }
  int world_size() const { return info().world_size; }
  int local_world_size() const { return info().local_world_size; }
  bool is_root() const { return rank() == 0; }

  virtual const LaunchInfo& info() const = 0;
  virtual const Device& device() const = 0;
  virtual Backend backend() const = 0;  // the backend chosen for the whole group (never kAuto)
  virtual std::chrono::milliseconds timeout() const = 0;
  // Store namespaced per run and attempt ("gpurun/<run_id>/attempt_<n>/..."), so a restarted
  // group never sees the previous attempt's keys.
  virtual rendezvous::Store& store() = 0;
  virtual Communicator& comm() = 0;
};

// Reads the environment, connects to the store (MASTER_ADDR:MASTER_PORT; rank 0 first starts
// it when the job hosts its own, see LaunchInfo::self_hosted_store), picks the device,
// agrees on one backend for the whole group through the store and builds the communicator.
// A 1-rank job with no MASTER_ADDR needs no server. Throws ConfigError / StoreTimeout / CommError.
std::unique_ptr<Context> init(InitOptions options = {});

// Same, from an explicit environment and store (tests; hybrid mode with a fake GPU count).
std::unique_ptr<Context> init_with(const EnvMap& env, std::shared_ptr<rendezvous::Store> store,
                                   InitOptions options = {});

}  // namespace gpurun::worker

namespace gpurun {
using worker::init;
}

// After Context: console.h's helpers take one (it includes this header itself; #pragma once
// makes either order work).
#include "gpurun/worker/console.h"  // IWYU pragma: export
