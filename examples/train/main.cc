// train: data-parallel training of an MLP classifier on the worker SDK.
//
//   gpurun --nproc_per_node=4 ./build/examples/train/train --global-batch-size 256
//       --epochs 20 --lr 0.05 --lr-scaling linear --warmup-epochs 2 --save-dir ckpt
//
// Each rank reads its shard (DistributedSampler, shuffled per epoch), accumulates summed
// gradients over its micro-batches, all-reduces them in 1 MiB buckets and applies the same
// optimizer update, so parameters stay bit-identical on every rank (checked at the end).
#include <fmt/format.h>
#include <gpurun/worker/communicator.h>
#include <gpurun/worker/console.h>
#include <gpurun/worker/sampler.h>
#include <gpurun/worker/worker.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <future>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "checkpoint.h"
#include "dataset.h"
#include "engine.h"
#include "options.h"

namespace gw = gpurun::worker;

namespace train {
namespace {

constexpr std::size_t kBucketBytes = 1 << 20;  // all_reduce gradients 1 MiB at a time
constexpr int kEvalBatch = 1024;

void say(const std::string& text) {
  const std::string line = text + "\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

// Collectives on host values from any rank: the communicator wants device memory on a GPU rank,
// so small host buffers are staged through the engine's scratch space there.
class Collectives {
 public:
  Collectives(gw::Context& ctx, Engine& eng) : comm_(ctx.comm()), eng_(eng) {}

  template <typename T>
  void all_reduce_host(T* data, std::size_t n, gw::ReduceOp op) {
    void* buf = stage(data, n * sizeof(T));
    comm_.all_reduce(buf, n, gw::data_type_of<T>(), op);
    unstage(data, buf, n * sizeof(T));
  }
  template <typename T>
  void broadcast_host(T* data, std::size_t n) {
    if (n == 0) return;
    void* buf = stage(data, n * sizeof(T));
    comm_.broadcast(buf, n, gw::data_type_of<T>(), 0);
    unstage(data, buf, n * sizeof(T));
  }
  // Sums the engine's gradients (device memory) over all ranks, bucket by bucket.
  void sum_gradients() {
    float* g = eng_.grads();
    const std::size_t n = eng_.num_params();
    const std::size_t bucket = kBucketBytes / sizeof(float);
    for (std::size_t off = 0; off < n; off += bucket) {
      comm_.all_reduce(g + off, std::min(bucket, n - off), gw::DataType::kFloat32,
                       gw::ReduceOp::kSum);
    }
  }

 private:
  void* stage(void* host, std::size_t bytes) {
    if (!eng_.on_gpu()) return host;
    void* d = eng_.scratch(bytes);
    eng_.to_device(d, host, bytes);
    return d;
  }
  void unstage(void* host, void* dev, std::size_t bytes) {
    if (eng_.on_gpu()) eng_.to_host(host, dev, bytes);
  }

  gw::Communicator& comm_;
  Engine& eng_;
};

// Restores the checkpoint on rank 0 and broadcasts it; returns the first epoch to run.
std::uint64_t resume(gw::Context& ctx, Collectives& coll, Engine& eng, const Options& opt,
                     const std::string& signature) {
  const std::string path = (std::filesystem::path(opt.save_dir) / kCheckpointFile).string();
  // [status (0 none, 1 ok, 2 error), epoch, step, n_params, state tensors]
  std::int64_t head[5] = {0, 0, 0, 0, 0};
  Checkpoint ck;
  std::string error;
  if (ctx.is_root() && std::filesystem::exists(path)) {
    try {
      ck = load_checkpoint(path);
      if (const std::string diff = signature_diff(ck.signature, signature); !diff.empty()) {
        throw UsageError("checkpoint '" + path + "' belongs to a different configuration (" + diff +
                         "); rerun with the same flags or use another --save-dir");
      }
      if (ck.state.params.size() != eng.num_params()) {
        throw UsageError("checkpoint '" + path + "' holds " +
                         std::to_string(ck.state.params.size()) + " parameters, the model has " +
                         std::to_string(eng.num_params()));
      }
      head[0] = 1;
      head[1] = static_cast<std::int64_t>(ck.epoch);
      head[2] = static_cast<std::int64_t>(ck.state.step);
      head[3] = static_cast<std::int64_t>(ck.state.params.size());
      head[4] = ck.state.v.empty() ? 1 : 2;
    } catch (const std::exception& e) {
      head[0] = 2;
      error = e.what();
    }
  }
  coll.broadcast_host(head, 5);
  if (head[0] == 2) {
    if (ctx.is_root()) throw UsageError(error);
    throw std::runtime_error("rank 0 could not load the checkpoint (see rank 0's error)");
  }
  if (head[0] == 0) {
    gw::log0(ctx, "No checkpoint at {}: starting from scratch", path);
    return 0;
  }
  const auto n = static_cast<std::size_t>(head[3]);
  ck.state.params.resize(n);
  ck.state.m.resize(n);
  ck.state.v.resize(head[4] == 2 ? n : 0);
  ck.state.step = static_cast<std::uint64_t>(head[2]);
  coll.broadcast_host(ck.state.params.data(), n);
  coll.broadcast_host(ck.state.m.data(), n);
  coll.broadcast_host(ck.state.v.data(), ck.state.v.size());
  eng.load_state(ck.state);
  if (ctx.is_root() && ck.world_size != ctx.world_size()) {
    say(
        fmt::format("Note: checkpoint was written by {} ranks, resuming on {} (same effective "
                    "batch; the data order differs, so results are not bitwise those of an "
                    "uninterrupted {}-rank run)",
                    ck.world_size, ctx.world_size(), ck.world_size));
  }
  gw::log0(ctx, "Resumed from {}: epoch {} done, optimizer step {}", path, head[1], head[2]);
  return static_cast<std::uint64_t>(head[1]);
}

// Every rank's share of a generated dataset to every rank, in one all_gather of equal blocks
// (each rank's rows padded to the largest share). If any rank's share is not exact (see
// SplitPart), every rank builds the whole dataset itself instead: the result is always
// make_dataset(opt), bit for bit, whatever the number of ranks.
Split assemble_dataset(gw::Context& ctx, SplitPart part, const DatasetOptions& opt) {
  const int world = ctx.world_size();
  if (part.whole || world == 1) return std::move(part.split);
  auto& comm = ctx.comm();
  std::int32_t exact = part.exact ? 1 : 0;
  std::vector<std::int32_t> votes(static_cast<std::size_t>(world));
  comm.host_all_gather(&exact, votes.data(), 1, gw::DataType::kInt32);
  if (std::find(votes.begin(), votes.end(), 0) != votes.end()) return make_dataset(opt);

  struct Piece {
    Dataset* d;
    std::size_t n;
  };
  Split& s = part.split;
  const Piece pieces[] = {{&s.train, s.train.size()}, {&s.test, s.test.size()}};
  const auto F = static_cast<std::size_t>(s.train.features);
  auto range = [&](std::size_t n, int r) { return part_rows(n, r, world); };
  auto max_rows = [&](std::size_t n) {
    return (n + static_cast<std::size_t>(world) - 1) / static_cast<std::size_t>(world);
  };
  // Block layout per rank: for each split, max_rows x F floats then max_rows int32 labels.
  std::size_t block = 0;
  for (const Piece& p : pieces) block += max_rows(p.n) * (F * sizeof(float) + sizeof(std::int32_t));
  gpurun::HostVector<std::uint8_t> mine(block), all(block * static_cast<std::size_t>(world));
  std::size_t off = 0;
  for (const Piece& p : pieces) {
    const auto [b, e] = range(p.n, ctx.rank());
    std::memcpy(mine.data() + off, p.d->x.data() + b * F, (e - b) * F * sizeof(float));
    off += max_rows(p.n) * F * sizeof(float);
    std::memcpy(mine.data() + off, p.d->y.data() + b, (e - b) * sizeof(std::int32_t));
    off += max_rows(p.n) * sizeof(std::int32_t);
  }
  comm.host_all_gather(mine.data(), all.data(), block, gw::DataType::kUInt8);
  for (int r = 0; r < world; ++r) {
    if (r == ctx.rank()) continue;
    const std::uint8_t* src = all.data() + block * static_cast<std::size_t>(r);
    for (const Piece& p : pieces) {
      const auto [b, e] = range(p.n, r);
      std::memcpy(p.d->x.data() + b * F, src, (e - b) * F * sizeof(float));
      src += max_rows(p.n) * F * sizeof(float);
      std::memcpy(p.d->y.data() + b, src, (e - b) * sizeof(std::int32_t));
      src += max_rows(p.n) * sizeof(std::int32_t);
    }
  }
  return std::move(part.split);
}

int run(const Options& opt) {
  gw::InitOptions init;
  init.backend = opt.backend == "gloo"   ? gw::Backend::kGloo
                 : opt.backend == "nccl" ? gw::Backend::kNccl
                                         : gw::Backend::kAuto;
  init.use_gpu = !opt.cpu;
  // Each rank generates its share of the dataset while init waits for the other ranks; the
  // shares are then exchanged (every rank needs every sample: the sampler reshuffles each epoch).
  const gw::LaunchInfo launch = gw::read_launch_info(gpurun::current_environment());
  auto part_ready = std::async(std::launch::async, [&] {
    return make_dataset_part(opt.data, launch.rank, launch.world_size);
  });
  auto ctxp = gpurun::init(init);
  gw::Context& ctx = *ctxp;
  const int world = ctx.world_size();
  const int rank = ctx.rank();
  const bool cuda = ctx.device().is_cuda();

  const Split data = assemble_dataset(ctx, part_ready.get(), opt.data);
  ModelShape shape;
  shape.widths.push_back(data.train.features);
  for (int h : opt.hidden) shape.widths.push_back(h);
  shape.widths.push_back(data.train.classes);
  const BatchPlan plan = plan_batches(opt, world);

  std::unique_ptr<Engine> eng;
  if (cuda) {
    eng = load_cuda_engine(ctx.device().index, shape, opt.optimizer, opt.seed, opt.amp);
  } else {
    eng = make_cpu_engine(shape, opt.optimizer, opt.seed, opt.threads);
    if (opt.amp)
      say(fmt::format("Rank {}: --amp has no effect on a CPU rank (fp32 throughout)", rank));
  }
  Collectives coll(ctx, *eng);

  // Which device each rank uses, for the banner (host gather: works on every rank kind).
  const std::int32_t mine = cuda ? ctx.device().index : -1;
  const auto devices = ctx.comm().gather_host(std::span<const std::int32_t>(&mine, 1), 0);
  const std::string signature = resume_signature(opt, plan, shape);

  if (ctx.is_root()) {
    std::string devs;
    for (std::size_t r = 0; r < devices.size(); ++r) {
      const int d = devices[r].empty() ? -1 : devices[r][0];
      devs += fmt::format("{}{}", r ? ", " : "",
                          d < 0 ? std::string("cpu") : fmt::format("cuda:{}", d));
    }
    const int nodes = std::max(1, world / std::max(1, ctx.local_world_size()));
    std::string lr_line = fmt::format("{:g}", plan.lr);
    if (opt.lr_scaling != "none") {
      lr_line +=
          fmt::format(" (base {:g} x {:.4g}, {} scaling: effective batch {} / base batch {})",
                      opt.lr, plan.lr_factor, opt.lr_scaling, plan.effective, plan.base);
    }
    say("DDP Configuration");
    say("======================================");
    say(fmt::format("WORLD_SIZE: {} ranks on {} node(s)", world, nodes));
    say(fmt::format("Devices: {}", devs));
    say(fmt::format("Backend: {}", gw::to_string(ctx.backend())));
    say(fmt::format("Batch size per rank: {}", plan.per_rank));
    say(fmt::format("Gradient accumulation steps: {}", plan.accum));
    say(fmt::format("Effective batch size: {} x {} x {} = {}", plan.per_rank, world, plan.accum,
                    plan.effective));
    say(fmt::format("Learning rate: {}, {} schedule, {:g} warmup epochs", lr_line, opt.schedule,
                    opt.warmup_epochs));
    say(fmt::format("Model: MLP {} ({} parameters), {}", shape.str(), shape.num_params(),
                    opt.optimizer.str()));
    say(fmt::format("Data: {}; {} train / {} test samples", data.description, data.train.size(),
                    data.test.size()));
    say("======================================");
  }

  std::uint64_t start_epoch = 0;
  if (opt.resume) start_epoch = resume(ctx, coll, *eng, opt, signature);

  gw::SamplerOptions so;
  so.shuffle = true;
  so.seed = opt.seed;
  gw::DistributedSampler sampler(data.train.size(), world, rank, so);
  const std::size_t micro_per_epoch =
      (sampler.num_samples() + static_cast<std::size_t>(plan.per_rank) - 1) /
      static_cast<std::size_t>(plan.per_rank);
  const std::size_t steps_per_epoch = (micro_per_epoch + static_cast<std::size_t>(plan.accum) - 1) /
                                      static_cast<std::size_t>(plan.accum);
  const auto total_steps =
      static_cast<std::uint64_t>(steps_per_epoch) * static_cast<std::uint64_t>(opt.epochs);
  const auto warmup_steps =
      static_cast<std::uint64_t>(opt.warmup_epochs * static_cast<double>(steps_per_epoch) + 0.5);

  const std::size_t F = static_cast<std::size_t>(data.train.features);
  std::vector<float> xb(static_cast<std::size_t>(std::max(plan.per_rank, kEvalBatch)) * F);
  std::vector<std::int32_t> yb(static_cast<std::size_t>(std::max(plan.per_rank, kEvalBatch)));

  // The test set is split without padding (rank r takes r, r+W, ...) so each sample counts once.
  auto evaluate = [&](double out[3]) {
    BatchStats st;
    std::size_t k = 0;
    for (std::size_t i = static_cast<std::size_t>(rank); i < data.test.size();
         i += static_cast<std::size_t>(world)) {
      std::copy(data.test.row(i), data.test.row(i) + F,
                xb.begin() + static_cast<std::ptrdiff_t>(k * F));
      yb[k++] = data.test.y[i];
      if (k == static_cast<std::size_t>(kEvalBatch)) {
        st += eng->evaluate(xb.data(), yb.data(), static_cast<int>(k));
        k = 0;
      }
    }
    if (k) st += eng->evaluate(xb.data(), yb.data(), static_cast<int>(k));
    out[0] = st.loss_sum;
    out[1] = static_cast<double>(st.correct);
    out[2] = static_cast<double>(st.count);
    coll.all_reduce_host(out, 3, gw::ReduceOp::kSum);
  };

  std::FILE* metrics = nullptr;
  if (ctx.is_root() && !opt.metrics.empty()) {
    const std::filesystem::path mp(opt.metrics);
    if (mp.has_parent_path()) std::filesystem::create_directories(mp.parent_path());
    metrics = std::fopen(opt.metrics.c_str(), start_epoch > 0 ? "a" : "w");
    if (!metrics) throw UsageError("cannot open --metrics file '" + opt.metrics + "'");
  }

  double test[3] = {0, 0, 0};
  bool stopped = false;
  for (std::uint64_t epoch = start_epoch; epoch < static_cast<std::uint64_t>(opt.epochs); ++epoch) {
    sampler.set_epoch(epoch);
    const std::vector<std::size_t> idx = sampler.indices();
    const auto t0 = std::chrono::steady_clock::now();
    std::optional<gw::ProgressBar> bar;
    if (opt.progress)
      bar.emplace(ctx, fmt::format("Epoch {}/{}", epoch + 1, opt.epochs), steps_per_epoch, "it");
    BatchStats train_stats;
    std::size_t pos = 0;
    float lr = 0.0f;
    for (std::size_t s = 0; s < steps_per_epoch; ++s) {
      eng->zero_grads();
      std::int64_t local = 0;
      BatchStats step_stats;
      for (int m = 0; m < plan.accum && pos < idx.size(); ++m) {
        const std::size_t n = std::min(static_cast<std::size_t>(plan.per_rank), idx.size() - pos);
        for (std::size_t k = 0; k < n; ++k) {
          const std::size_t i = idx[pos + k];
          std::copy(data.train.row(i), data.train.row(i) + F,
                    xb.begin() + static_cast<std::ptrdiff_t>(k * F));
          yb[k] = data.train.y[i];
        }
        pos += n;
        step_stats += eng->forward_backward(xb.data(), yb.data(), static_cast<int>(n));
        local += static_cast<std::int64_t>(n);
      }
      coll.sum_gradients();
      // Every rank has the same number of samples (the sampler pads), so the global count is
      // local * world and the mean gradient needs no extra collective.
      lr = lr_at(opt.schedule, plan.lr, eng->step_count(), warmup_steps, total_steps);
      eng->step(1.0f / static_cast<float>(local * world), lr);
      train_stats += step_stats;
      if (bar) {
        bar->update(1, fmt::format("loss={:.4f}",
                                   step_stats.loss_sum / static_cast<double>(step_stats.count)));
      }
    }
    if (bar) bar->finish();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double tr[3] = {train_stats.loss_sum, static_cast<double>(train_stats.correct),
                    static_cast<double>(train_stats.count)};
    coll.all_reduce_host(tr, 3, gw::ReduceOp::kSum);
    evaluate(test);
    const double samples_per_s = tr[2] / seconds;
    if (ctx.is_root()) {
      say(
          fmt::format("Epoch {}/{}: loss {:.4f}, train acc {:.2f}%, test loss {:.4f}, test acc "
                      "{:.2f}%, {:.0f} samples/s, lr {:.4g}",
                      epoch + 1, opt.epochs, tr[0] / tr[2], 100.0 * tr[1] / tr[2],
                      test[0] / test[2], 100.0 * test[1] / test[2], samples_per_s, lr));
      if (metrics) {
        std::fprintf(metrics,
                     "{\"epoch\": %llu, \"loss\": %.6f, \"train_accuracy\": %.6f, "
                     "\"test_loss\": %.6f, \"accuracy\": %.6f, \"samples_per_s\": %.1f, "
                     "\"lr\": %.6g, \"epoch_time_s\": %.4f, \"world_size\": %d}\n",
                     static_cast<unsigned long long>(epoch + 1), tr[0] / tr[2], tr[1] / tr[2],
                     test[0] / test[2], test[1] / test[2], samples_per_s, static_cast<double>(lr),
                     seconds, world);
        std::fflush(metrics);
      }
      if (!opt.save_dir.empty()) {
        Checkpoint ck;
        ck.epoch = epoch + 1;
        ck.world_size = world;
        ck.rng_seed = opt.seed;
        ck.signature = signature;
        ck.state = eng->state();
        save_checkpoint((std::filesystem::path(opt.save_dir) / kCheckpointFile).string(), ck);
      }
    }
    if (opt.stop_after_epoch > 0 && epoch + 1 == static_cast<std::uint64_t>(opt.stop_after_epoch) &&
        epoch + 1 < static_cast<std::uint64_t>(opt.epochs)) {
      gw::log0(ctx, "Stopping after epoch {} (--stop-after-epoch); continue with --resume",
               epoch + 1);
      stopped = true;
      break;
    }
  }
  if (metrics) std::fclose(metrics);
  if (start_epoch >= static_cast<std::uint64_t>(opt.epochs)) evaluate(test);

  // Bitwise check: the same 63-bit FNV-1a of the parameters on every rank (max == min).
  const TrainState st = eng->state();
  const auto sum = static_cast<std::int64_t>(
      fnv1a(st.params.data(), st.params.size() * sizeof(float)) & 0x7fffffffffffffffULL);
  std::int64_t mx = sum, mn = sum;
  coll.all_reduce_host(&mx, 1, gw::ReduceOp::kMax);
  coll.all_reduce_host(&mn, 1, gw::ReduceOp::kMin);
  if (mx != mn) {
    throw std::runtime_error(fmt::format(
        "parameters differ between ranks (checksum min {:016x}, max {:016x}, this rank {:016x})",
        mn, mx, sum));
  }
  if (ctx.is_root()) {
    say(fmt::format("Parameters identical on all {} ranks: checksum {:016x}", world, sum));
    if (!stopped) {
      say(fmt::format("Final: test accuracy {:.2f}%, test loss {:.4f}", 100.0 * test[1] / test[2],
                      test[0] / test[2]));
    }
  }
  return 0;
}

}  // namespace
}  // namespace train

int main(int argc, char** argv) {
  train::Options opt;
  try {
    opt = train::parse_args(argc, argv);
    if (opt.help) {
      std::fputs(train::usage().c_str(), stdout);
      return 0;
    }
  } catch (const train::UsageError& e) {
    std::fprintf(stderr, "train: error: %s\n", e.what());
    return 2;
  }
  return gw::run_main([&] { return train::run(opt); });
}
