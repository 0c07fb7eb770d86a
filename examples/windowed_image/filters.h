// The per-window operation: `passes` separable 5-tap binomial (Gaussian, sigma ~1) blurs followed
// by the Sobel gradient magnitude, per channel, clamp-to-edge at the window border. The CPU path
// is plain loops over contiguous padded rows (auto-vectorised at -O3); filters_cuda.cu does the
// same arithmetic in the same order with FMA contraction off, so both give the same floats.
#pragma once

#include <cstddef>
#include <vector>

namespace windowed_image {

// Binomial weights 1 4 6 4 1 / 16: exact in binary floating point.
inline constexpr float kBlurW0 = 1.0f / 16.0f;
inline constexpr float kBlurW1 = 4.0f / 16.0f;
inline constexpr float kBlurW2 = 6.0f / 16.0f;

struct FilterOptions {
  int blur_passes = 1;  // >= 0; more passes = stronger smoothing (and more work, for benchmarks)
};

// Reusable scratch memory for blur_sobel_cpu (one per thread).
struct FilterWorkspace {
  std::vector<float> a, b;
};

// in: `channels` planes of height x width floats (CHW). out: same shape, edge magnitude >= 0.
// Deterministic: the same input gives the same bits on every call and every process.
void blur_sobel_cpu(const float* in, float* out, int channels, int height, int width,
                    const FilterOptions& opt, FilterWorkspace& ws);

}  // namespace windowed_image
