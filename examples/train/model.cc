// The model and optimizer definitions both engines share (shape arithmetic, initial parameters,
// checksums). No BLAS and no CUDA here: the CPU engine and the CUDA engine module both link it.
#include <fmt/format.h>

#include <cmath>

#include "engine.h"

namespace train {

std::size_t ModelShape::num_params() const {
  std::size_t n = 0;
  for (std::size_t l = 0; l + 1 < widths.size(); ++l) {
    n += static_cast<std::size_t>(widths[l + 1]) * (static_cast<std::size_t>(widths[l]) + 1);
  }
  return n;
}

std::size_t ModelShape::weight_offset(std::size_t layer) const {
  std::size_t n = 0;
  for (std::size_t l = 0; l < layer; ++l) {
    n += static_cast<std::size_t>(widths[l + 1]) * (static_cast<std::size_t>(widths[l]) + 1);
  }
  return n;
}

std::string ModelShape::str() const {
  std::string s;
  for (std::size_t i = 0; i < widths.size(); ++i) {
    if (i) s += '-';
    s += std::to_string(widths[i]);
  }
  return s;
}

std::string OptimizerConfig::str() const {
  if (kind == "adam") {
    return fmt::format("adam(beta1 {}, beta2 {}, eps {}, weight decay {})", beta1, beta2, eps,
                       weight_decay);
  }
  return fmt::format("sgd(momentum {}, weight decay {})", momentum, weight_decay);
}

std::uint64_t fnv1a(const void* data, std::size_t bytes, std::uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::vector<float> init_params(const ModelShape& shape, std::uint64_t seed) {
  std::vector<float> p(shape.num_params(), 0.0f);
  std::uint64_t state = seed ^ 0x5eedULL;
  auto next = [&state] {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  for (std::size_t l = 0; l < shape.layers(); ++l) {
    const int in = shape.widths[l], out = shape.widths[l + 1];
    const double bound = std::sqrt(6.0 / in);  // Kaiming uniform for ReLU
    float* w = p.data() + shape.weight_offset(l);
    for (std::size_t i = 0; i < static_cast<std::size_t>(in) * out; ++i) {
      const double u = static_cast<double>(next() >> 11) * 0x1.0p-53;
      w[i] = static_cast<float>((2.0 * u - 1.0) * bound);
    }
  }
  return p;
}

}  // namespace train
