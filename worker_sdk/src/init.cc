// init_with(): environment -> LaunchInfo -> run/attempt-scoped store -> device -> one backend
// for the whole group (decided by rank 0 from every rank's vote, through the store) ->
// communicator.
#include "init.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <signal.h>

#include <algorithm>
#include <cctype>

#include "cuda_module.h"
#include "device.h"
#include "gloo_communicator.h"
#include "gpurun/common/error.h"
#include "gpurun/common/log.h"
#include "gpurun/common/net.h"
#include "gpurun/common/progress.h"
#include "gpurun/rendezvous/job_access.h"
#include "gpurun/rendezvous/memory_store.h"
#include "gpurun/rendezvous/prefix_store.h"
#include "gpurun/rendezvous/store_server.h"

namespace gpurun::worker {
namespace detail {

Backend parse_backend(const std::string& text, const std::string& what) {
  std::string t = text;
  std::transform(t.begin(), t.end(), t.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (t == "nccl") return Backend::kNccl;
  if (t == "gloo") return Backend::kGloo;
  if (t == "auto" || t.empty()) return Backend::kAuto;
  throw ConfigError(fmt::format("{}='{}' is not a backend; use nccl, gloo or auto", what, text));
}

bool nccl_check_descriptors(const EnvMap& env) {
  if (auto v = env_bool(env, "GPURUN_COMM_CHECK")) return *v;
  auto debug = env_get(env, "TORCH_DISTRIBUTED_DEBUG");
  return debug && (*debug == "DETAIL" || *debug == "detail");
}

std::chrono::milliseconds resolve_timeout(const InitOptions& options, const EnvMap& env) {
  if (options.timeout) return *options.timeout;
  // GPURUN_COMM_TIMEOUT is ours. GPURUN_TIMEOUT is the launcher's whole-run --timeout (workers
  // inherit it); no collective should outlive the run, so it bounds ours when set alone.
  // 0 means no limit (as torch's timeout=timedelta.max), never an instant failure.
  auto none_if_zero = [](std::chrono::milliseconds t) { return t.count() == 0 ? kNoTimeout : t; };
  if (auto t = env_duration(env, "GPURUN_COMM_TIMEOUT")) return none_if_zero(*t);
  if (auto t = env_duration(env, "GPURUN_TIMEOUT")) return none_if_zero(*t);
  return kDefaultTimeout;
}

Backend decide_backend(Backend requested, const std::string& requested_by,
                       const std::vector<GpuVote>& votes, bool nccl_compiled) {
  std::vector<int> cpu, fake;
  for (std::size_t r = 0; r < votes.size(); ++r) {
    if (votes[r] == GpuVote::kCpu) cpu.push_back(static_cast<int>(r));
    if (votes[r] == GpuVote::kFakeCuda) fake.push_back(static_cast<int>(r));
  }
  const bool all_gpu = cpu.empty() && fake.empty();
  if (requested == Backend::kGloo) return Backend::kGloo;
  if (requested == Backend::kNccl) {
    if (!nccl_compiled) {
      throw ConfigError(fmt::format(
          "{} but the worker SDK was built without NCCL (no CUDA toolkit/NCCL at build time); "
          "use GPURUN_BACKEND=gloo or auto, or rebuild with -DGPURUN_WITH_CUDA=ON",
          requested_by));
    }
    if (!cpu.empty()) {
      throw ConfigError(fmt::format(
          "{} but rank{} {} ha{} no GPU (NCCL needs one GPU per rank); use GPURUN_BACKEND=auto "
          "(Gloo for all ranks, GPU ranks staged through host memory) or give every rank a GPU "
          "(gpurun --nproc-per-node=gpu)",
          requested_by, cpu.size() == 1 ? "" : "s", fmt::join(cpu, ","),
          cpu.size() == 1 ? "s" : "ve"));
    }
    if (!fake.empty()) {
      throw ConfigError(fmt::format(
          "{} but rank{} {} only ha{} fake GPUs (GPURUN_FAKE_GPU_RANKS is for tests and cannot "
          "run NCCL); unset GPURUN_FAKE_GPU_RANKS or use GPURUN_BACKEND=gloo",
          requested_by, fake.size() == 1 ? "" : "s", fmt::join(fake, ","),
          fake.size() == 1 ? "s" : "ve"));
    }
    return Backend::kNccl;
  }
  return all_gpu && nccl_compiled ? Backend::kNccl : Backend::kGloo;
}

namespace {

constexpr bool kNcclCompiled =
#if GPURUN_HAS_NCCL
    true;
#else
    false;
#endif

const char* vote_name(GpuVote v) {
  switch (v) {
    case GpuVote::kCuda:
      return "cuda";
    case GpuVote::kFakeCuda:
      return "fake";
    case GpuVote::kCpu:
      return "cpu";
  }
  return "cpu";
}

GpuVote parse_vote(const std::string& s) {
  if (s == "cuda") return GpuVote::kCuda;
  if (s == "fake") return GpuVote::kFakeCuda;
  return GpuVote::kCpu;
}

class ContextImpl final : public Context {
 public:
  ~ContextImpl() override {
    comm_.reset();
    if (info_.self_hosted_store && store_) leave_self_hosted_store();
  }

  const LaunchInfo& info() const override { return info_; }
  const Device& device() const override { return choice_.device; }
  Backend backend() const override { return backend_; }
  std::chrono::milliseconds timeout() const override { return timeout_; }
  rendezvous::Store& store() override { return *store_; }
  Communicator& comm() override { return *comm_; }

  LaunchInfo info_;
  DeviceChoice choice_;
  Backend backend_ = Backend::kGloo;
  std::chrono::milliseconds timeout_{};
  // Rank 0's store when the job hosts its own (LaunchInfo::self_hosted_store); outlives store_.
  std::unique_ptr<rendezvous::StoreServerThread> server_;
  std::shared_ptr<rendezvous::Store> store_;  // run/attempt scoped
  std::unique_ptr<Communicator> comm_;        // destroyed before the store

  // An exit barrier for a store rank 0 hosts: every rank says it is leaving; rank 0 stops serving
  // only when all have (bounded: a rank that died is not waited for long), so a fast rank 0
  // never pulls the store from under slower ranks.
  void leave_self_hosted_store() noexcept;
};

std::string ranks_missing(rendezvous::Store& store, const std::vector<std::string>& keys) {
  std::vector<std::size_t> missing;
  try {
    for (std::size_t r = 0; r < keys.size(); ++r) {
      if (!store.check({keys[r]})) missing.push_back(r);
    }
  } catch (const std::exception& e) {
    return fmt::format("could not ask the store which ranks joined: {}", e.what());
  }
  if (missing.empty()) return "every rank joined";
  return fmt::format("rank{} {} never joined", missing.size() == 1 ? "" : "s",
                     fmt::join(missing, ","));
}

void ContextImpl::leave_self_hosted_store() noexcept {
  try {
    const std::string base = "gpurun/left/";
    std::vector<std::string> keys;
    for (int r = 0; r < info_.world_size; ++r) keys.push_back(base + std::to_string(r));
    store_->set(keys[static_cast<std::size_t>(info_.rank)], std::string_view("1"));
    if (info_.rank != 0) return;
    const auto limit = std::min(timeout_, std::chrono::milliseconds(60'000));
    try {
      store_->wait(keys, limit);
    } catch (const StoreTimeout&) {
      GPURUN_LOG_WARN("init",
                      "rank 0 stops the job's store after waiting {} for every rank to finish ({})",
                      format_duration(limit), ranks_missing(*store_, keys));
    }
  } catch (const std::exception& e) {
    GPURUN_LOG_WARN("init", "leaving the job's store: {}", e.what());
  }
}

// Every rank publishes its vote; rank 0 decides and publishes; everyone reads the decision.
Backend agree_on_backend(rendezvous::Store& store, const LaunchInfo& info, const std::string& group,
                         GpuVote mine, Backend requested, const std::string& requested_by,
                         std::chrono::milliseconds timeout) {
  const std::string base = fmt::format("setup/{}", group);
  std::vector<std::string> keys;
  for (int r = 0; r < info.world_size; ++r) keys.push_back(fmt::format("{}/dev/{}", base, r));
  const std::string decision_key = base + "/backend";
  store.set(keys[static_cast<std::size_t>(info.rank)], std::string_view(vote_name(mine)));

  if (info.rank == 0) {
    try {
      store.wait(keys, timeout);
    } catch (const StoreTimeout&) {
      throw CommError(fmt::format(
          "timed out after {} waiting for every rank to join group '{}' through {} ({}); check "
          "that those ranks started and call gpurun::init() (their logs), or raise "
          "GPURUN_COMM_TIMEOUT",
          format_duration(timeout), group, store.describe(), ranks_missing(store, keys)));
    }
    std::vector<GpuVote> votes;
    for (const auto& k : keys) votes.push_back(parse_vote(rendezvous::to_string(store.get(k))));
    std::string decision;
    try {
      decision = to_string(decide_backend(requested, requested_by, votes, kNcclCompiled));
    } catch (const ConfigError& e) {
      store.set(decision_key, "error:" + std::string(e.what()));
      throw;
    }
    store.set(decision_key, decision);
  }
  std::string decision;
  try {
    store.wait({decision_key}, timeout);
    decision = rendezvous::to_string(store.get(decision_key));
  } catch (const StoreTimeout&) {
    throw CommError(fmt::format(
        "timed out after {} waiting for key '{}' (rank 0 decides the backend once every rank "
        "joined; {}); check rank 0's log and the missing ranks' logs",
        format_duration(timeout), decision_key, ranks_missing(store, keys)));
  }
  if (decision.rfind("error:", 0) == 0)
    throw ConfigError(decision.substr(6) + " (reported by rank 0)");
  return parse_backend(decision, "backend decision from rank 0");
}

}  // namespace
}  // namespace detail

namespace detail {

// Gloo's TCP transport writes with writev(), which raises SIGPIPE when a peer has closed its
// socket; under the default disposition that kills this rank silently instead of becoming a
// CommError that names the peer. Python ignores SIGPIPE for the same reason (torch's workers run
// that way); a C++ worker gets it default from its launcher (torchrun and gpurun reset it). So
// the SDK ignores it unless the program installed a handler of its own.
void ignore_sigpipe_unless_handled() {
  struct sigaction old {};
  if (::sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL &&
      (old.sa_flags & SA_SIGINFO) == 0) {
    ::signal(SIGPIPE, SIG_IGN);
  }
}

}  // namespace detail

std::unique_ptr<Context> init_with(const EnvMap& env, std::shared_ptr<rendezvous::Store> store,
                                   InitOptions options) {
  using namespace detail;
  ignore_sigpipe_unless_handled();
  auto ctx = std::make_unique<ContextImpl>();
  ctx->info_ = read_launch_info(env);
  const auto& info = ctx->info_;
  log::set_prefix(fmt::format("[{} rank {}/{}]", info.hostname, info.rank, info.world_size));
  ctx->timeout_ = resolve_timeout(options, env);

  Backend requested = options.backend;
  std::string requested_by = fmt::format("InitOptions.backend={}", to_string(requested));
  if (requested == Backend::kAuto) {
    if (auto b = env_get(env, "GPURUN_BACKEND")) {
      requested = parse_backend(*b, "GPURUN_BACKEND");
      requested_by = fmt::format("GPURUN_BACKEND={}", *b);
      if (requested != Backend::kAuto) {
        GPURUN_LOG_INFO("init", "GPURUN_BACKEND={} set by environment", *b);
      }
    }
  }

  if (!store && info.self_hosted_store && info.rank == 0) {
    // srun / mpirun on one host with no MASTER_ADDR: this rank hosts the job's store.
    rendezvous::StoreServerOptions so;
    // Binding follows the endpoint (the step's first node: its address, not every interface).
    so.host = bind_address_for(info.master_addr);
    so.port = info.master_port;
    rendezvous::apply_store_env(so, env);  // GPURUN_STORE_ALLOW etc., as for gpurun's store
    // Other hosts: GPURUN_STORE_ALLOW, else the Slurm job's nodes (job_access.h).
    const std::string allowed = rendezvous::apply_job_allow(so, env);
    if (!allowed.empty()) GPURUN_LOG_INFO("init", "{}", allowed);
    try {
      ctx->server_ = std::make_unique<rendezvous::StoreServerThread>(so);
    } catch (const BindError& e) {
      throw ConfigError(fmt::format(
          "rank 0 cannot host the job's store on port {} ({}; chosen from {}); set MASTER_PORT "
          "to a free port for every rank (e.g. `export MASTER_PORT=29500` before srun/mpirun)",
          info.master_port, e.what(), info.master_origin));
    }
    GPURUN_LOG_INFO("init", "rank 0 hosts the job's store on {} ({})", ctx->server_->address(),
                    info.master_origin);
  }
  if (!store) {
    if (!info.master_addr.empty()) {
      store = connect_store(info, ctx->timeout_, progress_after_from(env));
    } else {
      store = std::make_shared<rendezvous::MemoryStore>(ctx->timeout_);  // 1-rank job
    }
  }
  ctx->store_ = std::make_shared<rendezvous::PrefixStore>(
      fmt::format("gpurun/{}/attempt_{}", info.run_id, info.restart_count), std::move(store));

  int visible = options.use_gpu ? cuda_device_count() : 0;
  ctx->choice_ = choose_device(info, env, options.use_gpu, visible);
  GPURUN_LOG_INFO("init", "device {}", ctx->choice_.why);
  // A rank on a real GPU needs the CUDA module: load it (or fail with the paths tried) before
  // voting. A CPU rank never tries.
  if (ctx->choice_.device.is_cuda() && !ctx->choice_.fake) {
    load_cuda_module(env, ctx->choice_.device.str());
  }
  const GpuVote vote = !ctx->choice_.device.is_cuda() ? GpuVote::kCpu
                       : ctx->choice_.fake            ? GpuVote::kFakeCuda
                                                      : GpuVote::kCuda;
  ctx->backend_ = agree_on_backend(*ctx->store_, info, options.group_name, vote, requested,
                                   requested_by, ctx->timeout_);
  GPURUN_LOG_INFO("init", "backend {} for group '{}'", to_string(ctx->backend_),
                  options.group_name);

  auto group_store = std::make_shared<rendezvous::PrefixStore>(
      fmt::format("comm/{}", options.group_name), ctx->store_);
  if (ctx->backend_ == Backend::kNccl) {
    NcclConfig nc;
    nc.rank = info.rank;
    nc.size = info.world_size;
    nc.device = ctx->choice_.device.index;
    nc.run_store = ctx->store_;
    nc.group_store = group_store;
    nc.group = options.group_name;
    nc.timeout = ctx->timeout_;
    nc.progress_after = progress_after_from(env);
    nc.check_descriptors = nccl_check_descriptors(env);
    ctx->comm_ = load_nccl_communicator(nc);
  } else {
    GlooConfig gc;
    gc.rank = info.rank;
    gc.size = info.world_size;
    gc.store = group_store;
    gc.address = choose_transport_address(env, info.master_addr, info.master_port);
    gc.timeout = ctx->timeout_;
    gc.progress_after = progress_after_from(env);
    gc.check_tcp = env_bool(env, "GPURUN_COMM_CHECK").value_or(true);
    if (auto n = env_int(env, "GPURUN_GLOO_DIRECT_MAX_BYTES")) {
      if (*n < 0) {
        throw ConfigError(fmt::format(
            "GPURUN_GLOO_DIRECT_MAX_BYTES={} is negative; set a byte count (0: always the ring)",
            *n));
      }
      gc.direct_max_bytes = static_cast<std::size_t>(*n);
    }
    if (auto shm = env_bool(env, "GPURUN_SHM")) gc.shm = *shm;
    if (ctx->choice_.device.is_cuda()) gc.memory = make_device_memory(ctx->choice_);
    ctx->comm_ = make_gloo_communicator(std::move(gc));
  }
  return ctx;
}

}  // namespace gpurun::worker
