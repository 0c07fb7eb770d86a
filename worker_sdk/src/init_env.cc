// init(): the real environment and a TcpStore client to MASTER_ADDR:MASTER_PORT.
#include <fmt/format.h>

#include "gpurun/common/error.h"
#include "gpurun/common/log.h"
#include "gpurun/rendezvous/tcp_store.h"
#include "init.h"

namespace gpurun::worker {
namespace detail {

std::shared_ptr<rendezvous::Store> connect_store(const LaunchInfo& info,
                                                 std::chrono::milliseconds timeout,
                                                 std::chrono::milliseconds progress_after) {
  rendezvous::TcpStoreOptions o;
  o.host = info.master_addr;
  o.port = info.master_port;
  o.timeout = timeout;
  o.connect_timeout = timeout;
  o.timeout_setting = "GPURUN_COMM_TIMEOUT";
  o.progress_after = progress_after;
  o.connect_hint = fmt::format(
      "check MASTER_ADDR={} and MASTER_PORT={} (set by {}): the store runs where the launcher "
      "started it (gpurun hosts one itself; under mpirun/srun start `gpurun store` first)",
      info.master_addr, info.master_port, to_string(info.launcher));
  o.dialect = rendezvous::Dialect::kV2;
  if (info.launcher == Launcher::kTorchrun) {
    // The store is PyTorch's, of whatever version torchrun is (1.13 drops a 2.x handshake):
    // find out at connect. And it does not know gpurun's job-secret challenge: never offer one,
    // even if GPURUN_JOB_SECRET is set (for gpurun jobs beside it).
    o.dialect = rendezvous::Dialect::kAuto;
    o.job_secret = "";
  }
  // srun/mpirun with nothing set: rank 0 starts the store at the same moment as this rank, so
  // retry often (every 50 ms at most) instead of backing off to a second: measured ~300 ms
  // of the zero-setup start-up on two nodes (bench/rdzv/srun_bench.py).
  if (info.self_hosted_store) o.connect_backoff_max = std::chrono::milliseconds(50);
  GPURUN_LOG_INFO("init", "connecting to store {}:{} (timeout {})", o.host, o.port,
                  format_duration(timeout));
  return std::make_shared<rendezvous::TcpStore>(o);
}

}  // namespace detail

std::unique_ptr<Context> init(InitOptions options) {
  return init_with(current_environment(), nullptr, std::move(options));
}

}  // namespace gpurun::worker
