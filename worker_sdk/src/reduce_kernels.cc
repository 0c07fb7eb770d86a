#include "reduce_kernels.h"

namespace gpurun::worker::detail {
namespace {

struct Sum {
  template <typename T>
  static T apply(T x, T y) {
    return static_cast<T>(x + y);
  }
};
struct Max {
  template <typename T>
  static T apply(T x, T y) {
    return x < y ? y : x;
  }
};
struct Min {
  template <typename T>
  static T apply(T x, T y) {
    return y < x ? y : x;
  }
};

// Separate loops for the aliasing cases so each one can be vectorized without runtime checks.
template <typename T, typename Op>
void kernel(void* c_, const void* a_, const void* b_, std::size_t n) {
  if (c_ == a_) {
    T* __restrict c = static_cast<T*>(c_);
    const T* __restrict b = static_cast<const T*>(b_);
    for (std::size_t i = 0; i < n; ++i) c[i] = Op::apply(c[i], b[i]);
  } else if (c_ == b_) {
    T* __restrict c = static_cast<T*>(c_);
    const T* __restrict a = static_cast<const T*>(a_);
    for (std::size_t i = 0; i < n; ++i) c[i] = Op::apply(a[i], c[i]);
  } else {
    T* __restrict c = static_cast<T*>(c_);
    const T* __restrict a = static_cast<const T*>(a_);
    const T* __restrict b = static_cast<const T*>(b_);
    for (std::size_t i = 0; i < n; ++i) c[i] = Op::apply(a[i], b[i]);
  }
}

}  // namespace

template <typename T>
ReduceKernel sum_kernel() {
  return &kernel<T, Sum>;
}
template <typename T>
ReduceKernel max_kernel() {
  return &kernel<T, Max>;
}
template <typename T>
ReduceKernel min_kernel() {
  return &kernel<T, Min>;
}

#define GPURUN_INSTANTIATE(T)            \
  template ReduceKernel sum_kernel<T>(); \
  template ReduceKernel max_kernel<T>(); \
  template ReduceKernel min_kernel<T>();
GPURUN_INSTANTIATE(float)
GPURUN_INSTANTIATE(double)
GPURUN_INSTANTIATE(std::int32_t)
GPURUN_INSTANTIATE(std::int64_t)
GPURUN_INSTANTIATE(std::uint8_t)
GPURUN_INSTANTIATE(std::uint64_t)
#undef GPURUN_INSTANTIATE

}  // namespace gpurun::worker::detail
