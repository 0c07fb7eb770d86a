// Cutting an image into overlapping square windows and stitching per-window results back.
// WindowGrid owns only geometry (where window i sits); Stitcher owns the output buffer and the
// rule that decides which window's result a pixel comes from. Neither knows about ranks.
#pragma once

#include <cstdint>
#include <vector>

#include "image.h"

namespace windowed_image {

// Start offsets along one axis: 0, stride, 2*stride, ... plus, when the last window stops short
// of the edge, one final window aligned to the edge, so every pixel is covered.
// REQUIRES: 0 < window <= length, 0 < stride <= window (checked by WindowGrid).
std::vector<int> axis_starts(int length, int window, int stride);

// owner[p] = index of the window (along this axis) whose centre is nearest to p, ties to the
// lower index. With stride <= window the owner always contains p, so every output pixel comes
// from exactly one window, whatever the number of ranks: the stitch is deterministic.
std::vector<int> axis_owners(const std::vector<int>& starts, int length, int window);

struct Window {
  int index = 0;  // row-major over the grid
  int x0 = 0;
  int y0 = 0;
};

class WindowGrid {
 public:
  // Throws UsageError (naming the numbers and a fix) for a window larger than the image, a
  // non-positive window or stride, or a stride larger than the window (which would leave gaps).
  WindowGrid(int width, int height, int window, int stride);

  int width() const { return width_; }
  int height() const { return height_; }
  int window() const { return window_; }
  int stride() const { return stride_; }
  int cols() const { return static_cast<int>(xs_.size()); }
  int rows() const { return static_cast<int>(ys_.size()); }
  int count() const { return cols() * rows(); }
  Window at(int index) const;
  // Elements in one window's CHW float tensor: 3 * window * window.
  std::size_t window_elems() const;

  const std::vector<int>& xs() const { return xs_; }
  const std::vector<int>& ys() const { return ys_; }
  const std::vector<int>& owner_x() const { return owner_x_; }
  const std::vector<int>& owner_y() const { return owner_y_; }

 private:
  int width_, height_, window_, stride_;
  std::vector<int> xs_, ys_, owner_x_, owner_y_;
};

// Copies window `index` of `img` into `out` as a CHW float tensor with values in [0, 1].
// REQUIRES: out holds grid.window_elems() floats.
void cut_window(const Image& img, const WindowGrid& grid, int index, float* out);

// Collects per-window CHW results into one planar float image.
class Stitcher {
 public:
  explicit Stitcher(const WindowGrid& grid);

  // Copies the pixels that window `index` owns. Adding the same window twice is harmless (the
  // data is the same result); returns false when it was already present.
  bool add(int index, const float* chw);
  bool complete() const { return received_ == grid_.count(); }
  int received() const { return received_; }
  // Windows not added yet, in index order (empty when complete()).
  std::vector<int> missing() const;

  // Quantises to RGB8: round(min(v * gain, 255)), v >= 0 (edge magnitudes are non-negative).
  Image to_image(float gain) const;
  const std::vector<float>& planes() const { return planes_; }  // CHW, height x width

 private:
  const WindowGrid& grid_;
  std::vector<float> planes_;
  std::vector<std::uint8_t> have_;
  int received_ = 0;
};

}  // namespace windowed_image
