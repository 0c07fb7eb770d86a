#include "filters.h"

#include <cmath>

namespace windowed_image {
namespace {

constexpr int kPad = 2;  // the 5-tap blur reaches 2 pixels; Sobel needs 1

// Fills the 2-pixel border of a padded plane (pw = width + 4 columns, ph = height + 4 rows) by
// replicating the outermost interior pixels (clamp-to-edge).
void replicate_border(float* p, int ph, int pw) {
  for (int y = kPad; y < ph - kPad; ++y) {
    float* row = p + static_cast<std::size_t>(y) * pw;
    row[0] = row[1] = row[kPad];
    row[pw - 1] = row[pw - 2] = row[pw - kPad - 1];
  }
  for (int k = 0; k < kPad; ++k) {
    const float* top = p + static_cast<std::size_t>(kPad) * pw;
    const float* bottom = p + static_cast<std::size_t>(ph - kPad - 1) * pw;
    float* t = p + static_cast<std::size_t>(k) * pw;
    float* b = p + static_cast<std::size_t>(ph - 1 - k) * pw;
    for (int x = 0; x < pw; ++x) {
      t[x] = top[x];
      b[x] = bottom[x];
    }
  }
}

// One blur pass on a padded plane: src -> tmp (horizontal) -> src (vertical), border refreshed.
void blur_pass(float* src, float* tmp, int ph, int pw) {
  const int w = pw - 2 * kPad;
  for (int y = kPad; y < ph - kPad; ++y) {
    const float* s = src + static_cast<std::size_t>(y) * pw + kPad;
    float* t = tmp + static_cast<std::size_t>(y) * pw + kPad;
    for (int x = 0; x < w; ++x) {
      t[x] = kBlurW0 * s[x - 2] + kBlurW1 * s[x - 1] + kBlurW2 * s[x] + kBlurW1 * s[x + 1] +
             kBlurW0 * s[x + 2];
    }
  }
  replicate_border(tmp, ph, pw);
  for (int y = kPad; y < ph - kPad; ++y) {
    const float* r0 = tmp + static_cast<std::size_t>(y - 2) * pw;
    const float* r1 = tmp + static_cast<std::size_t>(y - 1) * pw;
    const float* r2 = tmp + static_cast<std::size_t>(y) * pw;
    const float* r3 = tmp + static_cast<std::size_t>(y + 1) * pw;
    const float* r4 = tmp + static_cast<std::size_t>(y + 2) * pw;
    float* d = src + static_cast<std::size_t>(y) * pw;
    for (int x = kPad; x < pw - kPad; ++x) {
      d[x] =
          kBlurW0 * r0[x] + kBlurW1 * r1[x] + kBlurW2 * r2[x] + kBlurW1 * r3[x] + kBlurW0 * r4[x];
    }
  }
  replicate_border(src, ph, pw);
}

void sobel(const float* p, float* out, int h, int w, int pw) {
  for (int y = 0; y < h; ++y) {
    const float* a = p + static_cast<std::size_t>(y + kPad - 1) * pw + kPad;
    const float* b = p + static_cast<std::size_t>(y + kPad) * pw + kPad;
    const float* c = p + static_cast<std::size_t>(y + kPad + 1) * pw + kPad;
    float* o = out + static_cast<std::size_t>(y) * w;
    for (int x = 0; x < w; ++x) {
      const float gx = (a[x + 1] - a[x - 1]) + 2.0f * (b[x + 1] - b[x - 1]) + (c[x + 1] - c[x - 1]);
      const float gy = (c[x - 1] + 2.0f * c[x] + c[x + 1]) - (a[x - 1] + 2.0f * a[x] + a[x + 1]);
      o[x] = std::sqrt(gx * gx + gy * gy);
    }
  }
}

}  // namespace

void blur_sobel_cpu(const float* in, float* out, int channels, int height, int width,
                    const FilterOptions& opt, FilterWorkspace& ws) {
  const int ph = height + 2 * kPad;
  const int pw = width + 2 * kPad;
  const std::size_t padded = static_cast<std::size_t>(ph) * pw;
  ws.a.resize(padded);
  ws.b.resize(padded);
  for (int c = 0; c < channels; ++c) {
    const float* src = in + static_cast<std::size_t>(c) * height * width;
    for (int y = 0; y < height; ++y) {
      float* row = ws.a.data() + static_cast<std::size_t>(y + kPad) * pw + kPad;
      const float* s = src + static_cast<std::size_t>(y) * width;
      for (int x = 0; x < width; ++x) row[x] = s[x];
    }
    replicate_border(ws.a.data(), ph, pw);
    for (int i = 0; i < opt.blur_passes; ++i) blur_pass(ws.a.data(), ws.b.data(), ph, pw);
    sobel(ws.a.data(), out + static_cast<std::size_t>(c) * height * width, height, width, pw);
  }
}

}  // namespace windowed_image
