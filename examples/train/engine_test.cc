#include "engine.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "dataset.h"

using namespace train;

namespace {

ModelShape small_shape() {
  ModelShape s;
  s.widths = {5, 7, 6, 3};
  return s;
}

struct Batch {
  std::vector<float> x;
  std::vector<std::int32_t> y;
};

Batch random_batch(int n, int f, int classes, std::uint64_t seed) {
  SplitMix64 rng(seed);
  Batch b;
  for (int i = 0; i < n * f; ++i) b.x.push_back(static_cast<float>(rng.normal()));
  for (int i = 0; i < n; ++i)
    b.y.push_back(static_cast<std::int32_t>(rng.next() % static_cast<std::uint64_t>(classes)));
  return b;
}

}  // namespace

TEST_CASE("ModelShape layout", "[engine]") {
  const ModelShape s = small_shape();
  CHECK(s.num_params() == 7u * 6 + 6 * 8 + 3 * 7);
  CHECK(s.weight_offset(0) == 0);
  CHECK(s.weight_offset(1) == 42);
  CHECK(s.weight_offset(2) == 90);
  CHECK(s.str() == "5-7-6-3");
}

TEST_CASE("backward matches central finite differences of the loss", "[engine]") {
  const ModelShape shape = small_shape();
  OptimizerConfig oc;
  auto eng = make_cpu_engine(shape, oc, 7);
  // Non-zero biases so every parameter has a visible effect.
  TrainState st = eng->state();
  SplitMix64 rng(3);
  for (auto& p : st.params) p += static_cast<float>(0.1 * rng.normal());
  eng->load_state(st);
  const Batch b = random_batch(6, 5, 3, 11);
  eng->zero_grads();
  eng->forward_backward(b.x.data(), b.y.data(), 6);
  const std::vector<float> grad(eng->grads(), eng->grads() + eng->num_params());

  const float h = 1e-3f;
  std::size_t checked = 0, bad = 0;
  for (std::size_t i = 0; i < st.params.size(); ++i) {
    TrainState plus = st, minus = st;
    plus.params[i] += h;
    minus.params[i] -= h;
    eng->load_state(plus);
    const double lp = eng->evaluate(b.x.data(), b.y.data(), 6).loss_sum;
    eng->load_state(minus);
    const double lm = eng->evaluate(b.x.data(), b.y.data(), 6).loss_sum;
    const double fd = (lp - lm) / (2.0 * h);
    ++checked;
    // A ReLU kink inside [-h, h] breaks the finite difference for that one parameter.
    if (std::abs(fd - grad[i]) > 2e-3 + 2e-2 * std::abs(fd)) {
      ++bad;
      UNSCOPED_INFO("param " << i << ": backward " << grad[i] << ", finite difference " << fd);
    }
  }
  CHECK(checked == shape.num_params());
  CHECK(bad <= 1);
}

TEST_CASE("gradients accumulate: two half batches equal one batch", "[engine]") {
  const ModelShape shape = small_shape();
  auto a = make_cpu_engine(shape, {}, 1);
  auto b = make_cpu_engine(shape, {}, 1);
  const Batch bt = random_batch(8, 5, 3, 5);
  a->zero_grads();
  a->forward_backward(bt.x.data(), bt.y.data(), 8);
  b->zero_grads();
  b->forward_backward(bt.x.data(), bt.y.data(), 4);
  b->forward_backward(bt.x.data() + 4 * 5, bt.y.data() + 4, 4);
  for (std::size_t i = 0; i < shape.num_params(); ++i) {
    REQUIRE(a->grads()[i] == Approx(b->grads()[i]).margin(1e-5));
  }
}

TEST_CASE("SGD with momentum follows PyTorch's update rule", "[engine]") {
  ModelShape shape;
  shape.widths = {2, 2};
  OptimizerConfig oc;
  oc.momentum = 0.5f;
  auto e = make_cpu_engine(shape, oc, 1);
  const TrainState s0 = e->state();
  std::vector<float> g(e->num_params());
  for (std::size_t i = 0; i < g.size(); ++i) g[i] = static_cast<float>(i) - 2.0f;
  std::memcpy(e->grads(), g.data(), g.size() * sizeof(float));
  e->step(0.5f, 0.1f);  // effective gradient g/2
  std::memcpy(e->grads(), g.data(), g.size() * sizeof(float));
  e->step(0.5f, 0.1f);
  const TrainState s2 = e->state();
  CHECK(s2.step == 2);
  for (std::size_t i = 0; i < g.size(); ++i) {
    const float gi = g[i] * 0.5f;
    const float buf = 0.5f * gi + gi;
    CHECK(s2.params[i] == Approx(s0.params[i] - 0.1f * gi - 0.1f * buf));
  }
}

TEST_CASE("Adam's first step moves each parameter by about lr against the gradient sign",
          "[engine]") {
  ModelShape shape;
  shape.widths = {3, 2};
  OptimizerConfig oc;
  oc.kind = "adam";
  auto e = make_cpu_engine(shape, oc, 2);
  const TrainState s0 = e->state();
  CHECK(s0.v.size() == s0.params.size());
  for (std::size_t i = 0; i < e->num_params(); ++i) e->grads()[i] = (i % 2 ? 1.0f : -3.0f);
  e->step(1.0f, 0.01f);
  const TrainState s1 = e->state();
  for (std::size_t i = 0; i < s1.params.size(); ++i) {
    CHECK(s1.params[i] - s0.params[i] == Approx(i % 2 ? -0.01f : 0.01f).epsilon(1e-3));
  }
}

TEST_CASE("training on blobs is deterministic and learns", "[engine]") {
  DatasetOptions d;
  d.train_samples = 1024;
  d.test_samples = 512;
  d.features = 8;
  d.classes = 4;
  const Split data = make_dataset(d);
  ModelShape shape;
  shape.widths = {8, 32, 4};
  auto train_once = [&] {
    auto e = make_cpu_engine(shape, {}, 42);
    for (int epoch = 0; epoch < 5; ++epoch) {
      for (std::size_t i = 0; i < data.train.size(); i += 32) {
        e->zero_grads();
        e->forward_backward(data.train.row(i), data.train.y.data() + i, 32);
        e->step(1.0f / 32, 0.05f);
      }
    }
    return e;
  };
  auto a = train_once();
  auto b = train_once();
  const TrainState sa = a->state(), sb = b->state();
  CHECK(std::memcmp(sa.params.data(), sb.params.data(), sa.params.size() * sizeof(float)) == 0);
  const BatchStats t =
      a->evaluate(data.test.x.data(), data.test.y.data(), static_cast<int>(data.test.size()));
  CHECK(static_cast<double>(t.correct) / static_cast<double>(t.count) > 0.85);
}

TEST_CASE("load_cuda_engine names every path it tried and the fix", "[engine]") {
  ModelShape shape;
  shape.widths = {4, 8, 2};
  try {
    load_cuda_engine(0, shape, {}, 1, false, {"/nonexistent/a", "/nonexistent/b"});
    FAIL("expected an error");
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("/nonexistent/a/libtrain_cuda_engine.so: not found") &&
                         Catch::Contains("/nonexistent/b/libtrain_cuda_engine.so: not found") &&
                         Catch::Contains("--cpu"));
  }
}

#ifdef TRAIN_CUDA_ENGINE_DIR
// The module resolves all its symbols (RTLD_NOW) and its entry point runs; with no GPU the engine's
// first CUDA call reports why. On a GPU machine this trains one step instead.
TEST_CASE("the CUDA engine module loads and its entry point runs", "[engine]") {
  ModelShape shape;
  shape.widths = {4, 8, 2};
  std::unique_ptr<Engine> e;
  try {
    e = load_cuda_engine(0, shape, {}, 1, false, {TRAIN_CUDA_ENGINE_DIR});
  } catch (const std::runtime_error& err) {
    const std::string what = err.what();
    INFO(what);
    CHECK_THAT(what, Catch::StartsWith("CUDA call cudaSetDevice failed"));
    return;
  }
  REQUIRE(e->on_gpu());
  CHECK(e->num_params() == shape.num_params());
}
#endif
