// The windowed-image job's command line (usage() and parse_args() of pipeline.h): one option
// table, parsed by example_cli (Boost.Program_options).
#include "example_cli.h"
#include "pipeline.h"

namespace windowed_image {
namespace {

namespace cli = example_cli;

constexpr const char* kIntro = R"(usage: gpurun --nproc_per_node=N windowed_image [options]

Cuts an image into overlapping windows, spreads them over the ranks (DistributedSampler, no
shuffle), runs a Gaussian blur + Sobel edge filter on each window (CUDA kernel on GPU ranks,
vectorised loops on CPU ranks), gathers every result to rank 0 and writes the stitched PNG.

)";

// "1088x832" -> width, height (each >= 1).
cli::po::value_semantic* image_size(int* width, int* height) {
  return cli::custom("WxH", [width, height](const std::string& v) {
    const std::size_t x = v.find('x');
    const auto w = cli::to_integer(v.substr(0, x));
    const auto h = x == std::string::npos ? std::nullopt : cli::to_integer(v.substr(x + 1));
    if (!w || !h || *w < 1 || *h < 1 || *w > cli::kMaxInt || *h > cli::kMaxInt) {
      throw cli::BadValue("WxH with W and H >= 1, e.g. 1088x832");
    }
    *width = static_cast<int>(*w);
    *height = static_cast<int>(*h);
  });
}

// The option table, writing into `o`.
cli::CommandLine command_line(Options& o) {
  cli::CommandLine cl(kIntro, 22, &o.help);
  cl.section("options:");
  cl.add("input", cli::text("PATH", &o.input),
         "PNG to process (default: a built-in 1088x832 image -> 48 windows)");
  cl.add("output", cli::text("PATH", &o.output),
         "where rank 0 writes the result (default: out/windowed_image.png)");
  cl.add("image-size", image_size(&o.image_width, &o.image_height),
         "size of the built-in image (default: 1088x832)");
  cl.add("window", cli::integer("N", &o.window, 3), "window side in pixels (default: 192)");
  cl.add("stride", cli::integer("N", &o.stride, 1),
         "distance between window origins, <= window (default: 128)");
  cl.add("batch-size,batch_size", cli::integer("N", &o.batch_size, 1),
         "windows per batch on each rank (default: 1)");
  cl.add("blur-passes", cli::integer("N", &o.filter.blur_passes, 0),
         "Gaussian passes before Sobel (default: 1)");
  cl.add("gain", cli::positive("G", &o.gain), "edge magnitude to 8-bit scale (default: 200)");
  cl.add("backend", cli::choice("B", &o.backend, {"auto", "gloo", "nccl"}),
         "auto | gloo | nccl (default: auto)");
  cl.add("cpu", cli::flag(&o.cpu), "use the CPU even where a GPU is visible");
  cl.add("small-png", cli::flag(&o.small_png),
         "compress the PNG fully with libpng: ~1.5x smaller, ~5x slower to write, one\n"
         "thread (default: zlib's fast level in bands, on --png-threads threads)");
  cl.add("png-threads", cli::integer("N", &o.png_threads, 0, 1024),
         "threads that compress the PNG on rank 0 (default 0: as many as there are ranks\n"
         "on its host, whose cores are idle once they have sent their tiles; 1 with\n"
         "--reference); the file's bytes do not depend on it");
  cl.add("reference", cli::flag(&o.reference),
         "run all windows in this one process (no launcher needed) and write the\n"
         "output: the result every distributed run must match bit for bit");
  return cl;
}

}  // namespace

std::string usage() { return cli::usage(command_line); }

Options parse_args(int argc, const char* const* argv) {
  return cli::parse<Options, UsageError>(command_line, argc, argv);
}

}  // namespace windowed_image
