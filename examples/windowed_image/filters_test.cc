#include "filters.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

namespace wi = windowed_image;

namespace {

// A direct, unpadded implementation with clamped indices: the definition the fast path must
// match bit for bit (same weights, same order of operations).
void naive(const std::vector<float>& in, std::vector<float>& out, int c, int h, int w, int passes) {
  out.assign(in.size(), 0.0f);
  auto cl = [](int v, int hi) { return std::clamp(v, 0, hi); };
  for (int ch = 0; ch < c; ++ch) {
    std::vector<float> p(in.begin() + ch * h * w, in.begin() + (ch + 1) * h * w);
    std::vector<float> t(p.size());
    auto at = [&](const std::vector<float>& v, int y, int x) {
      return v[static_cast<std::size_t>(cl(y, h - 1) * w + cl(x, w - 1))];
    };
    for (int i = 0; i < passes; ++i) {
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
          t[static_cast<std::size_t>(y * w + x)] =
              wi::kBlurW0 * at(p, y, x - 2) + wi::kBlurW1 * at(p, y, x - 1) +
              wi::kBlurW2 * at(p, y, x) + wi::kBlurW1 * at(p, y, x + 1) +
              wi::kBlurW0 * at(p, y, x + 2);
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
          p[static_cast<std::size_t>(y * w + x)] =
              wi::kBlurW0 * at(t, y - 2, x) + wi::kBlurW1 * at(t, y - 1, x) +
              wi::kBlurW2 * at(t, y, x) + wi::kBlurW1 * at(t, y + 1, x) +
              wi::kBlurW0 * at(t, y + 2, x);
    }
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const float gx = (at(p, y - 1, x + 1) - at(p, y - 1, x - 1)) +
                         2.0f * (at(p, y, x + 1) - at(p, y, x - 1)) +
                         (at(p, y + 1, x + 1) - at(p, y + 1, x - 1));
        const float gy = (at(p, y + 1, x - 1) + 2.0f * at(p, y + 1, x) + at(p, y + 1, x + 1)) -
                         (at(p, y - 1, x - 1) + 2.0f * at(p, y - 1, x) + at(p, y - 1, x + 1));
        out[static_cast<std::size_t>((ch * h + y) * w + x)] = std::sqrt(gx * gx + gy * gy);
      }
  }
}

std::vector<float> pseudo_random(std::size_t n, std::uint32_t seed) {
  std::vector<float> v(n);
  for (auto& x : v) {
    seed = seed * 1664525u + 1013904223u;
    x = static_cast<float>(seed >> 8) / static_cast<float>(1u << 24);
  }
  return v;
}

}  // namespace

TEST_CASE("fast CPU filter equals the naive definition bit for bit", "[filters]") {
  for (int passes : {0, 1, 3}) {
    for (auto [h, w] : {std::pair{1, 1}, std::pair{2, 3}, std::pair{17, 29}, std::pair{64, 64}}) {
      const auto in = pseudo_random(static_cast<std::size_t>(3 * h * w), 7u + h * w);
      std::vector<float> fast(in.size()), ref;
      wi::FilterWorkspace ws;
      wi::FilterOptions opt;
      opt.blur_passes = passes;
      wi::blur_sobel_cpu(in.data(), fast.data(), 3, h, w, opt, ws);
      naive(in, ref, 3, h, w, passes);
      INFO("passes " << passes << " size " << h << "x" << w);
      REQUIRE(std::memcmp(fast.data(), ref.data(), fast.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("a flat image has no edges, a vertical step has a symmetric edge", "[filters]") {
  const int n = 32;
  std::vector<float> flat(static_cast<std::size_t>(n * n), 0.5f), out(flat.size());
  wi::FilterWorkspace ws;
  wi::blur_sobel_cpu(flat.data(), out.data(), 1, n, n, {}, ws);
  CHECK(*std::max_element(out.begin(), out.end()) == 0.0f);

  std::vector<float> step(flat.size());
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) step[static_cast<std::size_t>(y * n + x)] = x < n / 2 ? 0.0f : 1.0f;
  wi::blur_sobel_cpu(step.data(), out.data(), 1, n, n, {}, ws);
  const float* row = out.data() + (n / 2) * n;
  CHECK(row[0] == 0.0f);
  CHECK(row[n - 1] == 0.0f);
  CHECK(row[n / 2 - 1] > 2.0f);  // the strongest response straddles the step
  CHECK(row[n / 2 - 1] == row[n / 2]);
  CHECK(row[n / 2 - 2] == row[n / 2 + 1]);
}

TEST_CASE("the filter is deterministic across calls and workspaces", "[filters]") {
  const auto in = pseudo_random(3u * 96 * 96, 42);
  std::vector<float> a(in.size()), b(in.size());
  wi::FilterWorkspace ws1, ws2;
  wi::FilterOptions opt;
  opt.blur_passes = 2;
  wi::blur_sobel_cpu(in.data(), a.data(), 3, 96, 96, opt, ws1);
  wi::blur_sobel_cpu(in.data(), b.data(), 3, 96, 96, opt, ws2);
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}
