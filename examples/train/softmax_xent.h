// One sample's softmax cross-entropy on its logits, written once for the CPU engine and the CUDA
// kernel: delta = softmax(z) - onehot(label), the loss -log softmax(z)[label], and whether the
// arg-max is the label. Sums in double, in class order, so both engines agree bit for bit on the
// loss.
#pragma once

#include <cmath>

#ifdef __CUDACC__
#define GPURUN_HOST_DEVICE __host__ __device__
#else
#define GPURUN_HOST_DEVICE
#endif

namespace train {

GPURUN_HOST_DEVICE inline void softmax_xent_row(const float* z, int label, int classes,
                                                float* delta, double* loss, int* hit) {
  int arg = 0;
  float mx = z[0];
  for (int c = 1; c < classes; ++c) {
    if (z[c] > mx) {
      mx = z[c];
      arg = c;
    }
  }
  double sum = 0.0;
  for (int c = 0; c < classes; ++c) sum += exp(static_cast<double>(z[c] - mx));
  *loss = log(sum) - static_cast<double>(z[label] - mx);
  *hit = arg == label ? 1 : 0;
  for (int c = 0; c < classes; ++c) {
    delta[c] =
        static_cast<float>(exp(static_cast<double>(z[c] - mx)) / sum) - (c == label ? 1.0f : 0.0f);
  }
}

}  // namespace train
