#include "pipeline.h"

#include <algorithm>

namespace windowed_image {

// usage() and parse_args(): options.cc.

Image load_input(const Options& opt) {
  if (!opt.input.empty()) return read_png(opt.input);
  if (opt.image_width > 16384 || opt.image_height > 16384) {
    throw UsageError("--image-size is limited to 16384x16384");
  }
  return make_default_image(opt.image_width, opt.image_height);
}

std::size_t process_windows_cpu(const Image& img, const WindowGrid& grid,
                                std::span<const std::int64_t> indices, int batch_size,
                                const FilterOptions& opt, float* out) {
  const std::size_t elems = grid.window_elems();
  const std::size_t bs = static_cast<std::size_t>(batch_size);
  std::vector<float> batch(bs * elems);
  FilterWorkspace ws;
  std::size_t batches = 0;
  for (std::size_t first = 0; first < indices.size(); first += bs, ++batches) {
    const std::size_t count = std::min(bs, indices.size() - first);
    for (std::size_t k = 0; k < count; ++k) {
      cut_window(img, grid, static_cast<int>(indices[first + k]), batch.data() + k * elems);
    }
    for (std::size_t k = 0; k < count; ++k) {
      blur_sobel_cpu(batch.data() + k * elems, out + (first + k) * elems, Image::kChannels,
                     grid.window(), grid.window(), opt, ws);
    }
  }
  return batches;
}

Image reference_output(const Image& img, const Options& opt) {
  const WindowGrid grid(img.width, img.height, opt.window, opt.stride);
  std::vector<std::int64_t> all(static_cast<std::size_t>(grid.count()));
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::int64_t>(i);
  std::vector<float> out(all.size() * grid.window_elems());
  process_windows_cpu(img, grid, all, opt.batch_size, opt.filter, out.data());
  Stitcher st(grid);
  for (std::size_t i = 0; i < all.size(); ++i) {
    st.add(static_cast<int>(i), out.data() + i * grid.window_elems());
  }
  return st.to_image(opt.gain);
}

}  // namespace windowed_image
