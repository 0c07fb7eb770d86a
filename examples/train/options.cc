#include "options.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <numbers>

namespace train {
namespace {

long long to_ll(const std::string& flag, const std::string& v, long long min) {
  long long out = 0;
  const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size() || out < min) {
    throw UsageError(
        fmt::format("invalid value '{}' for {} (expected an integer >= {})", v, flag, min));
  }
  return out;
}
int to_int(const std::string& flag, const std::string& v, int min) {
  const long long x = to_ll(flag, v, min);
  if (x > 1'000'000'000) throw UsageError(fmt::format("value '{}' for {} is too large", v, flag));
  return static_cast<int>(x);
}

float to_float(const std::string& flag, const std::string& v, float min) {
  char* end = nullptr;
  const float out = std::strtof(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(out) || out < min) {
    throw UsageError(
        fmt::format("invalid value '{}' for {} (expected a number >= {})", v, flag, min));
  }
  return out;
}

std::string one_of(const std::string& flag, const std::string& v,
                   std::initializer_list<const char*> allowed) {
  std::string list;
  for (const char* a : allowed) {
    if (v == a) return v;
    list += (list.empty() ? "" : ", ") + std::string(a);
  }
  throw UsageError(fmt::format("invalid value '{}' for {} (one of: {})", v, flag, list));
}

}  // namespace

std::string usage() {
  return R"(usage: gpurun --nproc_per_node=N train [options]

Data-parallel training of an MLP classifier: every rank runs forward/backward on its shard
(DistributedSampler), gradients are averaged with all_reduce in 1 MiB buckets, and every rank
applies the same update, so parameters stay bit-identical on all ranks.

data and model:
  --dataset NAME          blobs | spirals | digits (default: blobs; digits reads scikit-learn's
                          digits.csv.gz from python3-sklearn, or --data-file PATH)
  --samples N             training samples of a generated dataset (default: 8000)
  --test-samples N        test samples of a generated dataset (default: 2000)
  --features N            blobs: input dimension (default: 16)
  --classes N             blobs/spirals: number of classes (default: 8)
  --noise X               generated data noise (default: 2.0; blobs then top out near 95%)
  --data-seed N           seed of the generated data (default: 1234)
  --hidden W[,W...]       hidden layer widths (default: 64,64)
batches and learning rate:
  --batch-size N          samples per rank per micro-batch (default: 32)
  --global-batch-size N   samples per optimizer step over all ranks; sets the accumulation
                          steps to N / (batch-size x world size), which must divide exactly
  --grad-accum-steps N    micro-batches per optimizer step (default: 1)
  --epochs N              (default: 10)
  --lr X                  base learning rate (default: 0.05)
  --lr-scaling MODE       none | linear | sqrt: multiply --lr by (effective batch / base batch)
                          or its square root (default: none)
  --base-batch-size N     the batch --lr was tuned for (default: --batch-size, i.e. 1 rank, no
                          accumulation)
  --warmup-epochs X       linear warmup from 0 (default: 0)
  --schedule S            cosine | constant after warmup (default: cosine)
  --optimizer O           sgd | adam (default: sgd)
  --momentum X            SGD momentum (default: 0.9)
  --weight-decay X        (default: 0)
  --seed N                parameter init and data order (default: 0)
checkpoints and output:
  --save-dir DIR          rank 0 writes DIR/checkpoint.bin atomically after every epoch
  --resume                continue from DIR/checkpoint.bin (starts fresh if there is none)
  --stop-after-epoch K    stop after epoch K's checkpoint, as if preempted
  --metrics FILE          append one JSON line per epoch (rank 0)
  --no-progress           no progress bar
devices:
  --backend B             auto | gloo | nccl (default: auto)
  --cpu                   use the CPU even where a GPU is visible
  --amp                   GPU: TF32 tensor-core matmuls (fp32 storage); CPU: ignored
  --threads N             BLAS threads per CPU rank (default: 1, one core per rank)
  -h, --help              this text
)";
}

Options parse_args(int argc, const char* const* argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (const auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    if (arg.rfind("--", 0) == 0) {  // accept --batch_size as well as --batch-size
      for (std::size_t k = 2; k < arg.size(); ++k) {
        if (arg[k] == '_') arg[k] = '-';
      }
    }
    auto next = [&]() -> std::string {
      if (has_value) return value;
      if (i + 1 >= argc) throw UsageError("option " + arg + " needs a value; see --help");
      return argv[++i];
    };
    auto flag = [&]() {
      if (has_value) throw UsageError("option " + arg + " takes no value");
    };
    if (arg == "-h" || arg == "--help") {
      flag();
      opt.help = true;
    } else if (arg == "--dataset") {
      opt.data.name = one_of(arg, next(), {"blobs", "spirals", "digits"});
    } else if (arg == "--data-file") {
      opt.data.data_file = next();
    } else if (arg == "--samples") {
      opt.data.train_samples = static_cast<std::size_t>(to_int(arg, next(), 1));
    } else if (arg == "--test-samples") {
      opt.data.test_samples = static_cast<std::size_t>(to_int(arg, next(), 1));
    } else if (arg == "--features") {
      opt.data.features = to_int(arg, next(), 1);
    } else if (arg == "--classes") {
      opt.data.classes = to_int(arg, next(), 2);
    } else if (arg == "--noise") {
      opt.data.noise = to_float(arg, next(), 0.0f);
    } else if (arg == "--data-seed") {
      opt.data.seed = static_cast<std::uint64_t>(to_ll(arg, next(), 0));
    } else if (arg == "--hidden") {
      opt.hidden.clear();
      const std::string v = next();
      std::size_t start = 0;
      while (start <= v.size()) {
        const auto comma = v.find(',', start);
        const std::string part =
            v.substr(start, comma == std::string::npos ? comma : comma - start);
        opt.hidden.push_back(to_int(arg, part, 1));
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    } else if (arg == "--epochs") {
      opt.epochs = to_int(arg, next(), 1);
    } else if (arg == "--batch-size") {
      opt.batch_size = to_int(arg, next(), 1);
    } else if (arg == "--global-batch-size") {
      opt.global_batch_size = to_int(arg, next(), 1);
    } else if (arg == "--grad-accum-steps") {
      opt.grad_accum_steps = to_int(arg, next(), 1);
    } else if (arg == "--lr") {
      opt.lr = to_float(arg, next(), 0.0f);
    } else if (arg == "--lr-scaling") {
      opt.lr_scaling = one_of(arg, next(), {"none", "linear", "sqrt"});
    } else if (arg == "--base-batch-size") {
      opt.base_batch_size = to_int(arg, next(), 1);
    } else if (arg == "--warmup-epochs") {
      opt.warmup_epochs = to_float(arg, next(), 0.0f);
    } else if (arg == "--schedule") {
      opt.schedule = one_of(arg, next(), {"cosine", "constant"});
    } else if (arg == "--optimizer") {
      opt.optimizer.kind = one_of(arg, next(), {"sgd", "adam"});
    } else if (arg == "--momentum") {
      opt.optimizer.momentum = to_float(arg, next(), 0.0f);
    } else if (arg == "--weight-decay") {
      opt.optimizer.weight_decay = to_float(arg, next(), 0.0f);
    } else if (arg == "--seed") {
      opt.seed = static_cast<std::uint64_t>(to_ll(arg, next(), 0));
    } else if (arg == "--save-dir") {
      opt.save_dir = next();
    } else if (arg == "--resume") {
      flag();
      opt.resume = true;
    } else if (arg == "--stop-after-epoch") {
      opt.stop_after_epoch = to_int(arg, next(), 1);
    } else if (arg == "--metrics") {
      opt.metrics = next();
    } else if (arg == "--no-progress") {
      flag();
      opt.progress = false;
    } else if (arg == "--backend") {
      opt.backend = one_of(arg, next(), {"auto", "gloo", "nccl"});
    } else if (arg == "--cpu") {
      flag();
      opt.cpu = true;
    } else if (arg == "--amp") {
      flag();
      opt.amp = true;
    } else if (arg == "--threads") {
      opt.threads = to_int(arg, next(), 1);
    } else {
      throw UsageError("unknown option '" + arg + "'; see --help");
    }
  }
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
