// Reads "n replicas rank shuffle seed epoch drop_last" lines on stdin and prints this SDK's
// DistributedSampler indices for each, one line of space-separated integers per input line.
// tests/worker/sampler_torch_test.py compares them with torch.utils.data.DistributedSampler.
#include <cstdint>
#include <iostream>
#include <string>

#include "gpurun/worker/sampler.h"

int main() {
  std::size_t n;
  int replicas, rank, shuffle, drop_last;
  std::uint64_t seed, epoch;
  std::string out;
  while (std::cin >> n >> replicas >> rank >> shuffle >> seed >> epoch >> drop_last) {
    gpurun::worker::SamplerOptions o;
    o.shuffle = shuffle != 0;
    o.seed = seed;
    o.drop_last = drop_last != 0;
    gpurun::worker::DistributedSampler s(n, replicas, rank, o);
    s.set_epoch(epoch);
    out.clear();
    for (auto i : s.indices()) {
      out += std::to_string(i);
      out += ' ';
    }
    std::cout << out << '\n';
  }
  return 0;
}
