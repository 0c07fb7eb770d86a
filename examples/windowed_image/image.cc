#include "image.h"

#include <png.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace windowed_image {
namespace {

// Integer-only helpers so the default image is identical everywhere (no libm).
int clamp255(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

}  // namespace

// Painted in layers, each overwriting what it covers: the background (gradient, stripes,
// checkerboard) row by row from per-column tables, then each circle over its bounding box, the
// rectangle and the diagonal bar. The same bytes as evaluating every layer at every pixel (the
// unit test keeps that definition), without per-pixel divisions or a test of every shape.
Image make_default_image(int width, int height) {
  Image img(width, height);
  constexpr int C = Image::kChannels;
  const auto W = static_cast<std::size_t>(width);
  auto px = [&](int y, int x) { return &img.data[(static_cast<std::size_t>(y) * W + x) * C]; };
  auto paint = [](std::uint8_t* p, int r, int g, int b) {
    p[0] = static_cast<std::uint8_t>(r);
    p[1] = static_cast<std::uint8_t>(g);
    p[2] = static_cast<std::uint8_t>(b);
  };

  // Background: a diagonal colour gradient, vertical stripes in the top band, a checkerboard in
  // the bottom-right corner.
  std::vector<int> red(W);
  std::vector<std::uint8_t> stripe(W);
  for (int x = 0; x < width; ++x) {
    red[static_cast<std::size_t>(x)] = 30 + (x * 120) / width;
    stripe[static_cast<std::size_t>(x)] = (x / 24) % 2 == 0;
  }
  std::vector<int> blue(static_cast<std::size_t>(width + height));
  for (int s = 0; s < width + height; ++s) {
    blue[static_cast<std::size_t>(s)] = 90 + (s * 60) / (width + height);
  }
  for (int y = 0; y < height; ++y) {
    const int g = 30 + (y * 120) / height;
    const bool band = y < height / 8;
    const bool checker_row = y > 7 * height / 8;
    std::uint8_t* p = px(y, 0);
    for (int x = 0; x < width; ++x, p += C) {
      int r = red[static_cast<std::size_t>(x)];
      int gg = g;
      int b = blue[static_cast<std::size_t>(x + y)];
      if (band && stripe[static_cast<std::size_t>(x)]) {
        r += 60;
        gg += 60;
        b += 60;
      }
      if (checker_row && x > 3 * width / 4 && ((x / 16) + (y / 16)) % 2 == 0) r = gg = b = 245;
      paint(p, clamp255(r), clamp255(gg), clamp255(b));
    }
  }
  // Circles (centre x, centre y, radius, colour), later ones over earlier ones, with a dark ring
  // every 1/3 of the radius (squared distances compared, no sqrt).
  struct Circle {
    int cx, cy, r;
    int rgb[3];
  };
  const Circle circles[] = {
      {width / 5, height / 3, height / 6, {230, 60, 40}},
      {width / 2, height / 2, height / 4, {40, 170, 230}},
      {4 * width / 5, 2 * height / 3, height / 5, {250, 210, 50}},
      {width / 3, 4 * height / 5, height / 9, {120, 220, 90}},
  };
  for (const Circle& c : circles) {
    const long r2 = static_cast<long>(c.r) * c.r;
    for (int y = std::max(0, c.cy - c.r); y <= std::min(height - 1, c.cy + c.r); ++y) {
      const long dy = y - c.cy;
      for (int x = std::max(0, c.cx - c.r); x <= std::min(width - 1, c.cx + c.r); ++x) {
        const long dx = x - c.cx;
        const long d2 = dx * dx + dy * dy;
        if (d2 > r2) continue;
        const bool ring = d2 * 9 >= r2 * 4 && d2 * 9 <= r2 * 5;
        if (ring) {
          paint(px(y, x), 20, 20, 20);
        } else {
          paint(px(y, x), c.rgb[0], c.rgb[1], c.rgb[2]);
        }
      }
    }
  }
  // A filled rectangle (open bounds) ...
  const int rx0 = 3 * width / 5, rx1 = 3 * width / 5 + width / 8;
  const int ry0 = height / 8 + 16, ry1 = height / 8 + 16 + height / 6;
  for (int y = std::max(0, ry0 + 1); y < std::min(height, ry1); ++y) {
    for (int x = std::max(0, rx0 + 1); x < std::min(width, rx1); ++x) paint(px(y, x), 200, 40, 200);
  }
  // ... and a white diagonal bar: -14 < x - 2y + height/2 < 14, left third only.
  for (int y = 0; y < height; ++y) {
    const int base = 2 * y - height / 2;  // diag = x - base
    for (int x = std::max(0, base - 13); x < std::min(width / 3, base + 14); ++x) {
      paint(px(y, x), 255, 255, 255);
    }
  }
  return img;
}

Image read_png(const std::string& path) {
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&png, path.c_str())) {
    throw UsageError("cannot read PNG '" + path + "' (" + png.message +
                     "); pass an existing PNG file with --input, or omit --input for the "
                     "built-in image");
  }
  png.format = PNG_FORMAT_RGB;
  if (png.width > 1u << 15 || png.height > 1u << 15) {
    png_image_free(&png);
    throw UsageError("PNG '" + path + "' is too large (" + std::to_string(png.width) + "x" +
                     std::to_string(png.height) + "); the example accepts up to 32768x32768");
  }
  Image img(static_cast<int>(png.width), static_cast<int>(png.height));
  if (!png_image_finish_read(&png, nullptr, img.data.data(), 0, nullptr)) {
    const std::string why = png.message;
    png_image_free(&png);
    throw UsageError("cannot decode PNG '" + path + "' (" + why + ")");
  }
  return img;
}

namespace {

namespace fs = std::filesystem;

// Writes `path` through a temporary next to it and a rename: a reader never sees half an image.
template <typename WriteTmp>
void write_atomically(const std::string& path, WriteTmp&& write_tmp) {
  const fs::path target(path);
  std::error_code ec;
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  const std::string tmp = path + ".tmp";
  if (const std::string why = write_tmp(tmp); !why.empty()) {
    std::remove(tmp.c_str());
    throw UsageError("cannot write PNG '" + path + "' (" + why +
                     "); check that the directory is writable or pass another --output");
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw UsageError("cannot write PNG '" + path + "' (rename: " + ec.message() + ")");
  }
}

void put_u32(std::uint8_t* out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}

void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  std::uint8_t b[4];
  put_u32(b, v);
  out.insert(out.end(), b, b + 4);
}

// One PNG chunk: length, type, data, CRC-32 of type and data.
void put_chunk(std::vector<std::uint8_t>& out, const char* type, const std::uint8_t* data,
               std::size_t n) {
  put_u32(out, static_cast<std::uint32_t>(n));
  const std::size_t type_at = out.size();
  out.insert(out.end(), type, type + 4);
  if (n != 0) out.insert(out.end(), data, data + n);
  const uLong crc = crc32(0L, out.data() + type_at, static_cast<uInt>(4 + n));
  put_u32(out, static_cast<std::uint32_t>(crc));
}

constexpr int kPngZlibLevel = 3;  // libpng's fast mode uses 3 as well

// The zlib stream header: deflate, 32 KiB window, "fast" level hint, check bits.
constexpr std::uint8_t kZlibCmf = 0x78;
constexpr std::uint8_t kZlibFlg =
    static_cast<std::uint8_t>((1 << 6) + (31 - (0x78 * 256 + (1 << 6)) % 31) % 31);

// A raw deflate stream reused for band after band (deflateReset keeps zlib's window and hash
// tables: one allocation per thread, not per band).
class BandDeflater {
 public:
  BandDeflater() {
    if (deflateInit2(&z_, kPngZlibLevel, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
      throw std::runtime_error("zlib deflateInit2 failed (out of memory?)");
    }
  }
  ~BandDeflater() { deflateEnd(&z_); }
  BandDeflater(const BandDeflater&) = delete;
  BandDeflater& operator=(const BandDeflater&) = delete;

  PngBand deflate_band(const Image& img, int band) {
    const int y0 = band * kPngBandRows;
    const int y1 = std::min(img.height, y0 + kPngBandRows);
    const bool last = y1 == img.height;
    const std::size_t row = static_cast<std::size_t>(img.width) * Image::kChannels;
    PngBand out;
    out.raw_bytes = static_cast<std::uint64_t>(y1 - y0) * (row + 1);
    deflateReset(&z_);
    out.deflated.resize(deflateBound(&z_, static_cast<uLong>(out.raw_bytes)) + 16);
    z_.next_out = out.deflated.data();
    z_.avail_out = static_cast<uInt>(out.deflated.size());
    // The band's scanlines, fed row by row straight from the image: filter type 0 (none), then
    // the row as stored.
    static const std::uint8_t kFilterNone = 0;
    uLong adler = adler32(0L, nullptr, 0);
    bool ok = true;
    for (int y = y0; y < y1 && ok; ++y) {
      const std::uint8_t* pixels = &img.data[static_cast<std::size_t>(y) * row];
      adler = adler32(adler, &kFilterNone, 1);
      adler = adler32(adler, pixels, static_cast<uInt>(row));
      z_.next_in = const_cast<Bytef*>(&kFilterNone);
      z_.avail_in = 1;
      ok = ::deflate(&z_, Z_NO_FLUSH) == Z_OK && z_.avail_in == 0;
      z_.next_in = const_cast<Bytef*>(pixels);
      z_.avail_in = static_cast<uInt>(row);
      ok = ok && ::deflate(&z_, Z_NO_FLUSH) == Z_OK && z_.avail_in == 0;
    }
    // A sync flush ends the band on a byte boundary without the final-block bit; the next band's
    // stream then simply continues the deflate stream.
    const int rc = ok ? ::deflate(&z_, last ? Z_FINISH : Z_SYNC_FLUSH) : Z_STREAM_ERROR;
    ok = last ? rc == Z_STREAM_END : rc == Z_OK;
    if (!ok) {
      throw std::runtime_error("zlib deflate of PNG band " + std::to_string(band) + " failed");
    }
    out.deflated.resize(out.deflated.size() - z_.avail_out);
    out.adler = static_cast<std::uint32_t>(adler);
    // The band's IDAT chunk CRC covers the type, the zlib header (band 0), then the data.
    uLong crc = crc32(0L, reinterpret_cast<const Bytef*>("IDAT"), 4);
    if (band == 0) {
      const std::uint8_t header[2] = {kZlibCmf, kZlibFlg};
      crc = crc32(crc, header, 2);
    }
    out.crc = static_cast<std::uint32_t>(
        crc32(crc, out.deflated.data(), static_cast<uInt>(out.deflated.size())));
    return out;
  }

 private:
  z_stream z_{};
};

}  // namespace

int png_band_count(int height) { return (height + kPngBandRows - 1) / kPngBandRows; }

PngBand deflate_png_band(const Image& img, int band) {
  return BandDeflater().deflate_band(img, band);
}

std::vector<PngBand> deflate_png_bands(const Image& img, int threads) {
  const int count = png_band_count(img.height);
  std::vector<PngBand> bands(static_cast<std::size_t>(count));
  std::atomic<int> next{0};
  std::mutex failed_mu;
  std::exception_ptr failed;
  auto work = [&] {
    try {
      BandDeflater d;
      for (int b = next++; b < count; b = next++)
        bands[static_cast<std::size_t>(b)] = d.deflate_band(img, b);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(failed_mu);
      if (!failed) failed = std::current_exception();
      next = count;
    }
  };
  // The calling thread takes bands too: `threads` threads in all.
  std::vector<std::thread> helpers;
  const int n = std::clamp(threads, 1, std::max(1, count));
  for (int t = 1; t < n; ++t) helpers.emplace_back(work);
  work();
  for (std::thread& t : helpers) t.join();
  if (failed) std::rethrow_exception(failed);
  return bands;
}

void write_png_bands(const std::string& path, int width, int height,
                     const std::vector<PngBand>& bands) {
  if (bands.empty() || static_cast<int>(bands.size()) != png_band_count(height)) {
    throw std::invalid_argument("write_png_bands: " + std::to_string(bands.size()) +
                                " bands for a height of " + std::to_string(height));
  }
  std::vector<std::uint8_t> head = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  std::vector<std::uint8_t> ihdr;
  put_u32(ihdr, static_cast<std::uint32_t>(width));
  put_u32(ihdr, static_cast<std::uint32_t>(height));
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // 8-bit, RGB, deflate, adaptive filters, no interlace
  put_chunk(head, "IHDR", ihdr.data(), ihdr.size());
  uLong adler = adler32(0L, nullptr, 0);
  for (const PngBand& b : bands) {
    adler = adler32_combine(adler, b.adler, static_cast<z_off_t>(b.raw_bytes));
  }
  std::uint8_t trailer[4];  // the zlib stream's Adler-32 of all scanlines, ends the last chunk
  put_u32(trailer, static_cast<std::uint32_t>(adler));
  std::vector<std::uint8_t> tail;
  put_chunk(tail, "IEND", nullptr, 0);
  // One IDAT chunk per band: [zlib header (band 0)] deflate data [Adler-32 (last band)].
  write_atomically(path, [&](const std::string& tmp) -> std::string {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (f == nullptr) return std::strerror(errno);
    bool ok = std::fwrite(head.data(), 1, head.size(), f) == head.size();
    for (std::size_t i = 0; i < bands.size() && ok; ++i) {
      const PngBand& b = bands[i];
      const bool first = i == 0;
      const bool last = i + 1 == bands.size();
      std::uint8_t chunk_head[10];
      const std::size_t n = b.deflated.size() + (first ? 2 : 0) + (last ? 4 : 0);
      put_u32(chunk_head, static_cast<std::uint32_t>(n));
      std::memcpy(chunk_head + 4, "IDAT", 4);
      chunk_head[8] = kZlibCmf;
      chunk_head[9] = kZlibFlg;
      std::uint8_t chunk_tail[8];
      std::size_t tail_n = 0;
      uLong crc = b.crc;
      if (last) {
        std::memcpy(chunk_tail, trailer, 4);
        crc = crc32(crc, trailer, 4);
        tail_n = 4;
      }
      put_u32(chunk_tail + tail_n, static_cast<std::uint32_t>(crc));
      tail_n += 4;
      const std::size_t head_n = first ? 10 : 8;
      ok = std::fwrite(chunk_head, 1, head_n, f) == head_n &&
           std::fwrite(b.deflated.data(), 1, b.deflated.size(), f) == b.deflated.size() &&
           std::fwrite(chunk_tail, 1, tail_n, f) == tail_n;
    }
    ok = ok && std::fwrite(tail.data(), 1, tail.size(), f) == tail.size();
    const bool closed = std::fclose(f) == 0;
    return ok && closed ? std::string() : std::string(std::strerror(errno ? errno : EIO));
  });
}

void write_png(const std::string& path, const Image& img, bool fast, int threads) {
  if (fast) {
    write_png_bands(path, img.width, img.height, deflate_png_bands(img, threads));
    return;
  }
  write_atomically(path, [&](const std::string& tmp) -> std::string {
    png_image png;
    std::memset(&png, 0, sizeof png);
    png.version = PNG_IMAGE_VERSION;
    png.width = static_cast<png_uint_32>(img.width);
    png.height = static_cast<png_uint_32>(img.height);
    png.format = PNG_FORMAT_RGB;
    if (!png_image_write_to_file(&png, tmp.c_str(), 0, img.data.data(), 0, nullptr)) {
      return png.message;
    }
    return std::string();
  });
}

}  // namespace windowed_image
