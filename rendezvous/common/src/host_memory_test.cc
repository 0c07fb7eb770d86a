#include "gpurun/common/host_memory.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

namespace {

// AnonHugePages (kB) of the mapping that contains p, from /proc/self/smaps.
long anon_huge_kb(const void* p) {
  std::ifstream f("/proc/self/smaps");
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  std::string line;
  bool in = false;
  while (std::getline(f, line)) {
    std::uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      in = addr >= lo && addr < hi;
      continue;
    }
    if (in && line.rfind("AnonHugePages:", 0) == 0) return std::stol(line.substr(14));
  }
  return -1;
}

}  // namespace

TEST_CASE("host_allocate: small blocks come from operator new, large ones are 2 MiB aligned") {
  void* small = gpurun::host_allocate(1000);
  REQUIRE(small != nullptr);
  gpurun::host_deallocate(small, 1000);
  void* zero = gpurun::host_allocate(0);
  REQUIRE(zero != nullptr);
  gpurun::host_deallocate(zero, 0);

  const std::size_t n = 3 * gpurun::kHugePageBytes + 12345;
  auto* big = static_cast<unsigned char*>(gpurun::host_allocate(n));
  REQUIRE(reinterpret_cast<std::uintptr_t>(big) % gpurun::kHugePageBytes == 0);
  for (std::size_t i = 0; i < n; i += 4096) REQUIRE(big[i] == 0);  // fresh mappings are zero
  big[0] = 1;
  big[n - 1] = 2;
  REQUIRE(big[n - 1] == 2);
  gpurun::host_deallocate(big, n);
}

TEST_CASE("HostVector: a large vector is backed by huge pages when the kernel offers them") {
  gpurun::HostVector<float> v(4 * gpurun::kHugePageBytes / sizeof(float), 1.0f);
  REQUIRE(v.back() == 1.0f);
  v.push_back(2.0f);  // reallocation copies through the allocator
  REQUIRE(v.back() == 2.0f);
  REQUIRE(v.front() == 1.0f);
  if (!gpurun::huge_pages_available()) {
    WARN("transparent huge pages are 'never' on this machine: only the fallback is checked");
    return;
  }
  // THP may still decline (fragmented memory), so at least one huge page, not all of them.
  CHECK(anon_huge_kb(v.data()) >= 2048);
}
