#include "options.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "example_cli.h"

namespace train {
namespace {

namespace cli = example_cli;

constexpr const char* kIntro = R"(usage: gpurun --nproc_per_node=N train [options]

Data-parallel training of an MLP classifier: every rank runs forward/backward on its shard
(DistributedSampler), gradients are averaged with all_reduce in 1 MiB buckets, and every rank
applies the same update, so parameters stay bit-identical on all ranks.

)";

constexpr long long kMaxSeed = std::numeric_limits<long long>::max();

// "64,64" -> {64, 64}: widths >= 1.
cli::po::value_semantic* widths(std::vector<int>* out) {
  return cli::custom("W[,W...]", [out](const std::string& v) {
    std::vector<int> w;
    std::size_t start = 0;
    while (start <= v.size()) {
      const std::size_t comma = std::min(v.find(',', start), v.size());
      const auto x = cli::to_integer(v.substr(start, comma - start));
      if (!x || *x < 1 || *x > cli::kMaxInt) {
        throw cli::BadValue("comma-separated integers >= 1, e.g. 64,64");
      }
      w.push_back(static_cast<int>(*x));
      start = comma + 1;
    }
    *out = std::move(w);
  });
}

// The option table, writing into `o`. Every flag is also accepted with underscores
// (--batch_size), as torchrun-era scripts spell them.
cli::CommandLine command_line(Options& o) {
  cli::CommandLine cl(kIntro, 26, &o.help, /*all_underscore_spellings=*/true);
  cl.section("data and model:");
  cl.add("dataset", cli::choice("NAME", &o.data.name, {"blobs", "spirals", "digits"}),
         "blobs | spirals | digits (default: blobs; digits reads scikit-learn's\n"
         "digits.csv.gz: scripts/fetch_digits.sh puts it in data/, or --data-file PATH)");
  cl.add("data-file", cli::text("PATH", &o.data.data_file), "");  // in --dataset's help
  cl.add("samples", cli::integer("N", &o.data.train_samples, 1),
         "training samples of a generated dataset (default: 8000)");
  cl.add("test-samples", cli::integer("N", &o.data.test_samples, 1),
         "test samples of a generated dataset (default: 2000)");
  cl.add("features", cli::integer("N", &o.data.features, 1),
         "blobs: input dimension (default: 16)");
  cl.add("classes", cli::integer("N", &o.data.classes, 2),
         "blobs/spirals: number of classes (default: 8)");
  cl.add("noise", cli::number("X", &o.data.noise, 0.0f),
         "generated data noise (default: 2.0; blobs then top out near 95%)");
  cl.add("data-seed", cli::integer("N", &o.data.seed, 0, kMaxSeed),
         "seed of the generated data (default: 1234)");
  cl.add("hidden", widths(&o.hidden), "hidden layer widths (default: 64,64)");
  cl.section("batches and learning rate:");
  cl.add("batch-size", cli::integer("N", &o.batch_size, 1),
         "samples per rank per micro-batch (default: 32)");
  cl.add("global-batch-size", cli::integer("N", &o.global_batch_size, 1),
         "samples per optimizer step over all ranks; sets the accumulation\n"
         "steps to N / (batch-size x world size), which must divide exactly");
  cl.add("grad-accum-steps", cli::integer("N", &o.grad_accum_steps, 1),
         "micro-batches per optimizer step (default: 1)");
  cl.add("epochs", cli::integer("N", &o.epochs, 1), "(default: 10)");
  cl.add("lr", cli::number("X", &o.lr, 0.0f), "base learning rate (default: 0.05)");
  cl.add("lr-scaling", cli::choice("MODE", &o.lr_scaling, {"none", "linear", "sqrt"}),
         "none | linear | sqrt: multiply --lr by (effective batch / base batch)\n"
         "or its square root (default: none)");
  cl.add("base-batch-size", cli::integer("N", &o.base_batch_size, 1),
         "the batch --lr was tuned for (default: --batch-size, i.e. 1 rank, no\n"
         "accumulation)");
  cl.add("warmup-epochs", cli::number("X", &o.warmup_epochs, 0.0f),
         "linear warmup from 0 (default: 0)");
  cl.add("schedule", cli::choice("S", &o.schedule, {"cosine", "constant"}),
         "cosine | constant after warmup (default: cosine)");
  cl.add("optimizer", cli::choice("O", &o.optimizer.kind, {"sgd", "adam"}),
         "sgd | adam (default: sgd)");
  cl.add("momentum", cli::number("X", &o.optimizer.momentum, 0.0f), "SGD momentum (default: 0.9)");
  cl.add("weight-decay", cli::number("X", &o.optimizer.weight_decay, 0.0f), "(default: 0)");
  cl.add("seed", cli::integer("N", &o.seed, 0, kMaxSeed),
         "parameter init and data order (default: 0)");
  cl.section("checkpoints and output:");
  cl.add("save-dir", cli::text("DIR", &o.save_dir),
         "rank 0 writes DIR/checkpoint.bin atomically after every epoch");
  cl.add("resume", cli::flag(&o.resume),
         "continue from DIR/checkpoint.bin (starts fresh if there is none)");
  cl.add("stop-after-epoch", cli::integer("K", &o.stop_after_epoch, 1),
         "stop after epoch K's checkpoint, as if preempted");
  cl.add("metrics", cli::text("FILE", &o.metrics), "append one JSON line per epoch (rank 0)");
  cl.add("no-progress", cli::flag(&o.progress, false), "no progress bar");
  cl.section("devices:");
  cl.add("backend", cli::choice("B", &o.backend, {"auto", "gloo", "nccl"}),
         "auto | gloo | nccl (default: auto)");
  cl.add("cpu", cli::flag(&o.cpu), "use the CPU even where a GPU is visible");
  cl.add("amp", cli::flag(&o.amp), "GPU: TF32 tensor-core matmuls (fp32 storage); CPU: ignored");
  cl.add("threads", cli::integer("N", &o.threads, 1),
         "BLAS threads per CPU rank (default: 1, one core per rank)");
  return cl;
}

}  // namespace

std::string usage() { return cli::usage(command_line); }

Options parse_args(int argc, const char* const* argv) {
  Options opt = cli::parse<Options, UsageError>(command_line, argc, argv);
  if (opt.resume && opt.save_dir.empty()) {
    throw UsageError("--resume needs --save-dir DIR (the directory holding checkpoint.bin)");
  }
  return opt;
}

BatchPlan plan_batches(const Options& opt, int world_size) {
  BatchPlan p;
  p.per_rank = opt.batch_size;
  const long long per_step = static_cast<long long>(opt.batch_size) * world_size;
  if (opt.global_batch_size > 0) {
    if (opt.global_batch_size % per_step != 0) {
      throw UsageError(fmt::format(
          "--global-batch-size {} is not a multiple of --batch-size {} x world size {} = {}; "
          "pick a global batch that is a multiple of {} or change --batch-size",
          opt.global_batch_size, opt.batch_size, world_size, per_step, per_step));
    }
    p.accum = static_cast<int>(opt.global_batch_size / per_step);
    if (opt.grad_accum_steps > 0 && opt.grad_accum_steps != p.accum) {
      throw UsageError(fmt::format(
          "--grad-accum-steps {} contradicts --global-batch-size {} (= batch-size {} x world size "
          "{} x {} accumulation steps); pass only one of them",
          opt.grad_accum_steps, opt.global_batch_size, opt.batch_size, world_size, p.accum));
    }
  } else {
    p.accum = opt.grad_accum_steps > 0 ? opt.grad_accum_steps : 1;
  }
  p.effective = static_cast<int>(per_step * p.accum);
  p.base = opt.base_batch_size > 0 ? opt.base_batch_size : opt.batch_size;
  const double k = static_cast<double>(p.effective) / p.base;
  p.lr_factor = opt.lr_scaling == "linear" ? k : (opt.lr_scaling == "sqrt" ? std::sqrt(k) : 1.0);
  p.lr = static_cast<float>(opt.lr * p.lr_factor);
  return p;
}

float lr_at(const std::string& schedule, float peak, std::uint64_t step, std::uint64_t warmup_steps,
            std::uint64_t total_steps) {
  if (step < warmup_steps) {
    return peak *
           static_cast<float>(static_cast<double>(step + 1) / static_cast<double>(warmup_steps));
  }
  if (schedule == "constant" || total_steps <= warmup_steps) return peak;
  const double t =
      static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
  return static_cast<float>(peak * 0.5 * (1.0 + std::cos(std::numbers::pi * t)));
}

std::string resume_signature(const Options& opt, const BatchPlan& plan, const ModelShape& shape) {
  return fmt::format(
      "dataset={}\nsamples={}\ntest_samples={}\nfeatures={}\nclasses={}\nnoise={}\ndata_seed={}\n"
      "data_file={}\nmodel={}\noptimizer={}\nlr={}\nlr_scaling={}\nbase_batch={}\n"
      "effective_batch={}\nwarmup_epochs={}\nschedule={}\nepochs={}\nseed={}\n",
      opt.data.name, opt.data.train_samples, opt.data.test_samples, opt.data.features,
      opt.data.classes, opt.data.noise, opt.data.seed, opt.data.data_file, shape.str(),
      opt.optimizer.str(), opt.lr, opt.lr_scaling, plan.base, plan.effective, opt.warmup_epochs,
      opt.schedule, opt.epochs, opt.seed);
}

}  // namespace train
