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

TEST_CASE("no flags: the defaults", "[options]") {
  const Options o = parse({});
  const Options d;
  CHECK(o.data.name == "blobs");
  CHECK(o.data.train_samples == d.data.train_samples);
  CHECK(o.hidden == std::vector<int>{64, 64});
  CHECK(o.epochs == 10);
  CHECK(o.batch_size == 32);
  CHECK(o.lr == 0.05f);
  CHECK(o.lr_scaling == "none");
  CHECK(o.schedule == "cosine");
  CHECK(o.seed == 0);
  CHECK(o.threads == 1);
  CHECK(o.progress);
  CHECK_FALSE(o.cpu);
  CHECK_FALSE(o.help);
}

TEST_CASE("'--flag value', '--flag=value' and underscore spellings of every flag", "[options]") {
  const Options o = parse({"--dataset=spirals",
                           "--data_file",
                           "d.csv.gz",
                           "--samples=100",
                           "--test_samples",
                           "50",
                           "--features=4",
                           "--classes",
                           "3",
                           "--noise=0.5",
                           "--data_seed",
                           "7",
                           "--epochs=3",
                           "--global_batch_size=64",
                           "--grad-accum-steps",
                           "2",
                           "--lr=0.1",
                           "--lr_scaling",
                           "sqrt",
                           "--base-batch-size=16",
                           "--warmup_epochs",
                           "0.5",
                           "--schedule=constant",
                           "--momentum",
                           "0",
                           "--weight_decay=1e-4",
                           "--seed",
                           "18446744073",
                           "--stop_after_epoch",
                           "2",
                           "--metrics=m.jsonl",
                           "--no_progress",
                           "--backend",
                           "gloo",
                           "--cpu",
                           "--threads=2"});
  CHECK(o.data.name == "spirals");
  CHECK(o.data.data_file == "d.csv.gz");
  CHECK(o.data.train_samples == 100);
  CHECK(o.data.test_samples == 50);
  CHECK(o.data.features == 4);
  CHECK(o.data.classes == 3);
  CHECK(o.data.noise == 0.5f);
  CHECK(o.data.seed == 7);
  CHECK(o.epochs == 3);
  CHECK(o.global_batch_size == 64);
  CHECK(o.grad_accum_steps == 2);
  CHECK(o.lr == 0.1f);
  CHECK(o.lr_scaling == "sqrt");
  CHECK(o.base_batch_size == 16);
  CHECK(o.warmup_epochs == 0.5f);
  CHECK(o.schedule == "constant");
  CHECK(o.optimizer.momentum == 0.0f);
  CHECK(o.optimizer.weight_decay == 1e-4f);
  CHECK(o.seed == 18446744073ULL);
  CHECK(o.stop_after_epoch == 2);
  CHECK(o.metrics == "m.jsonl");
  CHECK_FALSE(o.progress);
  CHECK(o.backend == "gloo");
  CHECK(o.cpu);
  CHECK(o.threads == 2);
  CHECK(parse({"--epochs", "2", "--epochs=5"}).epochs == 5);  // the last one wins
}

TEST_CASE("bad values name the flag, the value and the expected form", "[options]") {
  CHECK_THROWS_WITH(parse({"--epochs", "0"}),
                    "invalid value '0' for --epochs (expected an integer >= 1)");
  CHECK_THROWS_WITH(parse({"--classes=1"}),
                    "invalid value '1' for --classes (expected an integer >= 2)");
  CHECK_THROWS_WITH(parse({"--batch_size", "x"}),
                    "invalid value 'x' for --batch_size (expected an integer >= 1)");
  CHECK_THROWS_WITH(parse({"--epochs", "2000000000"}),
                    "invalid value '2000000000' for --epochs (expected an integer <= 1000000000)");
  CHECK_THROWS_WITH(parse({"--seed", "-1"}),
                    "invalid value '-1' for --seed (expected an integer >= 0)");
  CHECK_THROWS_WITH(parse({"--lr", "-0.1"}),
                    "invalid value '-0.1' for --lr (expected a number >= 0)");
  CHECK_THROWS_WITH(parse({"--noise", "nan"}), Catch::Contains("'nan' for --noise"));
  CHECK_THROWS_WITH(parse({"--optimizer", "lamb"}),
                    "invalid value 'lamb' for --optimizer (expected one of: sgd, adam)");
  CHECK_THROWS_WITH(parse({"--hidden", "64,0"}),
                    "invalid value '64,0' for --hidden (expected comma-separated integers >= 1, "
                    "e.g. 64,64)");
  CHECK_THROWS_WITH(parse({"--hidden", "64,"}), Catch::Contains("'64,' for --hidden"));
}

TEST_CASE("unknown options, missing values and values given to switches", "[options]") {
  CHECK_THROWS_WITH(parse({"--epoch", "3"}), "unknown option '--epoch'; see --help");
  CHECK_THROWS_WITH(parse({"--no-progress=1"}), Catch::Contains("--no-progress takes no value"));
  CHECK_THROWS_WITH(parse({"--epochs"}), "option --epochs needs a value; see --help");
  CHECK_THROWS_WITH(parse({"--save-dir", "--resume"}), Catch::Contains("--save-dir needs a value"));
  CHECK_THROWS_WITH(parse({"--hidden="}), "option --hidden needs a value; see --help");
  CHECK_THROWS_WITH(parse({"data.csv"}), "unexpected argument 'data.csv'; see --help");
}

TEST_CASE("help flags (-h, --help), the usage text lists the flags", "[options]") {
  CHECK(parse({"-h"}).help);
  CHECK(parse({"--help", "--epochs", "3"}).help);
  const std::string u = usage();
  CHECK(u.rfind("usage: gpurun --nproc_per_node=N train [options]\n", 0) == 0);
  CHECK_THAT(u, Catch::Contains("\ndata and model:\n  --dataset NAME          blobs | spirals"));
  CHECK_THAT(u, Catch::Contains("\n  --global-batch-size N   samples per optimizer step over all "
                                "ranks; sets the accumulation\n                          steps"));
  CHECK_THAT(u, Catch::Contains("\ndevices:\n  --backend B             auto | gloo | nccl"));
  CHECK_THAT(u, Catch::EndsWith("\n  -h, --help              this text\n"));
  for (const char* flag : {"--batch-size", "--lr-scaling", "--seed", "--resume", "--no-progress",
                           "--threads", "--amp"}) {
    CHECK_THAT(u, Catch::Contains(std::string("\n  ") + flag + " "));
  }
  CHECK_THAT(u, !Catch::Contains("_size"));
}

TEST_CASE("the resume signature ignores how the batch is split", "[options]") {
  ModelShape s;
  s.widths = {16, 64, 8};
  const Options a = parse({"--global-batch-size", "64", "--batch-size", "16"});
  CHECK(resume_signature(a, plan_batches(a, 1), s) == resume_signature(a, plan_batches(a, 4), s));
  const Options b = parse({"--global-batch-size", "64", "--batch-size", "16", "--lr", "0.1"});
  CHECK(resume_signature(a, plan_batches(a, 1), s) != resume_signature(b, plan_batches(b, 1), s));
}
