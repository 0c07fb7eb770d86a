#include "dataset.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <zlib.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numbers>
#include <sstream>
#include <stdexcept>
#include <tuple>
#include <utility>

namespace train {

std::uint64_t SplitMix64::next() {
  std::uint64_t z = (state += kIncrement);
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

// Fills rows [begin, end) of d (sized for n rows) from `rng`, which stands at row 0 and is jumped
// to row `begin` (exact when every earlier draw was accepted); `row(rng, x)` draws one sample
// with `calls` next() calls unless a normal() draw was rejected. Returns false when one was.
template <typename Row>
bool fill_rows(Dataset& d, std::size_t n, std::size_t begin, std::size_t end, SplitMix64& rng,
               std::uint64_t calls, Row row) {
  const auto f = static_cast<std::size_t>(d.features);
  d.x.assign(n * f, 0.0f);
  d.y.assign(n, 0);
  rng.jump(begin * calls);
  const std::uint64_t expected = rng.state + (end - begin) * calls * SplitMix64::kIncrement;
  for (std::size_t i = begin; i < end; ++i) d.y[i] = row(rng, d.x.data() + i * f);
  return rng.state == expected;
}

// Gaussian blobs: class k has a random centre (spread 3) and unit-ish spherical noise. The
// stream: the centres (classes x features normals), then every train row, then every test row,
// each row one label draw and `features` normals (two next() calls each).
SplitPart make_blobs_part(const DatasetOptions& opt, int part, int parts) {
  if (opt.features < 1 || opt.classes < 2) {
    throw UsageError("blobs need --features >= 1 and --classes >= 2");
  }
  SplitMix64 rng(opt.seed);
  const auto f = static_cast<std::size_t>(opt.features);
  std::vector<double> centres(static_cast<std::size_t>(opt.classes) * f);
  for (auto& c : centres) c = 3.0 * rng.normal() / std::sqrt(static_cast<double>(f) / 8.0 + 1.0);
  SplitPart out;
  // Every part draws the centres itself: a rejection there shows as a different stream position.
  out.exact = rng.state == opt.seed + 2 * centres.size() * SplitMix64::kIncrement;
  const std::uint64_t calls = 1 + 2 * f;
  auto row = [&](SplitMix64& r, float* x) {
    const auto k = static_cast<std::int32_t>(r.next() % static_cast<std::uint64_t>(opt.classes));
    for (std::size_t j = 0; j < f; ++j) {
      x[j] =
          static_cast<float>(centres[static_cast<std::size_t>(k) * f + j] + opt.noise * r.normal());
    }
    return k;
  };
  for (Dataset* d : {&out.split.train, &out.split.test}) {
    d->features = opt.features;
    d->classes = opt.classes;
  }
  std::tie(out.train_begin, out.train_end) = part_rows(opt.train_samples, part, parts);
  std::tie(out.test_begin, out.test_end) = part_rows(opt.test_samples, part, parts);
  // The test rows follow the train rows in the stream: one part continues where the train rows
  // ended (exactly the sequential definition), several jump there.
  SplitMix64 test_rng = rng;
  test_rng.jump(opt.train_samples * calls);
  out.exact &= fill_rows(out.split.train, opt.train_samples, out.train_begin, out.train_end, rng,
                         calls, row);
  if (parts == 1) test_rng = rng;
  out.exact &= fill_rows(out.split.test, opt.test_samples, out.test_begin, out.test_end, test_rng,
                         calls, row);
  out.split.description = "blobs: " + std::to_string(opt.classes) + " Gaussian classes in " +
                          std::to_string(opt.features) + "-D";
  return out;
}

// Interleaved spirals: class k is an arm starting at angle 2*pi*k/C, 1.5 turns, radius 0..1.
// Each row: a label draw, a uniform and a normal (four next() calls).
SplitPart make_spirals_part(const DatasetOptions& opt, int part, int parts) {
  if (opt.classes < 2) throw UsageError("spirals need --classes >= 2");
  SplitMix64 rng(opt.seed);
  SplitPart out;
  auto row = [&](SplitMix64& r, float* x) {
    const auto k = static_cast<std::int32_t>(r.next() % static_cast<std::uint64_t>(opt.classes));
    const double t = 0.05 + 0.95 * r.uniform();
    const double angle = 2.0 * std::numbers::pi * (static_cast<double>(k) / opt.classes + 1.5 * t) +
                         0.2 * opt.noise * r.normal();
    x[0] = static_cast<float>(2.0 * t * std::cos(angle));
    x[1] = static_cast<float>(2.0 * t * std::sin(angle));
    return k;
  };
  for (Dataset* d : {&out.split.train, &out.split.test}) {
    d->features = 2;
    d->classes = opt.classes;
  }
  std::tie(out.train_begin, out.train_end) = part_rows(opt.train_samples, part, parts);
  std::tie(out.test_begin, out.test_end) = part_rows(opt.test_samples, part, parts);
  SplitMix64 test_rng = rng;
  test_rng.jump(opt.train_samples * 4);
  out.exact &=
      fill_rows(out.split.train, opt.train_samples, out.train_begin, out.train_end, rng, 4, row);
  if (parts == 1) test_rng = rng;  // as for blobs
  out.exact &=
      fill_rows(out.split.test, opt.test_samples, out.test_begin, out.test_end, test_rng, 4, row);
  out.split.description = "spirals: " + std::to_string(opt.classes) + " interleaved arms in 2-D";
  return out;
}

// scikit-learn's digits.csv.gz: 1797 rows of 64 pixel values (0..16) then the label.
Split make_digits(const DatasetOptions& opt) {
  std::string path = opt.data_file;
  if (path.empty()) {
    for (const char* candidate : kDigitsFiles) {
      if (std::filesystem::exists(candidate)) {
        path = candidate;
        break;
      }
    }
  }
  if (path.empty()) {
    throw UsageError(fmt::format(
        "cannot find the digits data (looked for {}); run scripts/fetch_digits.sh (it unpacks "
        "digits.csv.gz from Debian's python3-sklearn package) or pass --data-file PATH",
        fmt::join(kDigitsFiles, " and ")));
  }
  gzFile gz = gzopen(path.c_str(), "rb");
  if (!gz) {
    throw UsageError("cannot open the digits data '" + path + "' (" + std::strerror(errno) +
                     "); run scripts/fetch_digits.sh or pass --data-file PATH to a digits.csv.gz");
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

std::pair<std::size_t, std::size_t> part_rows(std::size_t n, int part, int parts) {
  const auto p = static_cast<std::size_t>(part), ps = static_cast<std::size_t>(parts);
  return {n * p / ps, n * (p + 1) / ps};
}

SplitPart make_dataset_part(const DatasetOptions& opt, int part, int parts) {
  if (parts < 1 || part < 0 || part >= parts) {
    throw std::invalid_argument("make_dataset_part: part " + std::to_string(part) + " of " +
                                std::to_string(parts));
  }
  if (opt.name == "blobs") return make_blobs_part(opt, part, parts);
  if (opt.name == "spirals") return make_spirals_part(opt, part, parts);
  if (opt.name == "digits") {
    SplitPart out;
    out.split = make_digits(opt);
    out.train_end = out.split.train.size();
    out.test_end = out.split.test.size();
    out.whole = true;
    return out;
  }
  throw UsageError("unknown --dataset '" + opt.name + "' (blobs, spirals or digits)");
}

// One part of one is the sequential definition itself (no jumps past a rejection).
Split make_dataset(const DatasetOptions& opt) { return make_dataset_part(opt, 0, 1).split; }

}  // namespace train
