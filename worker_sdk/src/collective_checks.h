// Argument checks every Communicator implementation shares, with the same messages whatever the
// backend: a root outside the group, a counts vector that does not have one entry per rank.
#pragma once

#include <cstddef>
#include <vector>

namespace gpurun::worker::detail {

// Throws CommError naming the collective, this rank and the valid range.
void check_root(int rank, int size, int root, const char* op);
// Throws CommError unless counts has `size` entries.
void check_counts(int rank, int size, const std::vector<std::size_t>& counts, const char* op);

}  // namespace gpurun::worker::detail
