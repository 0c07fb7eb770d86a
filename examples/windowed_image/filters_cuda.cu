#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "filters_cuda.h"

namespace windowed_image {
namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA call ") + what + " failed (" +
                             cudaGetErrorString(err) + ")");
  }
}

__device__ __forceinline__ int clampi(int v, int hi) { return v < 0 ? 0 : (v > hi ? hi : v); }

// The 5-tap binomial blur at position i of a line whose samples are `stride` apart, edges clamped.
__device__ __forceinline__ float blur5(const float* line, int i, int hi, int stride) {
  return kBlurW0 * line[clampi(i - 2, hi) * stride] + kBlurW1 * line[clampi(i - 1, hi) * stride] +
         kBlurW2 * line[i * stride] + kBlurW1 * line[clampi(i + 1, hi) * stride] +
         kBlurW0 * line[clampi(i + 2, hi) * stride];
}

// One thread per pixel of a plane; blockIdx.z walks the planes (window * channel). `vertical`
// blurs along columns, else along rows.
template <bool vertical>
__global__ void blur(const float* __restrict__ src, float* __restrict__ dst, int n) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= n || y >= n) return;
  const float* plane = src + static_cast<size_t>(blockIdx.z) * n * n;
  dst[(static_cast<size_t>(blockIdx.z) * n + y) * n + x] =
      vertical ? blur5(plane + x, y, n - 1, n)
               : blur5(plane + static_cast<size_t>(y) * n, x, n - 1, 1);
}

__global__ void sobel(const float* __restrict__ src, float* __restrict__ dst, int n) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= n || y >= n) return;
  const float* p = src + static_cast<size_t>(blockIdx.z) * n * n;
  const int hi = n - 1;
  const float* a = p + clampi(y - 1, hi) * n;
  const float* b = p + y * n;
  const float* c = p + clampi(y + 1, hi) * n;
  const int xl = clampi(x - 1, hi), xr = clampi(x + 1, hi);
  const float gx = (a[xr] - a[xl]) + 2.0f * (b[xr] - b[xl]) + (c[xr] - c[xl]);
  const float gy = (c[xl] + 2.0f * c[x] + c[xr]) - (a[xl] + 2.0f * a[x] + a[xr]);
  dst[(static_cast<size_t>(blockIdx.z) * n + y) * n + x] = sqrtf(gx * gx + gy * gy);
}

// Device buffers kept across calls (one process = one device).
struct Buffers {
  float* a = nullptr;
  float* b = nullptr;
  size_t elems = 0;
  ~Buffers() {
    cudaFree(a);
    cudaFree(b);
  }
  void reserve(size_t n) {
    if (n <= elems) return;
    cudaFree(a);
    cudaFree(b);
    a = b = nullptr;
    check(cudaMalloc(&a, n * sizeof(float)), "cudaMalloc");
    check(cudaMalloc(&b, n * sizeof(float)), "cudaMalloc");
    elems = n;
  }
};

}  // namespace

void blur_sobel_cuda(int device, const float* in, float* out, std::size_t count, int channels,
                     int n, const FilterOptions& opt) {
  static Buffers buf;
  check(cudaSetDevice(device), "cudaSetDevice");
  const size_t planes = count * static_cast<size_t>(channels);
  const size_t elems = planes * n * n;
  buf.reserve(elems);
  check(cudaMemcpy(buf.a, in, elems * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  const dim3 block(32, 8);
  const dim3 grid((n + block.x - 1) / block.x, (n + block.y - 1) / block.y,
                  static_cast<unsigned>(planes));
  for (int i = 0; i < opt.blur_passes; ++i) {
    blur<false><<<grid, block>>>(buf.a, buf.b, n);
    blur<true><<<grid, block>>>(buf.b, buf.a, n);
  }
  sobel<<<grid, block>>>(buf.a, buf.b, n);
  check(cudaGetLastError(), "kernel launch");
  check(cudaMemcpy(out, buf.b, elems * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
}

}  // namespace windowed_image
