#include "image.h"

#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "pipeline.h"

namespace wi = windowed_image;

namespace {

// The built-in image's definition, evaluated at every pixel: each layer in turn (gradient,
// stripes, checkerboard, circles, rectangle, bar) decides the pixel. make_default_image paints
// the same layers over their bounding boxes and must give the same bytes.
int clamp255_ref(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

wi::Image reference_default_image(int width, int height) {
  using wi::Image;
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
      img.at(y, x, 0) = static_cast<std::uint8_t>(clamp255_ref(r));
      img.at(y, x, 1) = static_cast<std::uint8_t>(clamp255_ref(g));
      img.at(y, x, 2) = static_cast<std::uint8_t>(clamp255_ref(b));
    }
  }
  return img;
}

}  // namespace

TEST_CASE("the built-in image equals its per-pixel definition at several sizes", "[image]") {
  for (const auto& [w, h] : {std::pair{1088, 832}, std::pair{123, 77}, std::pair{2048, 1536},
                             std::pair{200, 900}, std::pair{1000, 40}}) {
    INFO(w << "x" << h);
    const wi::Image fast = wi::make_default_image(w, h);
    const wi::Image ref = reference_default_image(w, h);
    REQUIRE(fast.data.size() == ref.data.size());
    CHECK(std::equal(fast.data.begin(), fast.data.end(), ref.data.begin()));
  }
}

TEST_CASE("the built-in image is deterministic and not flat", "[image]") {
  const wi::Image a = wi::make_default_image();
  const wi::Image b = wi::make_default_image();
  CHECK(a.width == 1088);
  CHECK(a.height == 832);
  CHECK(a.data == b.data);
  const auto [lo, hi] = std::minmax_element(a.data.begin(), a.data.end());
  CHECK(*lo < 40);
  CHECK(*hi > 240);
}

TEST_CASE("PNG write + read round-trips the pixels", "[image]") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("wi_test_" + std::to_string(::getpid()));
  const std::string path = (dir / "sub" / "x.png").string();  // parent created on write
  const wi::Image img = wi::make_default_image(123, 77);
  for (bool fast : {false, true}) {  // --small-png and the default fast mode: same pixels
    INFO("fast " << fast);
    wi::write_png(path, img, fast);
    const wi::Image back = wi::read_png(path);
    CHECK(back.width == 123);
    CHECK(back.height == 77);
    CHECK(back.data == img.data);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("banded PNG: libpng reads it back exactly, at any height", "[image][png]") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("wi_band_" + std::to_string(::getpid()));
  // Heights: one row, under one band, exactly one band, one band + 1, several bands + a remainder.
  for (const auto& [w, h] : {std::pair{5, 1}, std::pair{33, 40}, std::pair{64, 64},
                             std::pair{70, 65}, std::pair{300, 201}}) {
    INFO(w << "x" << h);
    const wi::Image img = wi::make_default_image(w, h);
    CHECK(wi::png_band_count(h) == (h + wi::kPngBandRows - 1) / wi::kPngBandRows);
    const std::string path = (dir / ("b" + std::to_string(h) + ".png")).string();
    wi::write_png(path, img, /*fast=*/true);
    const wi::Image back = wi::read_png(path);  // libpng checks every CRC and the Adler-32
    CHECK(back.width == w);
    CHECK(back.height == h);
    CHECK(back.data == img.data);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("banded PNG: a band needs only its own rows, any split gives the same file",
          "[image][png]") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("wi_split_" + std::to_string(::getpid()));
  const wi::Image img = wi::make_default_image(257, 300);  // 5 bands, the last one short
  const std::string whole = (dir / "whole.png").string();
  const std::string split = (dir / "split.png").string();
  wi::write_png(whole, img, true);
  // Each band from a copy where every other row is garbage (what a rank has that stitched only
  // the windows of its bands).
  std::vector<wi::PngBand> bands;
  for (int b = 0; b < wi::png_band_count(img.height); ++b) {
    wi::Image partial = img;
    for (int y = 0; y < img.height; ++y) {
      if (y / wi::kPngBandRows == b) continue;
      for (int x = 0; x < img.width; ++x) partial.at(y, x, 0) = static_cast<std::uint8_t>(x + y);
    }
    bands.push_back(wi::deflate_png_band(partial, b));
  }
  wi::write_png_bands(split, img.width, img.height, bands);
  auto bytes = [](const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  };
  CHECK(bytes(split) == bytes(whole));
  CHECK(wi::read_png(split).data == img.data);
  std::filesystem::remove_all(dir);
}

TEST_CASE("banded PNG: the same bytes for any number of compressing threads", "[image][png]") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("wi_threads_" + std::to_string(::getpid()));
  const wi::Image img = wi::make_default_image(301, 7 * wi::kPngBandRows + 3);  // 8 bands
  auto bytes = [](const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  };
  const std::string one = (dir / "t1.png").string();
  wi::write_png(one, img, /*fast=*/true, 1);
  const std::string ref = bytes(one);
  REQUIRE(ref.size() > 100);
  for (int threads : {2, 3, 8, 64}) {
    INFO(threads << " threads");
    const std::string path = (dir / ("t" + std::to_string(threads) + ".png")).string();
    wi::write_png(path, img, true, threads);
    CHECK(bytes(path) == ref);
  }
  CHECK(wi::read_png(one).data == img.data);
  // One IDAT chunk per band: the zlib header rides in the first, the Adler-32 in the last.
  std::vector<std::string> chunks;
  for (std::size_t at = 8; at + 12 <= ref.size();) {
    std::uint32_t len = 0;
    for (int i = 0; i < 4; ++i) len = len << 8 | static_cast<std::uint8_t>(ref[at + i]);
    chunks.push_back(ref.substr(at + 4, 4));
    at += 12 + len;
  }
  std::vector<std::string> expected = {"IHDR"};
  expected.insert(expected.end(), static_cast<std::size_t>(wi::png_band_count(img.height)), "IDAT");
  expected.push_back("IEND");
  CHECK(chunks == expected);
  std::filesystem::remove_all(dir);
}

TEST_CASE("reading a missing PNG names the file and the fix", "[image]") {
  CHECK_THROWS_WITH(wi::read_png("/nonexistent/in.png"),
                    Catch::Contains("/nonexistent/in.png") && Catch::Contains("--input"));
}

TEST_CASE("command line parsing", "[options]") {
  const char* ok[] = {"wi",    "--window=96",  "--stride", "48",       "--batch-size", "4",
                      "--cpu", "--image-size", "640x480",  "--output", "o.png"};
  const auto opt = wi::parse_args(11, ok);
  CHECK(opt.window == 96);
  CHECK(opt.stride == 48);
  CHECK(opt.batch_size == 4);
  CHECK(opt.cpu);
  CHECK(opt.image_width == 640);
  CHECK(opt.image_height == 480);
  CHECK(opt.output == "o.png");
  const char* bad1[] = {"wi", "--window", "abc"};
  CHECK_THROWS_WITH(wi::parse_args(3, bad1), Catch::Contains("--window"));
  const char* bad2[] = {"wi", "--strid", "4"};
  CHECK_THROWS_WITH(wi::parse_args(3, bad2), Catch::Contains("unknown option '--strid'"));
  const char* bad3[] = {"wi", "--batch-size"};
  CHECK_THROWS_WITH(wi::parse_args(2, bad3), Catch::Contains("needs a value"));
}
