#include "windows.h"

#include <cmath>
#include <cstring>
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

namespace {

// owner is non-decreasing (nearest centre, starts increasing), so window k owns one interval.
void own_intervals(const std::vector<int>& owner, int windows, std::vector<int>& first,
                   std::vector<int>& count) {
  first.assign(static_cast<std::size_t>(windows), 0);
  count.assign(static_cast<std::size_t>(windows), 0);
  for (std::size_t p = owner.size(); p-- > 0;) {
    const auto k = static_cast<std::size_t>(owner[p]);
    first[k] = static_cast<int>(p);
    ++count[k];
  }
}

}  // namespace

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
  own_intervals(owner_x_, cols(), own_x0_, own_w_);
  own_intervals(owner_y_, rows(), own_y0_, own_h_);
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

Rect WindowGrid::owned(int index) const {
  const auto col = static_cast<std::size_t>(index % cols());
  const auto row = static_cast<std::size_t>(index / cols());
  return Rect{own_x0_[col], own_y0_[row], own_w_[col], own_h_[row]};
}

std::size_t WindowGrid::tile_bytes(int index) const {
  return owned(index).pixels() * Image::kChannels;
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

void make_tile(const WindowGrid& grid, int index, const float* chw, float gain, std::uint8_t* out) {
  const Window w = grid.at(index);
  const Rect r = grid.owned(index);
  const int n = grid.window();
  const std::size_t plane = static_cast<std::size_t>(n) * n;
  for (int y = 0; y < r.height; ++y) {
    const std::size_t src_row = static_cast<std::size_t>(r.y0 - w.y0 + y) * n + (r.x0 - w.x0);
    std::uint8_t* dst = out + static_cast<std::size_t>(y) * r.width * Image::kChannels;
    for (int c = 0; c < Image::kChannels; ++c) {
      const float* src = chw + c * plane + src_row;
      for (int x = 0; x < r.width; ++x) {
        float v = src[x] * gain + 0.5f;
        v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
        dst[static_cast<std::size_t>(x) * Image::kChannels + static_cast<std::size_t>(c)] =
            static_cast<std::uint8_t>(v);
      }
    }
  }
}

Stitcher::Stitcher(const WindowGrid& grid)
    : grid_(grid),
      image_(grid.width(), grid.height()),
      have_(static_cast<std::size_t>(grid.count()), 0) {}

bool Stitcher::add(int index, const std::uint8_t* tile) {
  if (have_[static_cast<std::size_t>(index)]) return false;
  have_[static_cast<std::size_t>(index)] = 1;
  ++received_;
  const Rect r = grid_.owned(index);
  const std::size_t row_bytes = static_cast<std::size_t>(r.width) * Image::kChannels;
  for (int y = 0; y < r.height; ++y) {
    std::memcpy(&image_.at(r.y0 + y, r.x0, 0), tile + static_cast<std::size_t>(y) * row_bytes,
                row_bytes);
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

}  // namespace windowed_image
