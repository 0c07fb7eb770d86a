// Element-wise reductions Gloo calls during allreduce: c[i] = op(a[i], b[i]) where c may alias a
// or b. Compiled with -O3 (see CMakeLists.txt) so the loops vectorize; this is the hot loop of
// every CPU all_reduce.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gpurun::worker::detail {

using ReduceKernel = void (*)(void* c, const void* a, const void* b, std::size_t n);

template <typename T>
ReduceKernel sum_kernel();
template <typename T>
ReduceKernel max_kernel();
template <typename T>
ReduceKernel min_kernel();

}  // namespace gpurun::worker::detail
