#include "pipeline.h"

#include <algorithm>
#include <memory>

namespace windowed_image {

// usage() and parse_args(): options.cc.

Image load_input(const Options& opt) {
  if (!opt.input.empty()) return read_png(opt.input);
  if (opt.image_width > 16384 || opt.image_height > 16384) {
    throw UsageError("--image-size is limited to 16384x16384");
  }
  return make_default_image(opt.image_width, opt.image_height);
}

std::size_t tiles_bytes(const WindowGrid& grid, std::span<const std::int64_t> indices) {
  std::size_t n = 0;
  for (const std::int64_t i : indices) n += grid.tile_bytes(static_cast<int>(i));
  return n;
}

BatchFilter cpu_batch_filter(const WindowGrid& grid, const FilterOptions& opt) {
  auto ws = std::make_shared<FilterWorkspace>();
  const int n = grid.window();
  const std::size_t elems = grid.window_elems();
  return [ws, n, elems, opt](const float* in, float* out, std::size_t count) {
    for (std::size_t k = 0; k < count; ++k) {
      blur_sobel_cpu(in + k * elems, out + k * elems, Image::kChannels, n, n, opt, *ws);
    }
  };
}

std::size_t process_windows(const Image& img, const WindowGrid& grid,
                            std::span<const std::int64_t> indices, int batch_size, float gain,
                            const BatchFilter& filter, const TileSink& sink) {
  const std::size_t elems = grid.window_elems();
  const std::size_t bs = static_cast<std::size_t>(batch_size);
  gpurun::HostVector<float> batch(bs * elems);
  gpurun::HostVector<float> result(bs * elems);
  std::vector<std::uint8_t> tile(elems);  // >= any tile (3 bytes per owned pixel)
  std::size_t batches = 0;
  for (std::size_t first = 0; first < indices.size(); first += bs, ++batches) {
    const std::size_t count = std::min(bs, indices.size() - first);
    for (std::size_t k = 0; k < count; ++k) {
      cut_window(img, grid, static_cast<int>(indices[first + k]), batch.data() + k * elems);
    }
    filter(batch.data(), result.data(), count);
    for (std::size_t k = 0; k < count; ++k) {
      const int index = static_cast<int>(indices[first + k]);
      make_tile(grid, index, result.data() + k * elems, gain, tile.data());
      sink(index, tile.data());
    }
  }
  return batches;
}

Image reference_output(const Image& img, const Options& opt) {
  const WindowGrid grid(img.width, img.height, opt.window, opt.stride);
  std::vector<std::int64_t> all(static_cast<std::size_t>(grid.count()));
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::int64_t>(i);
  Stitcher st(grid);
  process_windows(img, grid, all, opt.batch_size, opt.gain, cpu_batch_filter(grid, opt.filter),
                  [&](int index, const std::uint8_t* tile) { st.add(index, tile); });
  return st.take_image();
}

}  // namespace windowed_image
