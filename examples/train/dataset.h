// Datasets for the training example: deterministic generated ones (Gaussian blobs, spirals) that
// every rank builds identically from the seed, and scikit-learn's handwritten digits read from
// the CSV that Debian's python3-sklearn ships. A dataset owns its samples and nothing else.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "gpurun/common/host_memory.h"

namespace train {

// A user-facing problem (bad flag, missing file): main() prints "train: error: ..." and exits 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Dataset {
  int features = 0;
  int classes = 0;
  gpurun::HostVector<float> x;  // row-major, size() * features (huge pages when large)
  std::vector<std::int32_t> y;  // labels in [0, classes)
  std::size_t size() const { return y.size(); }
  const float* row(std::size_t i) const {
    return x.data() + i * static_cast<std::size_t>(features);
  }
};

struct Split {
  Dataset train;
  Dataset test;
  std::string description;  // one line for the banner
};

struct DatasetOptions {
  std::string name = "blobs";  // blobs | spirals | digits
  std::size_t train_samples = 8000;
  std::size_t test_samples = 2000;
  int features = 16;   // blobs only (spirals: 2, digits: 64)
  int classes = 8;     // blobs and spirals (digits: 10)
  float noise = 2.0f;  // blobs: within-class sigma (2: ~95% reachable); spirals: angle noise
  std::uint64_t seed = 1234;
  std::string data_file;  // digits: path of digits.csv.gz (default: kDigitsFiles, first found)
};

// Where --dataset digits looks without --data-file, in order: an installed python3-sklearn's copy,
// then what scripts/fetch_digits.sh unpacks from that package (relative to the working directory,
// i.e. the repository root when run as the README shows).
inline constexpr const char* kDigitsFiles[] = {
    "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz", "data/digits.csv.gz"};

// Builds the split; generated sets are identical on every rank and every run for the same options.
// Throws UsageError for unknown names or an unreadable digits file (naming the package to install).
Split make_dataset(const DatasetOptions& opt);

// One rank's share of a generated dataset, for building it in parallel: rows
// [train_begin, train_end) and [test_begin, test_end) of make_dataset's split, produced from the
// same random stream (jumped to the first row), in arrays of the full size (other rows zero).
// Contiguous shares of `parts` ranks, one per `part`, together are make_dataset(opt) exactly,
// provided every part is `exact`: the jump assumes no normal() draw was rejected before the
// share (a 2^-53 event per draw); a part that sees a rejection says so, and the caller then
// builds the whole dataset instead. Datasets read from a file (digits) come whole (part 0 of 1).
struct SplitPart {
  Split split;
  std::size_t train_begin = 0, train_end = 0, test_begin = 0, test_end = 0;
  bool exact = true;
  bool whole = false;  // the split is complete already (a file-based dataset)
};
SplitPart make_dataset_part(const DatasetOptions& opt, int part, int parts);
// The rows [begin, end) of n that part `part` of `parts` generates (contiguous shares).
std::pair<std::size_t, std::size_t> part_rows(std::size_t n, int part, int parts);

// splitmix64: tiny, fast, and the same everywhere (std distributions are implementation-defined).
struct SplitMix64 {
  std::uint64_t state;
  static constexpr std::uint64_t kIncrement = 0x9e3779b97f4a7c15ULL;
  explicit SplitMix64(std::uint64_t seed) : state(seed) {}
  std::uint64_t next();
  // Skips `calls` next() calls in O(1) (the state is a counter).
  void jump(std::uint64_t calls) { state += calls * kIncrement; }
  double uniform();  // [0, 1) with 53 random bits
  double normal();   // Box-Muller
};

}  // namespace train
