// CUDA path of the per-window filter (compiled only when the build has CUDA: GPURUN_HAS_CUDA).
// Plain C++ interface: no CUDA headers leak to callers.
#pragma once

#include <cstddef>

#include "filters.h"

namespace windowed_image {

// Filters `count` windows (each `channels` x n x n floats, CHW, back to back) on CUDA device
// `device`: host in -> device -> blur passes + Sobel -> host out. Same arithmetic, same order as
// blur_sobel_cpu, compiled with --fmad=false, so the floats match the CPU path.
// Throws std::runtime_error naming the failing CUDA call.
void blur_sobel_cuda(int device, const float* in, float* out, std::size_t count, int channels,
                     int n, const FilterOptions& opt);

}  // namespace windowed_image
