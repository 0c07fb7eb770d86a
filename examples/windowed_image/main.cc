// windowed_image: the README's main job. Each rank takes its share of the windows from the
// DistributedSampler, filters them on its device, and rank 0 gathers and stitches the result.
//
//   gpurun --nproc_per_node=2 ./build/examples/windowed_image/windowed_image --output out/w.png
#include <fmt/format.h>
#include <gpurun/worker/communicator.h>
#include <gpurun/worker/console.h>
#include <gpurun/worker/sampler.h>
#include <gpurun/worker/worker.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "pipeline.h"
#ifdef WINDOWED_IMAGE_HAS_CUDA
#include "filters_cuda.h"
#endif

namespace wi = windowed_image;
namespace gw = gpurun::worker;

namespace {

// One write per line, flushed, so lines from different ranks never interleave mid-line.
template <typename... Args>
void say(fmt::format_string<Args...> f, Args&&... args) {
  std::string line = fmt::format(f, std::forward<Args>(args)...);
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

gw::Backend parse_backend(const std::string& b) {
  if (b == "gloo") return gw::Backend::kGloo;
  if (b == "nccl") return gw::Backend::kNccl;
  return gw::Backend::kAuto;
}

int run_reference(const wi::Options& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  const wi::Image img = wi::load_input(opt);
  const wi::WindowGrid grid(img.width, img.height, opt.window, opt.stride);
  wi::write_png(opt.output, wi::reference_output(img, opt), !opt.small_png,
                std::max(1, opt.png_threads));
  const double s = seconds_since(t0);
  say("Reference: {} windows of (3, {}, {}) in one process, {:.3f} s", grid.count(), opt.window,
      opt.window, s);
  say("Output: {} ({}x{})", opt.output, img.width, img.height);
  return 0;
}

int run_distributed(const wi::Options& opt) {
  gw::InitOptions init;
  init.backend = parse_backend(opt.backend);
  init.use_gpu = !opt.cpu;
  // Every rank reads the input itself (a path all ranks can see, or the built-in image), while
  // init waits for the other ranks.
  auto input_ready = std::async(std::launch::async, [&] { return wi::load_input(opt); });
  auto ctx = gpurun::init(init);
  const int rank = ctx->rank();
  say("Setup: LOCAL_RANK={}, RANK={}, WORLD_SIZE={}", ctx->local_rank(), rank, ctx->world_size());
  const bool cuda = ctx->device().is_cuda();
  if (cuda) {
    say("Using CUDA device: {}", ctx->device().str());
  } else {
    say("Using CPU");
  }
#ifndef WINDOWED_IMAGE_HAS_CUDA
  if (cuda) {
    throw wi::UsageError(
        "this build of windowed_image has no CUDA kernels (built without "
        "CUDA); rebuild with the CUDA toolkit or pass --cpu");
  }
#endif

  const auto t0 = std::chrono::steady_clock::now();
  const wi::Image img = input_ready.get();
  const wi::WindowGrid grid(img.width, img.height, opt.window, opt.stride);

  gw::SamplerOptions so;
  so.shuffle = false;
  const gw::DistributedSampler sampler(static_cast<std::size_t>(grid.count()), ctx->world_size(),
                                       rank, so);
  std::vector<std::int64_t> indices;
  for (std::size_t i : sampler.indices()) indices.push_back(static_cast<std::int64_t>(i));
  const std::size_t bs = static_cast<std::size_t>(opt.batch_size);
  say("Rank {}: Processing {} batches...", rank, (indices.size() + bs - 1) / bs);

  // Each window's result becomes its tile: the pixels it owns in the output, already 8-bit (what
  // the PNG stores), about a ninth of the float window. Rank 0 stitches its own tiles as they
  // finish; the other ranks pack theirs and send them in one gather.
  const bool root = ctx->is_root();
  std::optional<wi::Stitcher> stitcher;
  std::optional<wi::TilePacker> packer;
  wi::TileSink sink;
  if (root) {
    stitcher.emplace(grid);
    sink = [&](int index, const std::uint8_t* tile) { stitcher->add(index, tile); };
  } else {
    packer.emplace(grid, indices);
    sink = packer->sink();
  }
  wi::BatchFilter filter;
  if (cuda) {
#ifdef WINDOWED_IMAGE_HAS_CUDA
    filter = [&](const float* in, float* out, std::size_t count) {
      wi::blur_sobel_cuda(ctx->device().index, in, out, count, wi::Image::kChannels, grid.window(),
                          opt.filter);
    };
#endif
  } else {
    filter = wi::cpu_batch_filter(grid, opt.filter);
  }
  wi::process_windows(img, grid, indices, opt.batch_size, opt.gain, filter, sink);
  const double compute_s = seconds_since(t0);

  // Indices travel with the data: the sampler pads the last round by wrapping around, and rank 0
  // must keep exactly one copy of every window. Rank 0 contributes nothing (it has its tiles).
  auto& comm = ctx->comm();
  const auto got_idx = comm.gather_host_flat(
      root ? std::span<const std::int64_t>() : std::span<const std::int64_t>(indices), 0);
  const auto got_tiles =
      comm.gather_host_flat(root ? std::span<const std::uint8_t>() : packer->bytes(), 0);
  if (!root) return 0;

  for (int r = 1; r < got_idx.ranks(); ++r) {
    const auto idx = got_idx.from(r);
    for (const std::int64_t i : idx) {
      if (i < 0 || i >= grid.count()) {
        throw std::runtime_error(
            fmt::format("rank {} sent window index {} (of {})", r, i, grid.count()));
      }
    }
    const auto data = got_tiles.from(r);
    if (data.size() != wi::tiles_bytes(grid, idx)) {
      throw std::runtime_error(fmt::format("rank {} sent {} bytes for {} windows (expected {})", r,
                                           data.size(), idx.size(), wi::tiles_bytes(grid, idx)));
    }
    const std::uint8_t* tile = data.data();
    for (const std::int64_t i : idx) {
      stitcher->add(static_cast<int>(i), tile);
      tile += grid.tile_bytes(static_cast<int>(i));
    }
  }
  if (!stitcher->complete()) {
    throw std::runtime_error(fmt::format("{} of {} windows missing after the gather",
                                         grid.count() - stitcher->received(), grid.count()));
  }
  const double gather_s = seconds_since(t0) - compute_s;
  // Every other rank on this host has sent its tiles and is exiting: their cores compress the PNG.
  const int png_threads = opt.png_threads > 0 ? opt.png_threads : ctx->local_world_size();
  wi::write_png(opt.output, stitcher->image(), !opt.small_png, png_threads);
  const double s = seconds_since(t0);
  say("SUCCESS: Got {} outputs. Example shape[0]: ({}, {}, {})", stitcher->received(),
      wi::Image::kChannels, grid.window(), grid.window());
  say("Output: {} ({}x{}, {} windows on {} ranks, {:.3f} s: rank 0 computed {:.3f} s, gather + "
      "stitch {:.3f} s, PNG {:.3f} s{})",
      opt.output, img.width, img.height, grid.count(), ctx->world_size(), s, compute_s, gather_s,
      s - compute_s - gather_s,
      opt.small_png ? "" : fmt::format(" on {} thread{}", png_threads, png_threads > 1 ? "s" : ""));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  wi::Options opt;
  try {
    opt = wi::parse_args(argc, argv);
    if (opt.help) {
      std::fputs(wi::usage().c_str(), stdout);
      return 0;
    }
    if (opt.reference) return run_reference(opt);
  } catch (const wi::UsageError& e) {
    std::fprintf(stderr, "windowed_image: error: %s\n", e.what());
    return 2;
  }
  return gw::run_main([&] { return run_distributed(opt); });
}
