#include "dataset.h"

#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>
#include <filesystem>

using namespace train;

TEST_CASE("generated datasets are deterministic and well formed", "[dataset]") {
  for (const char* name : {"blobs", "spirals"}) {
    DatasetOptions o;
    o.name = name;
    o.train_samples = 500;
    o.test_samples = 100;
    const Split a = make_dataset(o);
    const Split b = make_dataset(o);
    INFO(name);
    CHECK(a.train.size() == 500);
    CHECK(a.test.size() == 100);
    CHECK(a.train.x == b.train.x);
    CHECK(a.test.y == b.test.y);
    CHECK(a.train.x.size() == 500u * static_cast<std::size_t>(a.train.features));
    std::vector<int> seen(static_cast<std::size_t>(a.train.classes), 0);
    for (auto y : a.train.y) {
      REQUIRE(y >= 0);
      REQUIRE(y < a.train.classes);
      ++seen[static_cast<std::size_t>(y)];
    }
    for (int s : seen) CHECK(s > 0);
    o.seed += 1;
    CHECK(make_dataset(o).train.x != a.train.x);
  }
}

TEST_CASE("digits: a missing file names the Debian package", "[dataset]") {
  DatasetOptions o;
  o.name = "digits";
  o.data_file = "/nonexistent/digits.csv.gz";
  CHECK_THROWS_WITH(make_dataset(o),
                    Catch::Contains("python3-sklearn") && Catch::Contains("--data-file"));
}

TEST_CASE("digits: parses scikit-learn's CSV layout", "[dataset]") {
  const auto path = std::filesystem::temp_directory_path() /
                    ("digits_test_" + std::to_string(::getpid()) + ".csv.gz");
  gzFile gz = gzopen(path.c_str(), "wb");
  REQUIRE(gz);
  for (int r = 0; r < 20; ++r) {
    std::string row;
    for (int j = 0; j < 64; ++j) row += std::to_string((r + j) % 17) + ".0,";
    row += std::to_string(r % 10) + "\n";
    gzputs(gz, row.c_str());
  }
  gzclose(gz);
  DatasetOptions o;
  o.name = "digits";
  o.data_file = path.string();
  const Split s = make_dataset(o);
  CHECK(s.train.size() == 16);
  CHECK(s.test.size() == 4);
  CHECK(s.train.features == 64);
  CHECK(s.train.classes == 10);
  for (float v : s.train.x) {
    REQUIRE(v >= 0.0f);
    REQUIRE(v <= 1.0f);
  }
  std::filesystem::remove(path);
}

TEST_CASE("unknown dataset names are rejected", "[dataset]") {
  DatasetOptions o;
  o.name = "mnist";
  CHECK_THROWS_WITH(make_dataset(o), Catch::Contains("blobs, spirals or digits"));
}
