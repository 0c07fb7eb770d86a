// RGB8 images for the windowed-image example: PNG read/write (libpng) and the built-in default
// image, generated deterministically with integer arithmetic so every machine gets the same bytes.
// Owns pixel storage and file I/O only; windowing and filtering live in windows.h / filters.h.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "gpurun/common/host_memory.h"

namespace windowed_image {

// A user-facing problem (bad flag, unreadable file). main() prints it as
// "windowed_image: error: ..." and exits 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Interleaved 8-bit RGB, row-major: pixel (y, x) channel c is data[(y * width + x) * 3 + c].
// Huge-page backed (gpurun::HostVector): a 2048x1536 image is 9 MB, 2,300 page faults otherwise.
struct Image {
  int width = 0;
  int height = 0;
  gpurun::HostVector<std::uint8_t> data;

  static constexpr int kChannels = 3;
  Image() = default;
  Image(int w, int h) : width(w), height(h), data(static_cast<std::size_t>(w) * h * kChannels) {}
  std::uint8_t& at(int y, int x, int c) {
    return data[(static_cast<std::size_t>(y) * width + x) * kChannels + c];
  }
  std::uint8_t at(int y, int x, int c) const {
    return data[(static_cast<std::size_t>(y) * width + x) * kChannels + c];
  }
};

// The built-in input: 1088 x 832, which the default window (192) and stride (128) cut into
// exactly 8 x 6 = 48 windows. Shapes, rings and stripes give the edge filter something to find.
inline constexpr int kDefaultWidth = 1088;
inline constexpr int kDefaultHeight = 832;
Image make_default_image(int width = kDefaultWidth, int height = kDefaultHeight);

// Reads any PNG libpng understands (gray, palette, 16-bit, alpha) and converts it to RGB8.
// Throws UsageError naming the file and libpng's reason.
Image read_png(const std::string& path);
// Writes RGB8 PNG (to a temporary next to it, then renamed; creates the parent directory).
// fast: libpng's fastest compression, ~6x faster for a 1.5x larger file (what the distributed job
// uses by default: rank 0 writes while the other ranks wait). Throws UsageError naming the file
// and the reason.
void write_png(const std::string& path, const Image& img, bool fast = false);

}  // namespace windowed_image
