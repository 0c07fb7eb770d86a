// CUDA engine: cuBLAS sgemm for the matrix products (row-major data seen as column-major
// transposes), small kernels for bias, ReLU, softmax cross-entropy and the optimizers.
// --amp turns on TF32 tensor-core math for the matmuls (fp32 storage and accumulation).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "engine.h"
#include "softmax_xent.h"

namespace train {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA call ") + what + " failed (" +
                             cudaGetErrorString(e) + ")");
  }
}
void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    throw std::runtime_error(std::string("cuBLAS call ") + what + " failed (status " +
                             std::to_string(static_cast<int>(s)) + ")");
  }
}

constexpr int kThreads = 256;
unsigned blocks(std::size_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// z[i, c] = b[c] (then the gemm adds A W^T with beta = 1).
__global__ void fill_bias(float* z, const float* b, int n, int out) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i < static_cast<std::size_t>(n) * out) z[i] = b[i % out];
}
__global__ void relu(float* z, std::size_t n) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i < n && !(z[i] > 0.0f)) z[i] = 0.0f;
}
// delta = softmax(z) - onehot(y); per-sample loss and hit written for a host-side (ordered) sum.
__global__ void softmax_xent(const float* z, const int* y, float* delta, double* loss, int* hit,
                             int n, int C) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float* zi = z + static_cast<std::size_t>(i) * C;
  float* di = delta + static_cast<std::size_t>(i) * C;
  softmax_xent_row(zi, y[i], C, di, &loss[i], &hit[i]);
}
// db[c] += sum_i delta[i, c], one thread per column, rows in order (deterministic).
__global__ void bias_grad(const float* delta, float* db, int n, int out) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= out) return;
  float acc = db[c];
  for (int i = 0; i < n; ++i) acc += delta[static_cast<std::size_t>(i) * out + c];
  db[c] = acc;
}
__global__ void relu_backward(float* d, const float* a, std::size_t n) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i < n && !(a[i] > 0.0f)) d[i] = 0.0f;
}
__global__ void sgd(float* p, const float* g, float* m, std::size_t n, float scale, float lr,
                    float mu, float wd) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float gi = g[i] * scale + wd * p[i];
  m[i] = mu * m[i] + gi;
  p[i] -= lr * m[i];
}
__global__ void adam(float* p, const float* g, float* m, float* v, std::size_t n, float scale,
                     float lr, float b1, float b2, float eps, float wd, float c1, float c2) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float gi = g[i] * scale + wd * p[i];
  m[i] = b1 * m[i] + (1.0f - b1) * gi;
  v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
  p[i] -= lr * (m[i] / c1) / (sqrtf(v[i] / c2) + eps);
}

template <typename T>
struct DeviceVec {
  T* ptr = nullptr;
  std::size_t n = 0;
  DeviceVec() = default;
  DeviceVec(const DeviceVec&) = delete;
  DeviceVec& operator=(const DeviceVec&) = delete;
  DeviceVec(DeviceVec&& o) noexcept : ptr(o.ptr), n(o.n) {
    o.ptr = nullptr;
    o.n = 0;
  }
  ~DeviceVec() { cudaFree(ptr); }
  void resize(std::size_t count) {
    if (count <= n) return;
    cudaFree(ptr);
    ptr = nullptr;
    check(cudaMalloc(&ptr, std::max<std::size_t>(count, 1) * sizeof(T)), "cudaMalloc");
    n = count;
  }
};

class CudaEngine final : public Engine {
 public:
  CudaEngine(int device, const ModelShape& shape, const OptimizerConfig& opt, std::uint64_t seed,
             bool tf32)
      : shape_(shape), opt_(opt) {
    check(cudaSetDevice(device), "cudaSetDevice");
    check(cublasCreate(&blas_), "cublasCreate");
    check(cublasSetMathMode(blas_, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
          "cublasSetMathMode");
    const std::size_t n = shape.num_params();
    params_.resize(n);
    grads_.resize(n);
    m_.resize(n);
    if (opt_.kind == "adam") v_.resize(n);
    TrainState s;
    s.params = init_params(shape, seed);
    s.m.assign(n, 0.0f);
    if (opt_.kind == "adam") s.v.assign(n, 0.0f);
    load_state(s);
    acts_.resize(shape.layers() + 1);
  }
  ~CudaEngine() override { cublasDestroy(blas_); }

  bool on_gpu() const override { return true; }
  std::size_t num_params() const override { return shape_.num_params(); }
  float* params() override { return params_.ptr; }
  float* grads() override { return grads_.ptr; }
  void zero_grads() override {
    check(cudaMemset(grads_.ptr, 0, num_params() * sizeof(float)), "cudaMemset");
  }
  BatchStats forward_backward(const float* x, const std::int32_t* y, int n) override {
    return run(x, y, n, true);
  }
  BatchStats evaluate(const float* x, const std::int32_t* y, int n) override {
    return run(x, y, n, false);
  }

  void step(float grad_scale, float lr) override {
    ++step_;
    const std::size_t n = num_params();
    if (opt_.kind == "adam") {
      adam<<<blocks(n), kThreads>>>(params_.ptr, grads_.ptr, m_.ptr, v_.ptr, n, grad_scale, lr,
                                    opt_.beta1, opt_.beta2, opt_.eps, opt_.weight_decay,
                                    static_cast<float>(adam_correction(opt_.beta1, step_)),
                                    static_cast<float>(adam_correction(opt_.beta2, step_)));
    } else {
      sgd<<<blocks(n), kThreads>>>(params_.ptr, grads_.ptr, m_.ptr, n, grad_scale, lr,
                                   opt_.momentum, opt_.weight_decay);
    }
    check(cudaGetLastError(), "optimizer kernel");
  }

  std::uint64_t step_count() const override { return step_; }
  TrainState state() const override {
    TrainState s;
    const std::size_t n = shape_.num_params();
    s.params.resize(n);
    s.m.resize(n);
    check(cudaMemcpy(s.params.data(), params_.ptr, n * sizeof(float), cudaMemcpyDeviceToHost),
          "cudaMemcpy");
    check(cudaMemcpy(s.m.data(), m_.ptr, n * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
    if (opt_.kind == "adam") {
      s.v.resize(n);
      check(cudaMemcpy(s.v.data(), v_.ptr, n * sizeof(float), cudaMemcpyDeviceToHost),
            "cudaMemcpy");
    }
    s.step = step_;
    return s;
  }
  void load_state(const TrainState& s) override {
    const std::size_t n = shape_.num_params();
    if (s.params.size() != n || s.m.size() != n || s.v.size() != (opt_.kind == "adam" ? n : 0)) {
      throw std::runtime_error("checkpoint tensors do not match this model");
    }
    check(cudaMemcpy(params_.ptr, s.params.data(), n * sizeof(float), cudaMemcpyHostToDevice),
          "cudaMemcpy");
    check(cudaMemcpy(m_.ptr, s.m.data(), n * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
    if (!s.v.empty()) {
      check(cudaMemcpy(v_.ptr, s.v.data(), n * sizeof(float), cudaMemcpyHostToDevice),
            "cudaMemcpy");
    }
    step_ = s.step;
  }

  void* scratch(std::size_t bytes) override {
    scratch_.resize(bytes);
    return scratch_.ptr;
  }
  void to_device(void* dst, const void* src, std::size_t bytes) override {
    check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  void to_host(void* dst, const void* src, std::size_t bytes) override {
    check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
  }

 private:
  BatchStats run(const float* x_host, const std::int32_t* y_host, int n, bool backward) {
    const std::size_t L = shape_.layers();
    const int F = shape_.widths[0];
    const int C = shape_.widths.back();
    x_.resize(static_cast<std::size_t>(n) * F);
    y_.resize(static_cast<std::size_t>(n));
    check(cudaMemcpy(x_.ptr, x_host, static_cast<std::size_t>(n) * F * sizeof(float),
                     cudaMemcpyHostToDevice),
          "cudaMemcpy x");
    check(cudaMemcpy(y_.ptr, y_host, static_cast<std::size_t>(n) * sizeof(int),
                     cudaMemcpyHostToDevice),
          "cudaMemcpy y");
    const float one = 1.0f, zero = 0.0f;
    const float* in = x_.ptr;
    std::size_t widest = 0;
    for (int w : shape_.widths) widest = std::max<std::size_t>(widest, static_cast<std::size_t>(w));
    for (std::size_t l = 0; l < L; ++l) {
      const int fin = shape_.widths[l], fout = shape_.widths[l + 1];
      const float* W = params_.ptr + shape_.weight_offset(l);
      const float* b = W + static_cast<std::size_t>(fin) * fout;
      auto& z = acts_[l + 1];
      z.resize(static_cast<std::size_t>(n) * fout);
      fill_bias<<<blocks(static_cast<std::size_t>(n) * fout), kThreads>>>(z.ptr, b, n, fout);
      // Z^T (fout x n) = W (as col-major W^T, op T) * A^T (col-major fin x n).
      check(cublasSgemm(blas_, CUBLAS_OP_T, CUBLAS_OP_N, fout, n, fin, &one, W, fin, in, fin, &one,
                        z.ptr, fout),
            "cublasSgemm forward");
      if (l + 1 < L) relu<<<blocks(z.n), kThreads>>>(z.ptr, static_cast<std::size_t>(n) * fout);
      in = z.ptr;
    }
    delta_.resize(static_cast<std::size_t>(n) * widest);
    prev_.resize(static_cast<std::size_t>(n) * widest);
    loss_.resize(static_cast<std::size_t>(n));
    hit_.resize(static_cast<std::size_t>(n));
    softmax_xent<<<blocks(static_cast<std::size_t>(n)), kThreads>>>(
        acts_[L].ptr, y_.ptr, delta_.ptr, loss_.ptr, hit_.ptr, n, C);
    check(cudaGetLastError(), "forward kernels");
    std::vector<double> loss(static_cast<std::size_t>(n));
    std::vector<int> hit(static_cast<std::size_t>(n));
    check(cudaMemcpy(loss.data(), loss_.ptr, loss.size() * sizeof(double), cudaMemcpyDeviceToHost),
          "cudaMemcpy loss");
    check(cudaMemcpy(hit.data(), hit_.ptr, hit.size() * sizeof(int), cudaMemcpyDeviceToHost),
          "cudaMemcpy hit");
    BatchStats st;
    st.count = n;
    for (int i = 0; i < n; ++i) {
      st.loss_sum += loss[static_cast<std::size_t>(i)];
      st.correct += hit[static_cast<std::size_t>(i)];
    }
    if (!backward) return st;
    float* delta = delta_.ptr;
    float* prev = prev_.ptr;
    for (std::size_t l = L; l-- > 0;) {
      const int fin = shape_.widths[l], fout = shape_.widths[l + 1];
      const float* W = params_.ptr + shape_.weight_offset(l);
      float* dW = grads_.ptr + shape_.weight_offset(l);
      float* db = dW + static_cast<std::size_t>(fin) * fout;
      const float* a_prev = l == 0 ? x_.ptr : acts_[l].ptr;
      // dW^T (fin x fout, col-major) += A^T (fin x n) * dZ (n x fout, op T of col-major dZ^T).
      check(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_T, fin, fout, n, &one, a_prev, fin, delta,
                        fout, &one, dW, fin),
            "cublasSgemm dW");
      bias_grad<<<blocks(static_cast<std::size_t>(fout)), kThreads>>>(delta, db, n, fout);
      if (l == 0) break;
      // dA^T (fin x n) = W^T (col-major fin x fout) * dZ^T (fout x n).
      check(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, fin, n, fout, &one, W, fin, delta, fout,
                        &zero, prev, fin),
            "cublasSgemm dA");
      relu_backward<<<blocks(static_cast<std::size_t>(n) * fin), kThreads>>>(
          prev, acts_[l].ptr, static_cast<std::size_t>(n) * fin);
      std::swap(delta, prev);
    }
    check(cudaGetLastError(), "backward kernels");
    return st;
  }

  ModelShape shape_;
  OptimizerConfig opt_;
  cublasHandle_t blas_ = nullptr;
  DeviceVec<float> params_, grads_, m_, v_, x_, delta_, prev_;
  DeviceVec<int> y_, hit_;
  DeviceVec<double> loss_;
  DeviceVec<unsigned char> scratch_;
  std::vector<DeviceVec<float>> acts_;
  std::uint64_t step_ = 0;
};

}  // namespace

}  // namespace train

// The module's entry point (see load_cuda_engine); the caller owns the engine.
extern "C" __attribute__((visibility("default"))) train::Engine* train_create_cuda_engine_v1(
    int device, const train::ModelShape& shape, const train::OptimizerConfig& opt,
    std::uint64_t seed, bool tf32) {
  return new train::CudaEngine(device, shape, opt, seed, tf32);
}
static_assert(std::is_same_v<decltype(&train_create_cuda_engine_v1), train::CreateCudaEngineFn>,
              "the entry point must match what load_cuda_engine looks up");
