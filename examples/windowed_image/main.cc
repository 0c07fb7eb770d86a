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

gw::Backend parse_backend(const std::string& b) {
  if (b == "gloo") return gw::Backend::kGloo;
  if (b == "nccl") return gw::Backend::kNccl;
  return gw::Backend::kAuto;
}

int run_reference(const wi::Options& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  const wi::Image img = wi::load_input(opt);
  const wi::WindowGrid grid(img.width, img.height, opt.window, opt.stride);
  wi::write_png(opt.output, wi::reference_output(img, opt));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  say("Reference: {} windows of (3, {}, {}) in one process, {:.3f} s", grid.count(), opt.window,
      opt.window, s);
  say("Output: {} ({}x{})", opt.output, img.width, img.height);
  return 0;
}

int run_distributed(const wi::Options& opt) {
  gw::InitOptions init;
  init.backend = parse_backend(opt.backend);
  init.use_gpu = !opt.cpu;
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
  // Every rank reads the input itself (a path all ranks can see, or the built-in image).
  const wi::Image img = wi::load_input(opt);
  const wi::WindowGrid grid(img.width, img.height, opt.window, opt.stride);
  const std::size_t elems = grid.window_elems();

  gw::SamplerOptions so;
  so.shuffle = false;
  const gw::DistributedSampler sampler(static_cast<std::size_t>(grid.count()), ctx->world_size(),
                                       rank, so);
  std::vector<std::int64_t> indices;
  for (std::size_t i : sampler.indices()) indices.push_back(static_cast<std::int64_t>(i));
  const std::size_t bs = static_cast<std::size_t>(opt.batch_size);
  say("Rank {}: Processing {} batches...", rank, (indices.size() + bs - 1) / bs);

  std::vector<float> results(indices.size() * elems);
  if (cuda) {
#ifdef WINDOWED_IMAGE_HAS_CUDA
    std::vector<float> batch(bs * elems);
    for (std::size_t first = 0; first < indices.size(); first += bs) {
      const std::size_t count = std::min(bs, indices.size() - first);
      for (std::size_t k = 0; k < count; ++k) {
        wi::cut_window(img, grid, static_cast<int>(indices[first + k]), batch.data() + k * elems);
      }
      wi::blur_sobel_cuda(ctx->device().index, batch.data(), results.data() + first * elems, count,
                          wi::Image::kChannels, grid.window(), opt.filter);
    }
#endif
  } else {
    wi::process_windows_cpu(img, grid, indices, opt.batch_size, opt.filter, results.data());
  }

  // Indices travel with the data: the sampler pads the last round by wrapping around, and rank 0
  // must keep exactly one copy of every window.
  auto& comm = ctx->comm();
  const auto got_idx = comm.gather_host(std::span<const std::int64_t>(indices), 0);
  const auto got_data = comm.gather_host(std::span<const float>(results), 0);
  if (!ctx->is_root()) return 0;

  wi::Stitcher stitcher(grid);
  std::size_t received = 0;
  std::vector<std::size_t> first_shape;
  for (std::size_t r = 0; r < got_idx.size(); ++r) {
    if (got_data[r].size() != got_idx[r].size() * elems) {
      throw std::runtime_error(fmt::format("rank {} sent {} floats for {} windows (expected {})", r,
                                           got_data[r].size(), got_idx[r].size(),
                                           got_idx[r].size() * elems));
    }
    for (std::size_t k = 0; k < got_idx[r].size(); ++k) {
      const auto idx = got_idx[r][k];
      if (idx < 0 || idx >= grid.count()) {
        throw std::runtime_error(
            fmt::format("rank {} sent window index {} (of {})", r, idx, grid.count()));
      }
      received += stitcher.add(static_cast<int>(idx), got_data[r].data() + k * elems) ? 1 : 0;
    }
  }
  if (!stitcher.complete()) {
    throw std::runtime_error(fmt::format("{} of {} windows missing after the gather",
                                         grid.count() - stitcher.received(), grid.count()));
  }
  wi::write_png(opt.output, stitcher.to_image(opt.gain));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  say("SUCCESS: Got {} outputs. Example shape[0]: ({}, {}, {})", received, wi::Image::kChannels,
      grid.window(), grid.window());
  say("Output: {} ({}x{}, {} windows on {} ranks, {:.3f} s)", opt.output, img.width, img.height,
      grid.count(), ctx->world_size(), s);
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
