// Cutting an image into overlapping square windows and stitching per-window results back.
// WindowGrid owns the geometry: where window i sits and which output pixels it owns (every output
// pixel comes from exactly one window). A tile is the owned part of one window's result, already
// quantised to RGB8: what a rank sends to rank 0, about a ninth of the float window. Stitcher
// places tiles into the output image. None of them knows about ranks.
#pragma once

#include <cstdint>
#include <utility>
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

// A rectangle of output pixels, in image coordinates.
struct Rect {
  int x0 = 0;
  int y0 = 0;
  int width = 0;
  int height = 0;
  std::size_t pixels() const { return static_cast<std::size_t>(width) * height; }
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
  // The output pixels window `index` owns (its owner_x/owner_y interval, a rectangle).
  Rect owned(int index) const;
  // Bytes of window `index`'s tile: owned(index).pixels() * 3.
  std::size_t tile_bytes(int index) const;

  const std::vector<int>& xs() const { return xs_; }
  const std::vector<int>& ys() const { return ys_; }
  const std::vector<int>& owner_x() const { return owner_x_; }
  const std::vector<int>& owner_y() const { return owner_y_; }

 private:
  int width_, height_, window_, stride_;
  std::vector<int> xs_, ys_, owner_x_, owner_y_;
  // Per column / row of the grid: first owned pixel and count (owners are monotonic).
  std::vector<int> own_x0_, own_w_, own_y0_, own_h_;
};

// Copies window `index` of `img` into `out` as a CHW float tensor with values in [0, 1].
// REQUIRES: out holds grid.window_elems() floats.
void cut_window(const Image& img, const WindowGrid& grid, int index, float* out);

// Quantises the owned part of one window's CHW float result to an RGB8 tile (row-major over
// owned(index), 3 bytes per pixel): round(min(v * gain, 255)) for v >= 0 (edge magnitudes are
// non-negative). REQUIRES: out holds grid.tile_bytes(index) bytes.
void make_tile(const WindowGrid& grid, int index, const float* chw, float gain, std::uint8_t* out);

// Places tiles into the output image.
class Stitcher {
 public:
  explicit Stitcher(const WindowGrid& grid);

  // Copies window `index`'s tile (grid.tile_bytes(index) bytes). Adding the same window twice is
  // harmless (the data is the same result); returns false when it was already present.
  bool add(int index, const std::uint8_t* tile);
  bool complete() const { return received_ == grid_.count(); }
  int received() const { return received_; }
  // Windows not added yet, in index order (empty when complete()).
  std::vector<int> missing() const;

  const Image& image() const { return image_; }
  Image take_image() { return std::move(image_); }  // leaves the stitcher empty

 private:
  const WindowGrid& grid_;
  Image image_;
  std::vector<std::uint8_t> have_;
  int received_ = 0;
};

}  // namespace windowed_image
