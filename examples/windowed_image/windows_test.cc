#include "windows.h"

#include <catch2/catch.hpp>

#include "pipeline.h"

namespace wi = windowed_image;

TEST_CASE("default image and window settings give exactly 48 windows", "[windows]") {
  const wi::WindowGrid g(wi::kDefaultWidth, wi::kDefaultHeight, 192, 128);
  CHECK(g.cols() == 8);
  CHECK(g.rows() == 6);
  CHECK(g.count() == 48);
  CHECK(g.window_elems() == 3u * 192 * 192);
  CHECK(g.xs().back() + 192 == wi::kDefaultWidth);
  CHECK(g.ys().back() + 192 == wi::kDefaultHeight);
}

TEST_CASE("axis_starts adds an edge-aligned window when the stride does not fit", "[windows]") {
  CHECK(wi::axis_starts(500, 192, 128) == std::vector<int>{0, 128, 256, 308});
  CHECK(wi::axis_starts(192, 192, 64) == std::vector<int>{0});
  CHECK(wi::axis_starts(200, 192, 192) == std::vector<int>{0, 8});
  CHECK(wi::axis_starts(10, 3, 1).size() == 8);
}

TEST_CASE("every pixel's owner window contains it", "[windows]") {
  for (int length : {7, 50, 192, 193, 500, 1088}) {
    for (int window : {3, 5, 16, 48, 192}) {
      if (window > length) continue;
      for (int stride : {1, 2, window / 2 + 1, window}) {
        const auto starts = wi::axis_starts(length, window, stride);
        const auto owner = wi::axis_owners(starts, length, window);
        for (int p = 0; p < length; ++p) {
          const int s = starts[static_cast<std::size_t>(owner[static_cast<std::size_t>(p)])];
          INFO("length " << length << " window " << window << " stride " << stride << " p " << p);
          REQUIRE(s <= p);
          REQUIRE(p < s + window);
        }
      }
    }
  }
}

TEST_CASE("WindowGrid rejects impossible geometry with a fix", "[windows]") {
  CHECK_THROWS_WITH(wi::WindowGrid(100, 80, 192, 128), Catch::Contains("smaller than one window") &&
                                                           Catch::Contains("--window <= 80"));
  CHECK_THROWS_WITH(wi::WindowGrid(400, 400, 64, 65), Catch::Contains("leave gaps"));
  CHECK_THROWS_AS(wi::WindowGrid(400, 400, 0, 1), wi::UsageError);
}

TEST_CASE("cut + stitch with the identity reproduces the image exactly", "[windows]") {
  const wi::Image img = wi::make_default_image(500, 333);
  const wi::WindowGrid g(img.width, img.height, 64, 40);
  wi::Stitcher st(g);
  std::vector<float> buf(g.window_elems());
  for (int i = g.count() - 1; i >= 0; --i) {  // order must not matter
    wi::cut_window(img, g, i, buf.data());
    CHECK(st.add(i, buf.data()));
  }
  CHECK(st.complete());
  CHECK(st.to_image(255.0f).data == img.data);
}

TEST_CASE("Stitcher ignores duplicates and reports missing windows", "[windows]") {
  const wi::Image img = wi::make_default_image(300, 200);
  const wi::WindowGrid g(img.width, img.height, 100, 100);
  REQUIRE(g.count() == 6);
  wi::Stitcher st(g);
  std::vector<float> buf(g.window_elems(), 0.25f);
  CHECK(st.add(0, buf.data()));
  CHECK_FALSE(st.add(0, buf.data()));
  CHECK(st.add(3, buf.data()));
  CHECK(st.received() == 2);
  CHECK_FALSE(st.complete());
  CHECK(st.missing() == std::vector<int>{1, 2, 4, 5});
}

namespace {

// Mimics DistributedSampler(shuffle=false, drop_last=false): rank r gets r, r+W, ... over the
// index list padded by wrapping to a multiple of W.
std::vector<std::int64_t> shard(int n, int world, int rank) {
  const int per = (n + world - 1) / world;
  std::vector<std::int64_t> out;
  for (int k = rank; k < per * world; k += world) out.push_back(k % n);
  return out;
}

}  // namespace

TEST_CASE("any split of the windows over ranks stitches to the reference bit for bit",
          "[windows][pipeline]") {
  wi::Options opt;
  opt.image_width = 450;
  opt.image_height = 300;
  opt.window = 96;
  opt.stride = 64;  // 7 x 5 = 35 windows with edge-aligned extras: not divisible by 2, 3 or 4
  const wi::Image img = wi::load_input(opt);
  const wi::Image ref = wi::reference_output(img, opt);
  const wi::WindowGrid g(img.width, img.height, opt.window, opt.stride);
  REQUIRE(g.count() == 35);
  for (int world : {1, 2, 3, 4, 6}) {
    for (int batch : {1, 4}) {
      wi::Stitcher st(g);
      for (int r = 0; r < world; ++r) {
        const auto idx = shard(g.count(), world, r);
        std::vector<float> out(idx.size() * g.window_elems());
        wi::process_windows_cpu(img, g, idx, batch, opt.filter, out.data());
        for (std::size_t k = 0; k < idx.size(); ++k) {
          st.add(static_cast<int>(idx[k]), out.data() + k * g.window_elems());
        }
      }
      INFO("world " << world << " batch " << batch);
      REQUIRE(st.complete());
      CHECK(st.to_image(opt.gain).data == ref.data);
    }
  }
}
