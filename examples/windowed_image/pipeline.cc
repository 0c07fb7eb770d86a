#include "pipeline.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>

namespace windowed_image {
namespace {

int to_int(const std::string& flag, const std::string& v, int min) {
  int out = 0;
  const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size() || out < min) {
    throw UsageError("invalid value '" + v + "' for " + flag +
                     " (expected an integer >= " + std::to_string(min) + ")");
  }
  return out;
}

float to_float(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const float out = std::strtof(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !(out > 0.0f)) {
    throw UsageError("invalid value '" + v + "' for " + flag + " (expected a positive number)");
  }
  return out;
}

}  // namespace

std::string usage() {
  return R"(usage: gpurun --nproc_per_node=N windowed_image [options]

Cuts an image into overlapping windows, spreads them over the ranks (DistributedSampler, no
shuffle), runs a Gaussian blur + Sobel edge filter on each window (CUDA kernel on GPU ranks,
vectorised loops on CPU ranks), gathers every result to rank 0 and writes the stitched PNG.

options:
  --input PATH        PNG to process (default: a built-in 1088x832 image -> 48 windows)
  --output PATH       where rank 0 writes the result (default: out/windowed_image.png)
  --image-size WxH    size of the built-in image (default: 1088x832)
  --window N          window side in pixels (default: 192)
  --stride N          distance between window origins, <= window (default: 128)
  --batch-size N      windows per batch on each rank (default: 1)
  --blur-passes N     Gaussian passes before Sobel (default: 1)
  --gain G            edge magnitude to 8-bit scale (default: 200)
  --backend B         auto | gloo | nccl (default: auto)
  --cpu               use the CPU even where a GPU is visible
  --reference         run all windows in this one process (no launcher needed) and write the
                      output: the result every distributed run must match bit for bit
  -h, --help          this text
)";
}

Options parse_args(int argc, const char* const* argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (const auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto next = [&]() -> std::string {
      if (has_value) return value;
      if (i + 1 >= argc) throw UsageError("option " + arg + " needs a value; see --help");
      return argv[++i];
    };
    auto flag = [&]() {
      if (has_value) throw UsageError("option " + arg + " takes no value");
    };
    if (arg == "-h" || arg == "--help") {
      flag();
      opt.help = true;
    } else if (arg == "--input") {
      opt.input = next();
    } else if (arg == "--output") {
      opt.output = next();
    } else if (arg == "--image-size") {
      const std::string v = next();
      const auto x = v.find('x');
      if (x == std::string::npos) {
        throw UsageError("invalid value '" + v +
                         "' for --image-size (expected WxH, e.g. 1088x832)");
      }
      opt.image_width = to_int("--image-size", v.substr(0, x), 1);
      opt.image_height = to_int("--image-size", v.substr(x + 1), 1);
    } else if (arg == "--window") {
      opt.window = to_int(arg, next(), 3);
    } else if (arg == "--stride") {
      opt.stride = to_int(arg, next(), 1);
    } else if (arg == "--batch-size" || arg == "--batch_size") {
      opt.batch_size = to_int(arg, next(), 1);
    } else if (arg == "--blur-passes") {
      opt.filter.blur_passes = to_int(arg, next(), 0);
    } else if (arg == "--gain") {
      opt.gain = to_float(arg, next());
    } else if (arg == "--backend") {
      opt.backend = next();
      if (opt.backend != "auto" && opt.backend != "gloo" && opt.backend != "nccl") {
        throw UsageError("invalid value '" + opt.backend + "' for --backend (auto, gloo or nccl)");
      }
    } else if (arg == "--cpu") {
      flag();
      opt.cpu = true;
    } else if (arg == "--reference") {
      flag();
      opt.reference = true;
    } else {
      throw UsageError("unknown option '" + arg + "'; see --help");
    }
  }
  return opt;
}

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

std::size_t process_windows_cpu(const Image& img, const WindowGrid& grid,
                                std::span<const std::int64_t> indices, int batch_size,
                                const FilterOptions& opt, float gain, std::uint8_t* tiles) {
  const std::size_t elems = grid.window_elems();
  const std::size_t bs = static_cast<std::size_t>(batch_size);
  std::vector<float> batch(bs * elems);
  std::vector<float> result(elems);
  FilterWorkspace ws;
  std::size_t batches = 0;
  for (std::size_t first = 0; first < indices.size(); first += bs, ++batches) {
    const std::size_t count = std::min(bs, indices.size() - first);
    for (std::size_t k = 0; k < count; ++k) {
      cut_window(img, grid, static_cast<int>(indices[first + k]), batch.data() + k * elems);
    }
    for (std::size_t k = 0; k < count; ++k) {
      const int index = static_cast<int>(indices[first + k]);
      blur_sobel_cpu(batch.data() + k * elems, result.data(), Image::kChannels, grid.window(),
                     grid.window(), opt, ws);
      make_tile(grid, index, result.data(), gain, tiles);
      tiles += grid.tile_bytes(index);
    }
  }
  return batches;
}

Image reference_output(const Image& img, const Options& opt) {
  const WindowGrid grid(img.width, img.height, opt.window, opt.stride);
  std::vector<std::int64_t> all(static_cast<std::size_t>(grid.count()));
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::int64_t>(i);
  std::vector<std::uint8_t> tiles(tiles_bytes(grid, all));
  process_windows_cpu(img, grid, all, opt.batch_size, opt.filter, opt.gain, tiles.data());
  Stitcher st(grid);
  const std::uint8_t* t = tiles.data();
  for (const std::int64_t i : all) {
    st.add(static_cast<int>(i), t);
    t += grid.tile_bytes(static_cast<int>(i));
  }
  return st.image();
}

}  // namespace windowed_image
