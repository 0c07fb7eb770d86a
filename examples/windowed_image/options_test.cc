#include <catch2/catch.hpp>

#include "pipeline.h"

namespace wi = windowed_image;

namespace {
wi::Options parse(std::vector<const char*> args) {
  args.insert(args.begin(), "windowed_image");
  return wi::parse_args(static_cast<int>(args.size()), args.data());
}
}  // namespace

TEST_CASE("no flags: the defaults", "[options]") {
  const wi::Options o = parse({});
  CHECK(o.input.empty());
  CHECK(o.output == "out/windowed_image.png");
  CHECK(o.image_width == wi::kDefaultWidth);
  CHECK(o.image_height == wi::kDefaultHeight);
  CHECK(o.window == 192);
  CHECK(o.stride == 128);
  CHECK(o.batch_size == 1);
  CHECK(o.filter.blur_passes == 1);
  CHECK(o.gain == 200.0f);
  CHECK(o.backend == "auto");
  CHECK_FALSE(o.cpu);
  CHECK_FALSE(o.reference);
  CHECK_FALSE(o.small_png);
  CHECK(o.png_threads == 0);
  CHECK_FALSE(o.help);
}

TEST_CASE("every flag, as '--flag value' and '--flag=value'", "[options]") {
  const wi::Options o =
      parse({"--input", "in.png", "--output=o.png", "--image-size=450x300", "--window", "96",
             "--stride=64", "--batch-size", "4", "--blur-passes=0", "--gain", "1.5",
             "--backend=gloo", "--cpu", "--small-png", "--reference", "--png-threads=3"});
  CHECK(o.input == "in.png");
  CHECK(o.output == "o.png");
  CHECK(o.image_width == 450);
  CHECK(o.image_height == 300);
  CHECK(o.window == 96);
  CHECK(o.stride == 64);
  CHECK(o.batch_size == 4);
  CHECK(o.filter.blur_passes == 0);
  CHECK(o.gain == 1.5f);
  CHECK(o.backend == "gloo");
  CHECK(o.cpu);
  CHECK(o.small_png);
  CHECK(o.reference);
  CHECK(o.png_threads == 3);
}

TEST_CASE("batch size in both spellings, the last of a repeated flag wins", "[options]") {
  CHECK(parse({"--batch_size", "8"}).batch_size == 8);
  CHECK(parse({"--batch_size=8"}).batch_size == 8);
  CHECK(parse({"--batch-size=2", "--batch_size", "3"}).batch_size == 3);
  CHECK(parse({"--window", "100", "--window", "120"}).window == 120);
}

TEST_CASE("bad values name the flag, the value and the expected form", "[options]") {
  CHECK_THROWS_WITH(parse({"--window", "abc"}),
                    "invalid value 'abc' for --window (expected an integer >= 3)");
  CHECK_THROWS_WITH(parse({"--window=2"}),
                    "invalid value '2' for --window (expected an integer >= 3)");
  CHECK_THROWS_WITH(parse({"--batch_size", "0"}),
                    "invalid value '0' for --batch_size (expected an integer >= 1)");
  CHECK_THROWS_WITH(parse({"--stride", "12x"}), Catch::Contains("'12x' for --stride"));
  CHECK_THROWS_WITH(parse({"--stride", "99999999999"}),
                    Catch::Contains("(expected an integer <= 1000000000)"));
  CHECK_THROWS_WITH(parse({"--gain", "0"}),
                    "invalid value '0' for --gain (expected a positive number)");
  CHECK_THROWS_WITH(parse({"--gain", "-1"}), Catch::Contains("invalid value '-1' for --gain"));
  CHECK_THROWS_WITH(parse({"--gain", "inf"}), Catch::Contains("'inf' for --gain"));
  CHECK_THROWS_WITH(parse({"--backend", "mpi"}),
                    "invalid value 'mpi' for --backend (expected one of: auto, gloo, nccl)");
  for (const char* size : {"1088", "0x832", "1088x", "x832", "10x10x10", "-4x4"}) {
    CHECK_THROWS_WITH(parse({"--image-size", size}),
                      Catch::Contains("for --image-size (expected WxH") &&
                          Catch::Contains(std::string("'") + size + "'"));
  }
}

TEST_CASE("unknown options, abbreviations and stray arguments are refused", "[options]") {
  CHECK_THROWS_WITH(parse({"--foo"}), "unknown option '--foo'; see --help");
  CHECK_THROWS_WITH(parse({"--strid", "4"}), "unknown option '--strid'; see --help");
  CHECK_THROWS_WITH(parse({"--image_size", "4x4"}), Catch::Contains("unknown option"));
  CHECK_THROWS_WITH(parse({"-x"}), Catch::Contains("unknown option '-x'"));
  CHECK_THROWS_WITH(parse({"in.png"}), "unexpected argument 'in.png'; see --help");
  CHECK_THROWS_AS(parse({"--cpu", "--", "x"}), wi::UsageError);
}

TEST_CASE("a missing value or a value given to a switch", "[options]") {
  CHECK_THROWS_WITH(parse({"--window"}), "option --window needs a value; see --help");
  CHECK_THROWS_WITH(parse({"--output", "--cpu"}), Catch::Contains("--output needs a value"));
  CHECK_THROWS_WITH(parse({"--output", "-h"}), Catch::Contains("--output needs a value"));
  CHECK_THROWS_WITH(parse({"--window", "--batch_size=3"}),
                    Catch::Contains("--window needs a value"));
  CHECK_THROWS_WITH(parse({"--cpu=yes"}), Catch::Contains("--cpu takes no value"));
  // A value that starts with dashes but is no flag is still a value.
  CHECK(parse({"--output", "--x.png"}).output == "--x.png");
  CHECK(parse({"--output=--cpu"}).output == "--cpu");
}

TEST_CASE("help flags (-h, --help), the usage text lists every flag", "[options]") {
  CHECK(parse({"-h"}).help);
  CHECK(parse({"--window", "96", "--help"}).help);
  const std::string u = wi::usage();
  CHECK(u.rfind("usage: gpurun --nproc_per_node=N windowed_image [options]\n", 0) == 0);
  CHECK_THAT(u, Catch::Contains("\noptions:\n  --input PATH        PNG to process"));
  CHECK_THAT(u, Catch::Contains("\n  --window N          window side in pixels (default: 192)\n"));
  CHECK_THAT(u, Catch::Contains("write the\n                      output: the result"));
  CHECK_THAT(u, Catch::EndsWith("\n  -h, --help          this text\n"));
  for (const char* flag :
       {"--input", "--output", "--image-size", "--window", "--stride", "--batch-size",
        "--blur-passes", "--gain", "--backend", "--cpu", "--small-png", "--reference"}) {
    CHECK_THAT(u, Catch::Contains(std::string("\n  ") + flag + " "));
  }
  CHECK_THAT(u, !Catch::Contains("batch_size"));
}
