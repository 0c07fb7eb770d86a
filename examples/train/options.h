// Command line of the training example and the arithmetic derived from it: per-rank batch and
// gradient accumulation from a global batch (as the user guides compute it), learning-rate
// scaling and the warmup + cosine schedule. Pure functions, unit-tested without ranks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dataset.h"
#include "engine.h"

namespace train {

struct Options {
  DatasetOptions data;
  std::vector<int> hidden = {64, 64};
  int epochs = 10;
  int batch_size = 32;        // per rank, per micro-batch
  int global_batch_size = 0;  // 0: batch_size * world * grad_accum_steps
  int grad_accum_steps = 0;   // 0: derived (1 unless --global-batch-size says otherwise)
  float lr = 0.05f;
  std::string lr_scaling = "none";  // none | linear | sqrt
  int base_batch_size = 0;          // 0: --batch-size (the batch --lr was tuned for)
  float warmup_epochs = 0.0f;
  std::string schedule = "cosine";  // cosine | constant
  OptimizerConfig optimizer;
  std::uint64_t seed = 0;    // parameter init and data order (sampler seed)
  std::string save_dir;      // checkpoint.bin is written here after every epoch (rank 0)
  bool resume = false;       // continue from <save_dir>/checkpoint.bin if it exists
  int stop_after_epoch = 0;  // > 0: exit after that epoch's checkpoint (preemption drill)
  std::string metrics;       // JSONL file (rank 0)
  bool amp = false;          // GPU: TF32 tensor-core matmuls; CPU: ignored with a note
  std::string backend = "auto";
  bool cpu = false;
  int threads = 1;  // BLAS threads per CPU rank
  bool progress = true;
  bool help = false;
};

std::string usage();
Options parse_args(int argc, const char* const* argv);  // throws UsageError

struct BatchPlan {
  int per_rank = 0;   // micro-batch per rank
  int accum = 1;      // micro-batches per optimizer step
  int effective = 0;  // per_rank * world * accum: samples per optimizer step
  int base = 0;       // batch the base --lr belongs to
  double lr_factor = 1.0;
  float lr = 0.0f;  // peak lr after scaling
};

// Throws UsageError naming the numbers when --global-batch-size is not a multiple of
// batch-size x world size, or contradicts --grad-accum-steps.
BatchPlan plan_batches(const Options& opt, int world_size);

// Learning rate at optimizer step `step` (0-based): linear warmup to `peak` over warmup_steps,
// then constant or cosine decay to 0 at total_steps.
float lr_at(const std::string& schedule, float peak, std::uint64_t step, std::uint64_t warmup_steps,
            std::uint64_t total_steps);

// Everything that must match for --resume to continue the same run, as "key=value" lines.
std::string resume_signature(const Options& opt, const BatchPlan& plan, const ModelShape& shape);

}  // namespace train
