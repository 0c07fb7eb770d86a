#include "image.h"

#include <png.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
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

void write_png(const std::string& path, const Image& img, bool fast) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  std::error_code ec;
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  // Write next to the target, then rename: a reader never sees a half-written image.
  const std::string tmp = path + ".tmp";
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(img.width);
  png.height = static_cast<png_uint_32>(img.height);
  png.format = PNG_FORMAT_RGB;
  if (fast) png.flags |= PNG_IMAGE_FLAG_FAST;
  if (!png_image_write_to_file(&png, tmp.c_str(), 0, img.data.data(), 0, nullptr)) {
    const std::string why = png.message;
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

}  // namespace windowed_image
