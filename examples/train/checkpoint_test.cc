#include "checkpoint.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "dataset.h"

using namespace train;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("train_ckpt_test_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

Checkpoint sample(bool adam) {
  Checkpoint ck;
  ck.epoch = 3;
  ck.world_size = 4;
  ck.rng_seed = 99;
  ck.signature = "dataset=blobs\nlr=0.05\nepochs=10\n";
  SplitMix64 rng(5);
  for (int i = 0; i < 1000; ++i) {
    ck.state.params.push_back(static_cast<float>(rng.normal()));
    ck.state.m.push_back(static_cast<float>(rng.normal()));
    if (adam) ck.state.v.push_back(static_cast<float>(rng.uniform()));
  }
  ck.state.params[7] = -0.0f;  // bit patterns, not values, must survive
  ck.state.step = 1234;
  return ck;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

}  // namespace

TEST_CASE("checkpoint round-trips every bit", "[checkpoint]") {
  TempDir dir;
  for (bool adam : {false, true}) {
    const std::string path = (dir.path / "sub" / kCheckpointFile).string();
    const Checkpoint ck = sample(adam);
    save_checkpoint(path, ck);
    CHECK_FALSE(fs::exists(path + ".tmp"));
    const Checkpoint back = load_checkpoint(path);
    CHECK(back.epoch == 3);
    CHECK(back.world_size == 4);
    CHECK(back.rng_seed == 99);
    CHECK(back.state.step == 1234);
    CHECK(same_bits(back.state.params, ck.state.params));
    CHECK(same_bits(back.state.m, ck.state.m));
    CHECK(same_bits(back.state.v, ck.state.v));
    CHECK(signature_diff(back.signature, ck.signature).empty());
  }
}

TEST_CASE("a damaged checkpoint is refused with the reason", "[checkpoint]") {
  TempDir dir;
  const std::string path = (dir.path / kCheckpointFile).string();
  save_checkpoint(path, sample(false));
  std::string bytes;
  {
    std::ifstream f(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  auto write = [&](const std::string& b) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << b;
  };
  write(bytes.substr(0, bytes.size() - 100));
  CHECK_THROWS_WITH(load_checkpoint(path), Catch::Contains("size"));
  std::string flipped = bytes;
  flipped[bytes.size() - 200] ^= 0x40;
  write(flipped);
  CHECK_THROWS_WITH(load_checkpoint(path), Catch::Contains("checksum mismatch"));
  write("hello");
  CHECK_THROWS_WITH(load_checkpoint(path), Catch::Contains("not a gpurun train checkpoint"));
  CHECK_THROWS_AS(load_checkpoint((dir.path / "none.bin").string()), UsageError);
}

TEST_CASE("saving replaces the previous checkpoint", "[checkpoint]") {
  TempDir dir;
  const std::string path = (dir.path / kCheckpointFile).string();
  Checkpoint ck = sample(false);
  save_checkpoint(path, ck);
  ck.epoch = 4;
  ck.state.params[0] = 42.0f;
  save_checkpoint(path, ck);
  const Checkpoint back = load_checkpoint(path);
  CHECK(back.epoch == 4);
  CHECK(back.state.params[0] == 42.0f);
}

TEST_CASE("signature_diff names what changed", "[checkpoint]") {
  CHECK(signature_diff("a=1\nb=2\n", "b=2\na=1\n").empty());
  CHECK(signature_diff("lr=0.05\nepochs=10\n", "lr=0.1\nepochs=10\n") ==
        "lr: checkpoint 0.05, this run 0.1");
}
