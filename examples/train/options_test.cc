#include "options.h"

#include <catch2/catch.hpp>

using namespace train;

namespace {
Options parse(std::vector<const char*> args) {
  args.insert(args.begin(), "train");
  return parse_args(static_cast<int>(args.size()), args.data());
}
}  // namespace

TEST_CASE("global batch -> per-rank batch and accumulation, as the user guide computes it",
          "[options]") {
  // global_batch_size = 64, num_gpus = 8, per_device_batch_size = 1 -> 8 accumulation steps.
  Options o = parse({"--global-batch-size", "64", "--batch-size", "1"});
  BatchPlan p = plan_batches(o, 8);
  CHECK(p.per_rank == 1);
  CHECK(p.accum == 8);
  CHECK(p.effective == 64);
  // The same global batch on 1, 2 and 4 ranks.
  o = parse({"--global-batch-size", "64", "--batch-size", "16"});
  CHECK(plan_batches(o, 1).accum == 4);
  CHECK(plan_batches(o, 2).accum == 2);
  CHECK(plan_batches(o, 4).accum == 1);
  CHECK(plan_batches(o, 4).effective == 64);
}

TEST_CASE("a global batch that does not divide names the numbers", "[options]") {
  const Options o = parse({"--global-batch-size", "100", "--batch-size", "16"});
  CHECK_THROWS_WITH(plan_batches(o, 2), Catch::Contains("--global-batch-size 100") &&
                                            Catch::Contains("--batch-size 16") &&
                                            Catch::Contains("world size 2 = 32"));
  const Options c =
      parse({"--global-batch-size", "64", "--batch-size", "16", "--grad-accum-steps", "3"});
  CHECK_THROWS_WITH(plan_batches(c, 2), Catch::Contains("contradicts"));
}

TEST_CASE("explicit accumulation and the effective batch", "[options]") {
  // 16 x 2 x 8 = 256, the seed's memory-constrained example.
  const Options o = parse({"--batch-size", "16", "--grad-accum-steps", "2"});
  const BatchPlan p = plan_batches(o, 8);
  CHECK(p.accum == 2);
  CHECK(p.effective == 256);
}

TEST_CASE("learning-rate scaling relative to the base batch", "[options]") {
  Options o = parse({"--batch-size", "32", "--lr", "0.001", "--lr-scaling", "linear"});
  CHECK(plan_batches(o, 4).lr == Approx(0.004));  // the guide's 1e-3 on 1 GPU -> 4e-3 on 4
  o.lr_scaling = "sqrt";
  CHECK(plan_batches(o, 4).lr == Approx(0.002));
  o.lr_scaling = "none";
  CHECK(plan_batches(o, 4).lr == Approx(0.001));
  o = parse(
      {"--batch-size", "32", "--lr", "0.1", "--lr-scaling", "linear", "--base-batch-size", "256"});
  CHECK(plan_batches(o, 2).lr == Approx(0.025));
}

TEST_CASE("warmup then cosine", "[options]") {
  CHECK(lr_at("cosine", 1.0f, 0, 4, 104) == Approx(0.25));
  CHECK(lr_at("cosine", 1.0f, 3, 4, 104) == Approx(1.0));
  CHECK(lr_at("cosine", 1.0f, 4, 4, 104) == Approx(1.0));
  CHECK(lr_at("cosine", 1.0f, 54, 4, 104) == Approx(0.5));
  CHECK(lr_at("cosine", 1.0f, 104, 4, 104) == Approx(0.0).margin(1e-7));
  CHECK(lr_at("constant", 0.5f, 90, 4, 104) == Approx(0.5));
}

TEST_CASE("parse_args accepts both spellings and rejects mistakes", "[options]") {
  const Options o = parse({"--batch_size=8", "--hidden", "128,64,32", "--optimizer", "adam",
                           "--save-dir", "ck", "--resume", "--amp"});
  CHECK(o.batch_size == 8);
  CHECK(o.hidden == std::vector<int>{128, 64, 32});
  CHECK(o.optimizer.kind == "adam");
  CHECK(o.resume);
  CHECK(o.amp);
  CHECK_THROWS_WITH(parse({"--resume"}), Catch::Contains("--save-dir"));
  CHECK_THROWS_WITH(parse({"--lr-scaling", "cubic"}), Catch::Contains("none, linear, sqrt"));
  CHECK_THROWS_WITH(parse({"--epochs", "0"}), Catch::Contains("--epochs"));
  CHECK_THROWS_WITH(parse({"--hidden", "64,,3"}), Catch::Contains("--hidden"));
  CHECK_THROWS_WITH(parse({"--bogus"}), Catch::Contains("unknown option '--bogus'"));
}

TEST_CASE("the resume signature ignores how the batch is split", "[options]") {
  ModelShape s;
  s.widths = {16, 64, 8};
  const Options a = parse({"--global-batch-size", "64", "--batch-size", "16"});
  CHECK(resume_signature(a, plan_batches(a, 1), s) == resume_signature(a, plan_batches(a, 4), s));
  const Options b = parse({"--global-batch-size", "64", "--batch-size", "16", "--lr", "0.1"});
  CHECK(resume_signature(a, plan_batches(a, 1), s) != resume_signature(b, plan_batches(b, 1), s));
}
