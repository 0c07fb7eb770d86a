// What one rank asked a collective to do: a small fixed-size descriptor that every communicator
// path exchanges or compares before it touches any data, so that a mismatched collective (another
// count, type, root or reduce op, another collective, or one skipped) is a CommError on every rank
// that names both sides, never wrong numbers (torch's TORCH_DISTRIBUTED_DEBUG=DETAIL check, always
// on here where it is free). The shared-memory path carries it in each rank's header line next to
// the arrival counter; the TCP path exchanges it in one round before the data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "gpurun/worker/communicator.h"

namespace gpurun::worker::detail {

enum class CollOp : std::uint8_t {
  kNone = 0,
  kAllReduce,
  kBroadcast,
  kAllGather,
  kGather,
  kReduceScatter,
  kBarrier,
};

const char* to_string(CollOp op);

// Plain bytes (it crosses process boundaries as is, between ranks of one build).
struct CollectiveDesc {
  std::uint64_t count = 0;        // elements: the buffer (all_reduce, broadcast), per rank
                                  // (all_gather, reduce_scatter) or in all (gather)
  std::uint64_t counts_hash = 0;  // gather: a hash of the counts vector (it must be identical)
  std::int32_t root = -1;         // broadcast, gather; -1 otherwise
  CollOp op = CollOp::kNone;
  std::uint8_t type = 0xff;    // DataType, 0xff for barrier
  std::uint8_t reduce = 0xff;  // ReduceOp, 0xff where there is none
  std::uint8_t pad = 0;

  static CollectiveDesc all_reduce(std::size_t count, DataType t, ReduceOp op);
  static CollectiveDesc broadcast(std::size_t count, DataType t, int root);
  static CollectiveDesc all_gather(std::size_t count, DataType t);
  static CollectiveDesc gather(const std::vector<std::size_t>& counts, DataType t, int root);
  static CollectiveDesc reduce_scatter(std::size_t count, DataType t, ReduceOp op);
  static CollectiveDesc barrier();

  friend bool operator==(const CollectiveDesc&, const CollectiveDesc&) = default;

 private:
  static CollectiveDesc make(CollOp op, std::size_t count, std::optional<DataType> t,
                             std::optional<ReduceOp> reduce, int root);
};
static_assert(sizeof(CollectiveDesc) == 24, "CollectiveDesc is part of the shared-memory layout");

// "all_reduce(1000 x float32, sum)", "broadcast(3 x int64, root 1)", "barrier()".
std::string describe(const CollectiveDesc& d);
// The part in parentheses: "1000 x float32, sum".
std::string describe_args(const CollectiveDesc& d);

// The descriptor with its collective number, as the TCP path sends it.
struct NumberedDesc {
  std::uint64_t seq = 0;
  CollectiveDesc desc;
};
static_assert(sizeof(NumberedDesc) == 32);

// Thrown by a transport that found different descriptors; carries what every rank called.
class CollectiveMismatch : public std::runtime_error {
 public:
  explicit CollectiveMismatch(std::vector<NumberedDesc> all);
  const std::vector<NumberedDesc>& all() const { return all_; }

 private:
  std::vector<NumberedDesc> all_;
};

// True when every entry equals all[0] (seq included).
bool all_match(const std::vector<NumberedDesc>& all);

// The CommError text for a mismatch seen by `rank` in its collective #seq:
// "all_reduce #7 mismatch: rank 0 called all_reduce(1000 x float32, sum), rank 1 called
// all_reduce(500 x float32, sum); ..." — ranks that called the same thing are grouped.
std::string mismatch_message(const char* backend, int rank, int size,
                             const std::vector<NumberedDesc>& all);

}  // namespace gpurun::worker::detail
