#include "dataset.h"

#include <zlib.h>

#include <cmath>
#include <numbers>
#include <sstream>

namespace train {

std::uint64_t SplitMix64::next() {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double SplitMix64::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

double SplitMix64::normal() {
  double u1 = uniform();
  while (u1 <= 0.0) u1 = uniform();
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

namespace {

void reserve(Dataset& d, std::size_t n) {
  d.x.reserve(n * static_cast<std::size_t>(d.features));
  d.y.reserve(n);
}

// Gaussian blobs: class k has a random centre (spread 3) and unit-ish spherical noise.
Split make_blobs(const DatasetOptions& opt) {
  if (opt.features < 1 || opt.classes < 2) {
    throw UsageError("blobs need --features >= 1 and --classes >= 2");
  }
  SplitMix64 rng(opt.seed);
  const auto f = static_cast<std::size_t>(opt.features);
  std::vector<double> centres(static_cast<std::size_t>(opt.classes) * f);
  for (auto& c : centres) c = 3.0 * rng.normal() / std::sqrt(static_cast<double>(f) / 8.0 + 1.0);
  Split s;
  for (Dataset* d : {&s.train, &s.test}) {
    d->features = opt.features;
    d->classes = opt.classes;
    const std::size_t n = d == &s.train ? opt.train_samples : opt.test_samples;
    reserve(*d, n);
    for (std::size_t i = 0; i < n; ++i) {
      const auto k =
          static_cast<std::int32_t>(rng.next() % static_cast<std::uint64_t>(opt.classes));
      for (std::size_t j = 0; j < f; ++j) {
        d->x.push_back(static_cast<float>(centres[static_cast<std::size_t>(k) * f + j] +
                                          opt.noise * rng.normal()));
      }
      d->y.push_back(k);
    }
  }
  s.description = "blobs: " + std::to_string(opt.classes) + " Gaussian classes in " +
                  std::to_string(opt.features) + "-D";
  return s;
}

// Interleaved spirals: class k is an arm starting at angle 2*pi*k/C, 1.5 turns, radius 0..1.
Split make_spirals(const DatasetOptions& opt) {
  if (opt.classes < 2) throw UsageError("spirals need --classes >= 2");
  SplitMix64 rng(opt.seed);
  Split s;
  for (Dataset* d : {&s.train, &s.test}) {
    d->features = 2;
    d->classes = opt.classes;
    const std::size_t n = d == &s.train ? opt.train_samples : opt.test_samples;
    reserve(*d, n);
    for (std::size_t i = 0; i < n; ++i) {
      const auto k =
          static_cast<std::int32_t>(rng.next() % static_cast<std::uint64_t>(opt.classes));
      const double t = 0.05 + 0.95 * rng.uniform();
      const double angle =
          2.0 * std::numbers::pi * (static_cast<double>(k) / opt.classes + 1.5 * t) +
          0.2 * opt.noise * rng.normal();
      d->x.push_back(static_cast<float>(2.0 * t * std::cos(angle)));
      d->x.push_back(static_cast<float>(2.0 * t * std::sin(angle)));
      d->y.push_back(k);
    }
  }
  s.description = "spirals: " + std::to_string(opt.classes) + " interleaved arms in 2-D";
  return s;
}

// scikit-learn's digits.csv.gz: 1797 rows of 64 pixel values (0..16) then the label.
Split make_digits(const DatasetOptions& opt) {
  const std::string path = opt.data_file.empty() ? kDefaultDigitsFile : opt.data_file;
  gzFile gz = gzopen(path.c_str(), "rb");
  if (!gz) {
    throw UsageError("cannot open the digits data '" + path +
                     "' (missing); install Debian's python3-sklearn (it ships "
                     "sklearn/datasets/data/digits.csv.gz) or pass --data-file PATH");
  }
  std::string text;
  char buf[1 << 16];
  int got = 0;
  while ((got = gzread(gz, buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(got));
  gzclose(gz);
  Dataset all;
  all.features = 64;
  all.classes = 10;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::istringstream ls(line);
    std::string cell;
    std::vector<float> vals;
    while (std::getline(ls, cell, ',')) vals.push_back(std::stof(cell));
    if (vals.size() != 65) {
      throw UsageError("'" + path + "' is not the digits CSV (a row has " +
                       std::to_string(vals.size()) + " values, expected 65)");
    }
    for (int j = 0; j < 64; ++j) all.x.push_back(vals[static_cast<std::size_t>(j)] / 16.0f);
    all.y.push_back(static_cast<std::int32_t>(vals[64]));
  }
  // A seeded shuffle, then the first 80% train, the rest test.
  std::vector<std::size_t> order(all.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  SplitMix64 rng(opt.seed);
  for (std::size_t i = order.size(); i > 1; --i) {
    std::swap(order[i - 1], order[rng.next() % i]);
  }
  Split s;
  const std::size_t n_train = order.size() * 4 / 5;
  for (std::size_t r = 0; r < order.size(); ++r) {
    Dataset& d = r < n_train ? s.train : s.test;
    d.features = 64;
    d.classes = 10;
    d.x.insert(d.x.end(), all.row(order[r]), all.row(order[r]) + 64);
    d.y.push_back(all.y[order[r]]);
  }
  s.description = "digits: scikit-learn 8x8 handwritten digits (" + path + ")";
  return s;
}

}  // namespace

Split make_dataset(const DatasetOptions& opt) {
  if (opt.name == "blobs") return make_blobs(opt);
  if (opt.name == "spirals") return make_spirals(opt);
  if (opt.name == "digits") return make_digits(opt);
  throw UsageError("unknown --dataset '" + opt.name + "' (blobs, spirals or digits)");
}

}  // namespace train
