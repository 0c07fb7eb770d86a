#include "windows.h"

#include <cmath>
#include <string>

namespace windowed_image {

std::vector<int> axis_starts(int length, int window, int stride) {
  std::vector<int> starts;
  int s = 0;
  for (; s + window <= length; s += stride) starts.push_back(s);
  if (starts.empty() || starts.back() + window < length) starts.push_back(length - window);
  return starts;
}

std::vector<int> axis_owners(const std::vector<int>& starts, int length, int window) {
  std::vector<int> owner(static_cast<std::size_t>(length), 0);
  // Centres doubled to stay in integers: 2*start + window.
  std::size_t best = 0;
  for (int p = 0; p < length; ++p) {
    // Starts are increasing, so the nearest centre only moves forward as p grows.
    while (best + 1 < starts.size() && std::abs(2 * p + 1 - (2 * starts[best + 1] + window)) <
                                           std::abs(2 * p + 1 - (2 * starts[best] + window))) {
      ++best;
    }
    owner[static_cast<std::size_t>(p)] = static_cast<int>(best);
  }
  return owner;
}

WindowGrid::WindowGrid(int width, int height, int window, int stride)
    : width_(width), height_(height), window_(window), stride_(stride) {
  if (window <= 0 || stride <= 0) {
    throw UsageError("--window and --stride must be positive (got window " +
                     std::to_string(window) + ", stride " + std::to_string(stride) + ")");
  }
  if (stride > window) {
    throw UsageError("--stride " + std::to_string(stride) + " is larger than --window " +
                     std::to_string(window) +
                     " (windows would leave gaps); pass a stride <= the window size");
  }
  if (window > width || window > height) {
    throw UsageError("the image (" + std::to_string(width) + "x" + std::to_string(height) +
                     ") is smaller than one window (" + std::to_string(window) + "x" +
                     std::to_string(window) +
                     "); pass --window <= " + std::to_string(width < height ? width : height));
  }
  xs_ = axis_starts(width, window, stride);
  ys_ = axis_starts(height, window, stride);
  owner_x_ = axis_owners(xs_, width, window);
  owner_y_ = axis_owners(ys_, height, window);
}

Window WindowGrid::at(int index) const {
  Window w;
  w.index = index;
  w.x0 = xs_[static_cast<std::size_t>(index % cols())];
  w.y0 = ys_[static_cast<std::size_t>(index / cols())];
  return w;
}

std::size_t WindowGrid::window_elems() const {
  return static_cast<std::size_t>(Image::kChannels) * window_ * window_;
}

void cut_window(const Image& img, const WindowGrid& grid, int index, float* out) {
  const Window w = grid.at(index);
  const int n = grid.window();
  constexpr float kScale = 1.0f / 255.0f;
  for (int c = 0; c < Image::kChannels; ++c) {
    float* plane = out + static_cast<std::size_t>(c) * n * n;
    for (int y = 0; y < n; ++y) {
      const std::uint8_t* src =
          &img.data[(static_cast<std::size_t>(w.y0 + y) * img.width + w.x0) * Image::kChannels + c];
      float* dst = plane + static_cast<std::size_t>(y) * n;
      for (int x = 0; x < n; ++x) dst[x] = static_cast<float>(src[x * Image::kChannels]) * kScale;
    }
  }
}

Stitcher::Stitcher(const WindowGrid& grid)
    : grid_(grid),
      planes_(static_cast<std::size_t>(Image::kChannels) * grid.width() * grid.height(), 0.0f),
      have_(static_cast<std::size_t>(grid.count()), 0) {}

bool Stitcher::add(int index, const float* chw) {
  if (have_[static_cast<std::size_t>(index)]) return false;
  have_[static_cast<std::size_t>(index)] = 1;
  ++received_;
  const Window w = grid_.at(index);
  const int col = index % grid_.cols();
  const int row = index / grid_.cols();
  const int n = grid_.window();
  const int width = grid_.width();
  const int height = grid_.height();
  for (int c = 0; c < Image::kChannels; ++c) {
    const float* src_plane = chw + static_cast<std::size_t>(c) * n * n;
    float* dst_plane = planes_.data() + static_cast<std::size_t>(c) * width * height;
    for (int y = 0; y < n; ++y) {
      const int gy = w.y0 + y;
      if (grid_.owner_y()[static_cast<std::size_t>(gy)] != row) continue;
      for (int x = 0; x < n; ++x) {
        const int gx = w.x0 + x;
        if (grid_.owner_x()[static_cast<std::size_t>(gx)] != col) continue;
        dst_plane[static_cast<std::size_t>(gy) * width + gx] =
            src_plane[static_cast<std::size_t>(y) * n + x];
      }
    }
  }
  return true;
}

std::vector<int> Stitcher::missing() const {
  std::vector<int> out;
  for (int i = 0; i < grid_.count(); ++i) {
    if (!have_[static_cast<std::size_t>(i)]) out.push_back(i);
  }
  return out;
}

Image Stitcher::to_image(float gain) const {
  Image img(grid_.width(), grid_.height());
  const std::size_t plane = static_cast<std::size_t>(grid_.width()) * grid_.height();
  for (int c = 0; c < Image::kChannels; ++c) {
    for (std::size_t p = 0; p < plane; ++p) {
      float v = planes_[c * plane + p] * gain + 0.5f;
      v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
      img.data[p * Image::kChannels + static_cast<std::size_t>(c)] = static_cast<std::uint8_t>(v);
    }
  }
  return img;
}

}  // namespace windowed_image
