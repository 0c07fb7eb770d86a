// Training checkpoints: one file with a small text header (epoch, step, configuration signature,
// RNG state) and the raw float tensors (parameters, optimizer state), closed by an FNV-1a
// checksum. save_checkpoint is atomic: write a temporary file, fsync, rename over the old one,
// fsync the directory, so a kill at any moment leaves either the old or the new checkpoint.
#pragma once

#include <cstdint>
#include <string>

#include "engine.h"

namespace train {

inline constexpr const char* kCheckpointFile = "checkpoint.bin";

struct Checkpoint {
  std::uint64_t epoch = 0;  // completed epochs; training continues with epoch + 1
  int world_size = 0;       // of the run that wrote it (resuming elsewhere is allowed)
  // All randomness is counter-based: parameter init from `seed`, data order from the sampler's
  // (seed, epoch). Saving the seed and the epoch therefore restores the RNG state exactly.
  std::uint64_t rng_seed = 0;
  std::string signature;  // resume_signature(): must match the resuming run's
  TrainState state;
};

// Throws std::runtime_error naming the path and the failing call.
void save_checkpoint(const std::string& path, const Checkpoint& ck);
// Throws UsageError for a missing, truncated, corrupt or foreign file.
Checkpoint load_checkpoint(const std::string& path);

// "lr: checkpoint 0.05, this run 0.1; epochs: checkpoint 10, this run 20" (empty when equal).
std::string signature_diff(const std::string& checkpoint, const std::string& current);

}  // namespace train
