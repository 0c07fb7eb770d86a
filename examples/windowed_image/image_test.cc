#include "image.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "pipeline.h"

namespace wi = windowed_image;

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
