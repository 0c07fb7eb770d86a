// CPU engine: OpenBLAS cblas_sgemm for the three matrix products of each layer, plain loops for
// bias, ReLU, softmax and the optimizer. Deterministic for a fixed thread count.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "engine.h"
#include "softmax_xent.h"

namespace train {

namespace {

class CpuEngine final : public Engine {
 public:
  CpuEngine(const ModelShape& shape, const OptimizerConfig& opt, std::uint64_t seed, int threads)
      : shape_(shape), opt_(opt) {
    openblas_set_num_threads(threads);
    st_.params = init_params(shape, seed);
    st_.m.assign(st_.params.size(), 0.0f);
    if (opt_.kind == "adam") st_.v.assign(st_.params.size(), 0.0f);
    grads_.assign(st_.params.size(), 0.0f);
  }

  bool on_gpu() const override { return false; }
  std::size_t num_params() const override { return st_.params.size(); }
  float* params() override { return st_.params.data(); }
  float* grads() override { return grads_.data(); }
  void zero_grads() override { std::fill(grads_.begin(), grads_.end(), 0.0f); }

  BatchStats forward_backward(const float* x, const std::int32_t* y, int n) override {
    return run(x, y, n, true);
  }
  BatchStats evaluate(const float* x, const std::int32_t* y, int n) override {
    return run(x, y, n, false);
  }

  void step(float grad_scale, float lr) override {
    ++st_.step;
    const std::size_t n = st_.params.size();
    float* p = st_.params.data();
    float* g = grads_.data();
    float* m = st_.m.data();
    const float wd = opt_.weight_decay;
    if (opt_.kind == "adam") {
      float* v = st_.v.data();
      const float b1 = opt_.beta1, b2 = opt_.beta2, eps = opt_.eps;
      const auto c1 = static_cast<float>(adam_correction(b1, st_.step));
      const auto c2 = static_cast<float>(adam_correction(b2, st_.step));
      for (std::size_t i = 0; i < n; ++i) {
        const float gi = g[i] * grad_scale + wd * p[i];
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        p[i] -= lr * (m[i] / c1) / (std::sqrt(v[i] / c2) + eps);
      }
    } else {
      const float mu = opt_.momentum;
      for (std::size_t i = 0; i < n; ++i) {
        const float gi = g[i] * grad_scale + wd * p[i];
        m[i] = mu * m[i] + gi;
        p[i] -= lr * m[i];
      }
    }
  }

  std::uint64_t step_count() const override { return st_.step; }
  TrainState state() const override { return st_; }
  void load_state(const TrainState& s) override {
    if (s.params.size() != st_.params.size() || s.m.size() != st_.m.size() ||
        s.v.size() != st_.v.size()) {
      throw std::runtime_error("checkpoint tensors do not match this model");
    }
    st_ = s;
  }

  void* scratch(std::size_t bytes) override {
    scratch_.resize(bytes);
    return scratch_.data();
  }
  void to_device(void* dst, const void* src, std::size_t bytes) override {
    if (dst != src) std::memmove(dst, src, bytes);
  }
  void to_host(void* dst, const void* src, std::size_t bytes) override {
    if (dst != src) std::memmove(dst, src, bytes);
  }

 private:
  BatchStats run(const float* x, const std::int32_t* y, int n, bool backward) {
    const std::size_t L = shape_.layers();
    acts_.resize(L + 1);
    const float* in = x;
    // Forward: Z_l = A_{l-1} W_l^T + b_l, A_l = relu(Z_l) (kept in acts_[l+1]; logits last).
    for (std::size_t l = 0; l < L; ++l) {
      const int fin = shape_.widths[l], fout = shape_.widths[l + 1];
      const float* W = st_.params.data() + shape_.weight_offset(l);
      const float* b = W + static_cast<std::size_t>(fin) * fout;
      auto& z = acts_[l + 1];
      z.resize(static_cast<std::size_t>(n) * fout);
      for (int i = 0; i < n; ++i)
        std::memcpy(z.data() + static_cast<std::size_t>(i) * fout, b,
                    sizeof(float) * static_cast<std::size_t>(fout));
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, fout, fin, 1.0f, in, fin, W, fin,
                  1.0f, z.data(), fout);
      if (l + 1 < L) {
        for (auto& v : z) v = v > 0.0f ? v : 0.0f;
      }
      in = z.data();
    }
    // Softmax cross-entropy on the logits; dZ = softmax - onehot (per sample, not averaged).
    const int C = shape_.widths.back();
    auto& logits = acts_[L];
    BatchStats stats;
    stats.count = n;
    delta_.resize(logits.size());
    for (int i = 0; i < n; ++i) {
      const float* zi = logits.data() + static_cast<std::size_t>(i) * C;
      float* di = delta_.data() + static_cast<std::size_t>(i) * C;
      double loss = 0.0;
      int hit = 0;
      softmax_xent_row(zi, y[i], C, di, &loss, &hit);
      stats.loss_sum += loss;
      stats.correct += hit;
    }
    if (!backward) return stats;
    // Backward, last layer first: dW += dZ^T A_{l-1}; db += colsum(dZ); dA = dZ W; dZ *= relu'.
    for (std::size_t l = L; l-- > 0;) {
      const int fin = shape_.widths[l], fout = shape_.widths[l + 1];
      const float* W = st_.params.data() + shape_.weight_offset(l);
      float* dW = grads_.data() + shape_.weight_offset(l);
      float* db = dW + static_cast<std::size_t>(fin) * fout;
      const float* a_prev = l == 0 ? x : acts_[l].data();
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, fout, fin, n, 1.0f, delta_.data(), fout,
                  a_prev, fin, 1.0f, dW, fin);
      for (int i = 0; i < n; ++i) {
        const float* di = delta_.data() + static_cast<std::size_t>(i) * fout;
        for (int c = 0; c < fout; ++c) db[c] += di[c];
      }
      if (l == 0) break;
      prev_delta_.resize(static_cast<std::size_t>(n) * fin);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, fin, fout, 1.0f, delta_.data(),
                  fout, W, fin, 0.0f, prev_delta_.data(), fin);
      const auto& a = acts_[l];  // post-ReLU: a > 0 exactly where z > 0
      for (std::size_t k = 0; k < prev_delta_.size(); ++k) {
        if (!(a[k] > 0.0f)) prev_delta_[k] = 0.0f;
      }
      delta_.swap(prev_delta_);
    }
    return stats;
  }

  ModelShape shape_;
  OptimizerConfig opt_;
  TrainState st_;
  std::vector<float> grads_;
  std::vector<std::vector<float>> acts_;
  std::vector<float> delta_, prev_delta_;
  std::vector<unsigned char> scratch_;
};

}  // namespace

std::unique_ptr<Engine> make_cpu_engine(const ModelShape& shape, const OptimizerConfig& opt,
                                        std::uint64_t seed, int threads) {
  return std::make_unique<CpuEngine>(shape, opt, seed, threads);
}

}  // namespace train
