// The windowed-image job without the distributed parts: command-line options, processing a list
// of windows on the CPU, and the single-process reference (every window, in order, stitched).
// main.cc adds the ranks: sampler, gather of the tiles to rank 0, printing.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "filters.h"
#include "image.h"
#include "windows.h"

namespace windowed_image {

struct Options {
  std::string input;  // empty: the built-in image
  std::string output = "out/windowed_image.png";
  int image_width = kDefaultWidth;  // size of the built-in image (--image-size WxH)
  int image_height = kDefaultHeight;
  int window = 192;
  int stride = 128;
  int batch_size = 1;  // windows per batch (per rank)
  FilterOptions filter;
  float gain = 200.0f;           // edge magnitude -> 8-bit: round(min(v * gain, 255))
  bool small_png = false;        // full PNG compression (default: write_png's fast mode)
  int png_threads = 0;           // threads compressing the PNG; 0: the ranks on rank 0's host
  std::string backend = "auto";  // auto | gloo | nccl
  bool cpu = false;              // force the CPU path even where a GPU is visible
  bool reference = false;        // single process, no launcher, no SDK: the reference output
  bool help = false;
};

std::string usage();
// Throws UsageError naming the bad flag or value.
Options parse_args(int argc, const char* const* argv);

// The input image (file or built-in).
Image load_input(const Options& opt);

// Bytes of the tiles of windows `indices`, back to back.
std::size_t tiles_bytes(const WindowGrid& grid, std::span<const std::int64_t> indices);

// Receives each finished window as its tile (grid.tile_bytes(index) bytes, valid during the call).
using TileSink = std::function<void(int index, const std::uint8_t* tile)>;

// Packs tiles back to back in window order: what a rank other than 0 sends.
class TilePacker {
 public:
  TilePacker(const WindowGrid& grid, std::span<const std::int64_t> indices)
      : grid_(grid), bytes_(tiles_bytes(grid, indices)) {}
  TileSink sink() {
    return [this](int index, const std::uint8_t* tile) {
      const std::size_t n = grid_.tile_bytes(index);
      std::copy(tile, tile + n, bytes_.begin() + static_cast<std::ptrdiff_t>(used_));
      used_ += n;
    };
  }
  std::span<const std::uint8_t> bytes() const { return bytes_; }

 private:
  const WindowGrid& grid_;
  gpurun::HostVector<std::uint8_t> bytes_;
  std::size_t used_ = 0;
};

// Filters `count` windows (CHW floats, back to back) from `in` into `out` (same layout).
using BatchFilter = std::function<void(const float* in, float* out, std::size_t count)>;

// The CPU filter: blur_sobel_cpu on each window of the batch, with one reused workspace.
BatchFilter cpu_batch_filter(const WindowGrid& grid, const FilterOptions& opt);

// Cuts the windows `indices` `batch_size` at a time, runs `filter` on each batch, quantises each
// result and hands its tile to `sink` in order. Memory: two batches of float windows. Returns the
// batch count. Every device uses this loop; only the filter differs (CPU here, CUDA in main.cc).
std::size_t process_windows(const Image& img, const WindowGrid& grid,
                            std::span<const std::int64_t> indices, int batch_size, float gain,
                            const BatchFilter& filter, const TileSink& sink);

// Every window in index order, stitched: what any number of ranks must reproduce bit for bit.
Image reference_output(const Image& img, const Options& opt);

}  // namespace windowed_image
