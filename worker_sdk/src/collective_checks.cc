#include "collective_checks.h"

#include <fmt/format.h>

#include "gpurun/common/error.h"

namespace gpurun::worker::detail {

void check_root(int rank, int size, int root, const char* op) {
  if (root < 0 || root >= size) {
    throw CommError(fmt::format(
        "{} on rank {}: root {} is not a rank of this group (0..{}); pass a root in range", op,
        rank, root, size - 1));
  }
}

void check_counts(int rank, int size, const std::vector<std::size_t>& counts, const char* op) {
  if (counts.size() != static_cast<std::size_t>(size)) {
    throw CommError(
        fmt::format("{} on rank {}: counts has {} entries but the group has {} ranks; pass one "
                    "count per rank (the same on every rank)",
                    op, rank, counts.size(), size));
  }
}

}  // namespace gpurun::worker::detail
