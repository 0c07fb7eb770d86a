#include "windows.h"

#include <algorithm>
#include <array>
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
    std::vector<std::uint8_t> tile(g.tile_bytes(i));
    wi::make_tile(g, i, buf.data(), 255.0f, tile.data());
    CHECK(st.add(i, tile.data()));
  }
  CHECK(st.complete());
  CHECK(st.image().data == img.data);
}

TEST_CASE("owned rectangles tile the image exactly once", "[windows]") {
  for (auto [w, h, win, stride] :
       {std::array<int, 4>{500, 333, 64, 40}, std::array<int, 4>{1088, 832, 192, 128},
        std::array<int, 4>{450, 300, 96, 64}, std::array<int, 4>{200, 200, 200, 1},
        std::array<int, 4>{301, 77, 77, 76}}) {
    const wi::WindowGrid g(w, h, win, stride);
    std::vector<int> cover(static_cast<std::size_t>(w) * h, 0);
    std::size_t bytes = 0;
    for (int i = 0; i < g.count(); ++i) {
      const wi::Rect r = g.owned(i);
      const wi::Window at = g.at(i);
      INFO(w << "x" << h << " window " << win << " stride " << stride << " index " << i);
      REQUIRE(r.width > 0);
      REQUIRE(r.height > 0);
      // Inside its own window: the tile is cut from that window's result.
      CHECK(r.x0 >= at.x0);
      CHECK(r.y0 >= at.y0);
      CHECK(r.x0 + r.width <= at.x0 + win);
      CHECK(r.y0 + r.height <= at.y0 + win);
      for (int y = r.y0; y < r.y0 + r.height; ++y) {
        for (int x = r.x0; x < r.x0 + r.width; ++x) ++cover[static_cast<std::size_t>(y) * w + x];
      }
      CHECK(g.tile_bytes(i) == r.pixels() * 3);
      bytes += g.tile_bytes(i);
    }
    CHECK(std::count(cover.begin(), cover.end(), 1) == static_cast<long>(cover.size()));
    CHECK(bytes == static_cast<std::size_t>(w) * h * 3);
  }
}

TEST_CASE("make_tile quantises like the PNG: round(min(v * gain, 255))", "[windows]") {
  const wi::WindowGrid g(4, 4, 4, 4);  // one window owning everything
  std::vector<float> chw(g.window_elems());
  const float values[] = {0.0f, 0.2f, 0.5f, 0.99f, 1.0f, 1.5f, 2.0f, 1000.0f};
  for (std::size_t k = 0; k < chw.size(); ++k) chw[k] = values[k % 8];
  std::vector<std::uint8_t> tile(g.tile_bytes(0));
  wi::make_tile(g, 0, chw.data(), 1.0f, tile.data());
  // The tile is HWC: pixel (y, x) channel c is tile[(y * 4 + x) * 3 + c] = chw[c * 16 + y * 4 + x].
  CHECK(tile[0] == 0);                // 0
  CHECK(tile[3] == 0);                // (0, 1): 0.2
  CHECK(tile[6] == 1);                // (0, 2): 0.5 rounds half up
  CHECK(tile[9] == 1);                // (0, 3): 0.99
  CHECK(tile[(4 + 1) * 3] == 2);      // (1, 1): 1.5
  CHECK(tile[(4 + 3) * 3] == 255);    // (1, 3): 1000 clamps
  CHECK(tile[(4 + 1) * 3 + 2] == 2);  // (1, 1) channel 2: chw[32 + 5] = 1.5
}

TEST_CASE("Stitcher ignores duplicates and reports missing windows", "[windows]") {
  const wi::Image img = wi::make_default_image(300, 200);
  const wi::WindowGrid g(img.width, img.height, 100, 100);
  REQUIRE(g.count() == 6);
  wi::Stitcher st(g);
  std::vector<std::uint8_t> tile(g.tile_bytes(0), 7);
  CHECK(st.add(0, tile.data()));
  CHECK_FALSE(st.add(0, tile.data()));
  CHECK(st.add(3, tile.data()));
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
        wi::TilePacker packer(g, idx);
        wi::process_windows(img, g, idx, batch, opt.gain, wi::cpu_batch_filter(g, opt.filter),
                            packer.sink());
        REQUIRE(packer.bytes().size() == wi::tiles_bytes(g, idx));
        const std::uint8_t* t = packer.bytes().data();
        for (const std::int64_t i : idx) {
          st.add(static_cast<int>(i), t);
          t += g.tile_bytes(static_cast<int>(i));
        }
      }
      INFO("world " << world << " batch " << batch);
      REQUIRE(st.complete());
      CHECK(st.image().data == ref.data);
    }
  }
}
