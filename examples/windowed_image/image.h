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
// fast: the banded encoder below (zlib level 3, no row filter, as libpng's fast mode: ~6x faster
// than full compression for a 1.5x larger file), its bands compressed by `threads` threads; the
// bytes are the same for any thread count. Otherwise libpng with full compression (--small-png),
// one thread. Throws UsageError naming the file and the reason.
void write_png(const std::string& path, const Image& img, bool fast = false, int threads = 1);

// The fast PNG encoder, in bands that can be compressed on different threads. The image's
// scanlines (filter byte 0, then the RGB row) are cut into bands of kPngBandRows rows; each band
// is an independent raw deflate stream (no back-references into the previous band), ended with a
// sync flush, the last one with the final block, so that the bands' streams concatenated are one
// valid deflate stream (as pigz does). The zlib trailer's Adler-32 is combined from the bands'.
inline constexpr int kPngBandRows = 64;
struct PngBand {
  std::vector<std::uint8_t> deflated;
  std::uint32_t adler = 1;      // Adler-32 of the band's uncompressed scanlines
  std::uint64_t raw_bytes = 0;  // their length
  std::uint32_t crc = 0;        // CRC-32 of its IDAT chunk so far: type, zlib header (band 0), data
};
int png_band_count(int height);
// Band `band` of `img` (needs only that band's rows to be final).
PngBand deflate_png_band(const Image& img, int band);
// Every band of `img`, compressed by `threads` threads (the caller's included); same result for
// any thread count.
std::vector<PngBand> deflate_png_bands(const Image& img, int threads);
// Writes the PNG from all bands in order (as write_png: temporary file, then rename).
void write_png_bands(const std::string& path, int width, int height,
                     const std::vector<PngBand>& bands);

}  // namespace windowed_image
