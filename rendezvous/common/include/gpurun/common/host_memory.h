// Host memory for large buffers (images, datasets, collective staging), backed by transparent huge
// pages where the kernel offers them.
//
// Why: the first touch of every 4 KiB page is a page fault. On virtual machines a fault costs
// 5-15 us, so filling a fresh 10 MB buffer spends ~30 ms in the kernel before any work is done —
// on every rank, on the critical path of a short job. Asking for 2 MiB pages (madvise
// MADV_HUGEPAGE, honoured when /sys/kernel/mm/transparent_hugepage/enabled is "always" or
// "madvise") turns ~2,400 faults into 5. PyTorch's CPU allocator does the same for large tensors.
//
// Allocations of at least kHugePageMinBytes are mmap'ed 2 MiB-aligned, their length rounded up
// to whole 2 MiB pages, advised, and populated in one call (MADV_POPULATE_WRITE: the containers
// touch every element anyway); smaller ones come from operator new. Where huge pages are
// unavailable (THP "never", or madvise refused) the mapping still works as ordinary memory.
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace gpurun {

inline constexpr std::size_t kHugePageBytes = std::size_t{2} << 20;
// From 1 MiB up, rounding to one 2 MiB page wastes at most half the mapping and saves hundreds of
// faults; below that operator new is cheaper.
inline constexpr std::size_t kHugePageMinBytes = std::size_t{1} << 20;

// Throws std::bad_alloc on failure. bytes == 0 returns a unique non-null pointer.
void* host_allocate(std::size_t bytes);
// `bytes` must be what was passed to host_allocate.
void host_deallocate(void* p, std::size_t bytes) noexcept;
// Whether a mapping of `bytes` would be advised for huge pages on this machine (THP not "never").
bool huge_pages_available();

// A std::allocator for containers holding large host buffers (std::vector<T, HostAllocator<T>>).
template <typename T>
struct HostAllocator {
  using value_type = T;
  HostAllocator() noexcept = default;
  template <typename U>
  HostAllocator(const HostAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)
  T* allocate(std::size_t n) {
    if (n > static_cast<std::size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(host_allocate(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept { host_deallocate(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const HostAllocator<U>&) const noexcept {
    return true;
  }
};

template <typename T>
using HostVector = std::vector<T, HostAllocator<T>>;

}  // namespace gpurun
