// DistributedSampler with PyTorch's exact semantics (torch.utils.data.DistributedSampler): the
// same indices for the same (dataset size, replicas, rank, shuffle, seed, epoch, drop_last), so a
// gpurun job and a torch job see the same data split. Shuffling reproduces torch.randperm with a
// torch.Generator seeded with seed + epoch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace gpurun::worker {

struct SamplerOptions {
  bool shuffle = true;
  std::uint64_t seed = 0;
  bool drop_last = false;
};

class DistributedSampler {
 public:
  // Throws ConfigError if rank is not in [0, num_replicas).
  DistributedSampler(std::size_t dataset_size, int num_replicas, int rank,
                     SamplerOptions options = {});

  void set_epoch(std::uint64_t epoch) { epoch_ = epoch; }
  std::uint64_t epoch() const { return epoch_; }

  // This rank's indices for the current epoch (padded by wrapping when !drop_last).
  std::vector<std::size_t> indices() const;
  std::size_t num_samples() const { return num_samples_; }  // per rank
  std::size_t total_size() const { return total_size_; }    // num_samples * num_replicas

 private:
  std::size_t n_;
  int replicas_;
  int rank_;
  SamplerOptions opt_;
  std::uint64_t epoch_ = 0;
  std::size_t num_samples_;
  std::size_t total_size_;
};

// torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist() on CPU.
std::vector<std::int64_t> torch_randperm(std::size_t n, std::uint64_t seed);

}  // namespace gpurun::worker
