#include "gpurun/worker/sampler.h"

#include <fmt/format.h>

#include <limits>
#include <numeric>
#include <random>

#include "gpurun/common/error.h"

namespace gpurun::worker {

// torch 1.13 randperm_cpu with a CPUGeneratorImpl: at::mt19937 seeded with the low 32 bits of the
// seed (identical to std::mt19937's seeding), then Fisher-Yates driven by generator->random()
// (one 32-bit draw) for n < 2^32/20; for larger n, the "inside-out" variant with random64()
// (two draws, first one high).
std::vector<std::int64_t> torch_randperm(std::size_t n, std::uint64_t seed) {
  std::mt19937 gen(static_cast<std::uint32_t>(seed & 0xffffffffu));
  const auto N = static_cast<std::int64_t>(n);
  std::vector<std::int64_t> r(n);
  if (N < static_cast<std::int64_t>(std::numeric_limits<std::uint32_t>::max() / 20)) {
    std::iota(r.begin(), r.end(), 0);
    for (std::int64_t i = 0; i < N - 1; ++i) {
      auto z = static_cast<std::int64_t>(gen() % static_cast<std::uint64_t>(N - i));
      std::swap(r[static_cast<std::size_t>(i)], r[static_cast<std::size_t>(z + i)]);
    }
    return r;
  }
  for (std::int64_t i = 0; i < N; ++i) {
    std::uint64_t hi = gen();
    std::uint64_t lo = gen();
    auto z = static_cast<std::size_t>(((hi << 32) | lo) % static_cast<std::uint64_t>(i + 1));
    r[static_cast<std::size_t>(i)] = r[z];
    r[z] = i;
  }
  return r;
}

DistributedSampler::DistributedSampler(std::size_t dataset_size, int num_replicas, int rank,
                                       SamplerOptions options)
    : n_(dataset_size), replicas_(num_replicas), rank_(rank), opt_(options) {
  if (num_replicas < 1) {
    throw ConfigError(
        fmt::format("DistributedSampler: num_replicas={} (need at least 1); pass "
                    "ctx->world_size()",
                    num_replicas));
  }
  if (rank < 0 || rank >= num_replicas) {
    throw ConfigError(
        fmt::format("DistributedSampler: rank {} is not in [0, {}); pass "
                    "ctx->rank() and ctx->world_size()",
                    rank, num_replicas));
  }
  const auto R = static_cast<std::size_t>(num_replicas);
  // torch: drop_last and n % R != 0 -> ceil((n - R) / R) (= n / R, and 0 when n < R);
  // otherwise ceil(n / R).
  if (opt_.drop_last && n_ % R != 0) {
    num_samples_ = n_ / R;
  } else {
    num_samples_ = (n_ + R - 1) / R;
  }
  total_size_ = num_samples_ * R;
}

std::vector<std::size_t> DistributedSampler::indices() const {
  std::vector<std::size_t> all;
  all.reserve(std::max(n_, total_size_));
  if (opt_.shuffle) {
    for (auto v : torch_randperm(n_, opt_.seed + epoch_))
      all.push_back(static_cast<std::size_t>(v));
  } else {
    for (std::size_t i = 0; i < n_; ++i) all.push_back(i);
  }
  if (!opt_.drop_last) {
    // Pad by repeating the list from its start (torch: indices += (indices * k)[:padding]).
    const std::size_t n = all.size();
    for (std::size_t i = 0; all.size() < total_size_ && n > 0; ++i) all.push_back(all[i % n]);
  } else {
    all.resize(total_size_);
  }
  std::vector<std::size_t> mine;
  mine.reserve(num_samples_);
  for (std::size_t i = static_cast<std::size_t>(rank_); i < total_size_;
       i += static_cast<std::size_t>(replicas_)) {
    mine.push_back(all[i]);
  }
  return mine;
}

}  // namespace gpurun::worker
