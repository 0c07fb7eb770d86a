// The MLP classifier and its optimizer behind one small interface, so the training loop is the
// same on a CPU rank (OpenBLAS sgemm) and a CUDA rank (cuBLAS + kernels, mlp_cuda.cu).
// An Engine owns the parameters, gradients and optimizer state on its device; it does not know
// about ranks: the loop all-reduces grads() between forward_backward() and step().
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace train {

// Layer widths: inputs, hidden..., classes. Parameters are one flat vector: for each layer,
// W (out x in, row-major) then b (out).
struct ModelShape {
  std::vector<int> widths;
  std::size_t num_params() const;
  std::size_t weight_offset(std::size_t layer) const;  // of W_layer in the flat vector
  std::size_t layers() const { return widths.size() - 1; }
  std::string str() const;  // "16-64-64-8"
};

struct OptimizerConfig {
  std::string kind = "sgd";  // sgd (with momentum, PyTorch semantics) | adam
  float momentum = 0.9f;
  float weight_decay = 0.0f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  int state_tensors() const { return kind == "adam" ? 2 : 1; }
  std::string str() const;
};

// Host copy of everything an optimizer step depends on.
struct TrainState {
  std::vector<float> params;
  std::vector<float> m;  // SGD momentum buffer, or Adam first moment
  std::vector<float> v;  // Adam second moment (empty for SGD)
  std::uint64_t step = 0;
};

struct BatchStats {
  double loss_sum = 0.0;  // summed cross-entropy
  std::int64_t correct = 0;
  std::int64_t count = 0;
  BatchStats& operator+=(const BatchStats& o) {
    loss_sum += o.loss_sum;
    correct += o.correct;
    count += o.count;
    return *this;
  }
};

// Kaiming-uniform weights, zero biases, from a splitmix64 stream: the same on every rank.
std::vector<float> init_params(const ModelShape& shape, std::uint64_t seed);

class Engine {
 public:
  virtual ~Engine() = default;

  virtual bool on_gpu() const = 0;
  virtual std::size_t num_params() const = 0;
  // Device pointers (host memory on a CPU engine): what the collectives operate on.
  virtual float* params() = 0;
  virtual float* grads() = 0;

  virtual void zero_grads() = 0;
  // Adds d(sum of per-sample losses)/d(params) over the n samples (host x: n x features, y: n)
  // to grads(). Returns loss and accuracy counts of this batch (computed before the update).
  virtual BatchStats forward_backward(const float* x, const std::int32_t* y, int n) = 0;
  virtual BatchStats evaluate(const float* x, const std::int32_t* y, int n) = 0;
  // grads *= grad_scale, then one optimizer update with learning rate lr; step count + 1.
  virtual void step(float grad_scale, float lr) = 0;

  virtual std::uint64_t step_count() const = 0;  // optimizer steps taken so far
  virtual TrainState state() const = 0;
  virtual void load_state(const TrainState& s) = 0;

  // For small collectives on a GPU rank (whose communicator wants device memory).
  virtual void* scratch(std::size_t bytes) = 0;
  virtual void to_device(void* dst, const void* src, std::size_t bytes) = 0;
  virtual void to_host(void* dst, const void* src, std::size_t bytes) = 0;
};

// threads: OpenBLAS threads for this process (1 = one core per rank, the honest baseline).
std::unique_ptr<Engine> make_cpu_engine(const ModelShape& shape, const OptimizerConfig& opt,
                                        std::uint64_t seed, int threads = 1);

// The CUDA engine (cuBLAS) is a module, libtrain_cuda_engine.so, that train loads only on a rank
// that uses a GPU: cuBLAS's library start-up alone costs ~0.4 s of CPU per process, which CPU ranks
// should not pay. tf32: allow TF32 tensor-core matmuls (--amp). Looks in `dirs` (default: next to
// the executable, then ../lib/gpurun for an installed tree); throws std::runtime_error naming
// every path tried and why each failed, with the fix (a build with CUDA, or --cpu).
std::unique_ptr<Engine> load_cuda_engine(int device, const ModelShape& shape,
                                         const OptimizerConfig& opt, std::uint64_t seed, bool tf32,
                                         std::vector<std::string> dirs = {});
// The module's one entry point (C linkage, versioned by name).
inline constexpr const char* kCudaEngineModule = "libtrain_cuda_engine.so";
inline constexpr const char* kCudaEngineSymbol = "train_create_cuda_engine_v1";
using CreateCudaEngineFn = Engine* (*)(int device, const ModelShape& shape,
                                       const OptimizerConfig& opt, std::uint64_t seed, bool tf32);

// Adam bias corrections for step t (1-based), shared by both engines.
inline double adam_correction(float beta, std::uint64_t t);

// FNV-1a over the bytes of a float vector: the bitwise identity of a parameter set.
std::uint64_t fnv1a(const void* data, std::size_t bytes, std::uint64_t h = 0xcbf29ce484222325ULL);

}  // namespace train

#include <cmath>
inline double train::adam_correction(float beta, std::uint64_t t) {
  return 1.0 - std::pow(static_cast<double>(beta), static_cast<double>(t));
}
