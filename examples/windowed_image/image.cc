#include "image.h"

#include <png.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace windowed_image {
namespace {

// Integer-only helpers so the default image is identical everywhere (no libm).
int clamp255(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

}  // namespace

Image make_default_image(int width, int height) {
  Image img(width, height);
  // Circles: centre x, centre y, radius, colour.
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
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      // Background: a diagonal colour gradient.
      int r = 30 + (x * 120) / width;
      int g = 30 + (y * 120) / height;
      int b = 90 + ((x + y) * 60) / (width + height);
      // Vertical stripes in the top band, a checkerboard in the bottom-right corner.
      if (y < height / 8 && (x / 24) % 2 == 0) {
        r += 60;
        g += 60;
        b += 60;
      }
      if (x > 3 * width / 4 && y > 7 * height / 8 && ((x / 16) + (y / 16)) % 2 == 0) {
        r = g = b = 245;
      }
      for (const Circle& c : circles) {
        const long dx = x - c.cx, dy = y - c.cy;
        const long d2 = dx * dx + dy * dy;
        const long r2 = static_cast<long>(c.r) * c.r;
        if (d2 <= r2) {
          // A ring every 1/3 of the radius (compare squared distances, no sqrt).
          const bool ring = d2 * 9 >= r2 * 4 && d2 * 9 <= r2 * 5;
          r = ring ? 20 : c.rgb[0];
          g = ring ? 20 : c.rgb[1];
          b = ring ? 20 : c.rgb[2];
        }
      }
      // A filled rectangle and a diagonal bar.
      if (x > 3 * width / 5 && x < 3 * width / 5 + width / 8 && y > height / 8 + 16 &&
          y < height / 8 + 16 + height / 6) {
        r = 200;
        g = 40;
        b = 200;
      }
      const int diag = x - 2 * y + height / 2;
      if (diag > -14 && diag < 14 && x < width / 3) {
        r = g = b = 255;
      }
      img.at(y, x, 0) = static_cast<std::uint8_t>(clamp255(r));
      img.at(y, x, 1) = static_cast<std::uint8_t>(clamp255(g));
      img.at(y, x, 2) = static_cast<std::uint8_t>(clamp255(b));
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
