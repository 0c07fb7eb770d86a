// Collectives over the ranks of one job. Implementations: GlooCommunicator (CPU, always built;
// also serves GPU ranks in hybrid jobs by staging through host memory) and NcclCommunicator
// (built only with NCCL). Buffers live on the Context's device: host memory for a CPU rank,
// device memory for a CUDA rank. Every call blocks until complete or until the communicator's
// timeout, which throws CommError naming the collective and the ranks that did not arrive.
// Not thread-safe: call collectives from one thread per rank, in the same order on every rank.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "gpurun/common/host_memory.h"

namespace gpurun::worker {

enum class Backend { kAuto, kGloo, kNccl };
enum class DataType { kFloat32, kFloat64, kInt32, kInt64, kUInt8, kFloat16, kBFloat16 };
enum class ReduceOp { kSum, kMax, kMin, kAvg };

std::string to_string(Backend b);  // "auto" | "gloo" | "nccl"
std::string to_string(DataType t);
std::string to_string(ReduceOp op);
std::size_t size_of(DataType t);

template <typename T>
constexpr DataType data_type_of() {
  if constexpr (std::is_same_v<T, float>)
    return DataType::kFloat32;
  else if constexpr (std::is_same_v<T, double>)
    return DataType::kFloat64;
  else if constexpr (std::is_same_v<T, std::int32_t>)
    return DataType::kInt32;
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return DataType::kInt64;
  else if constexpr (std::is_same_v<T, std::uint8_t>)
    return DataType::kUInt8;
  else
    static_assert(sizeof(T) == 0, "unsupported element type");
}

// What Communicator::gather_host_flat returns on the root: every rank's elements in one buffer
// (huge-page backed when large: it is written once, by the receive, so its faults are the cost).
template <typename T>
struct Gathered {
  HostVector<T> data;                // rank 0's elements, then rank 1's, ...
  std::vector<std::size_t> offsets;  // size() + 1 entries: rank r's are [offsets[r], offsets[r+1])
  int ranks() const { return offsets.empty() ? 0 : static_cast<int>(offsets.size()) - 1; }
  std::span<const T> from(int r) const {
    const auto i = static_cast<std::size_t>(r);
    return std::span<const T>(data).subspan(offsets[i], offsets[i + 1] - offsets[i]);
  }
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual Backend backend() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // ---- raw, type-erased interface (what backends implement) ----
  // In place on `count` elements.
  virtual void all_reduce(void* buf, std::size_t count, DataType type, ReduceOp op) = 0;
  virtual void broadcast(void* buf, std::size_t count, DataType type, int root) = 0;
  // recv holds size() * count elements, rank r's block at offset r * count.
  virtual void all_gather(const void* send, void* recv, std::size_t count, DataType type) = 0;
  // Variable-size gather to `root`: rank r sends counts[r] elements; on root, recv holds
  // sum(counts) elements laid out by rank. `counts` must be identical on every rank.
  virtual void gather(const void* send, void* recv, const std::vector<std::size_t>& counts,
                      DataType type, int root) = 0;
  // send holds size() * count elements; rank r receives the reduction of block r into recv.
  virtual void reduce_scatter(const void* send, void* recv, std::size_t count, DataType type,
                              ReduceOp op) = 0;
  virtual void barrier() = 0;

  // Host-memory variants of all_gather, gather and broadcast, for any rank kind: on a CPU rank the
  // buffers above already are host memory, so these default to the same calls; a communicator whose
  // buffers live on a GPU (NCCL) stages through device memory.
  virtual void host_all_gather(const void* send, void* recv, std::size_t count, DataType type) {
    all_gather(send, recv, count, type);
  }
  virtual void host_gather(const void* send, void* recv, const std::vector<std::size_t>& counts,
                           DataType type, int root) {
    gather(send, recv, counts, type, root);
  }
  virtual void host_broadcast(void* buf, std::size_t count, DataType type, int root) {
    broadcast(buf, count, type, root);
  }

  // ---- typed helpers ----
  template <typename T>
  void all_reduce(std::span<T> data, ReduceOp op = ReduceOp::kSum) {
    all_reduce(data.data(), data.size(), data_type_of<T>(), op);
  }
  template <typename T>
  T all_reduce_value(T value, ReduceOp op = ReduceOp::kSum) {
    all_reduce(&value, 1, data_type_of<T>(), op);
    return value;
  }
  template <typename T>
  void broadcast(std::span<T> data, int root = 0) {
    broadcast(data.data(), data.size(), data_type_of<T>(), root);
  }
  template <typename T>
  std::vector<T> all_gather(std::span<const T> data) {
    std::vector<T> out(data.size() * static_cast<std::size_t>(size()));
    all_gather(data.data(), out.data(), data.size(), data_type_of<T>());
    return out;
  }
  // Gathers host-memory spans of any length to `root` (lengths exchanged first), on any rank kind.
  // On root: every rank's elements in one buffer, no per-rank copies. Elsewhere: empty.
  template <typename T>
  Gathered<T> gather_host_flat(std::span<const T> data, int root = 0);
  // The same, as one vector per rank on root (an empty vector elsewhere).
  template <typename T>
  std::vector<std::vector<T>> gather_host(std::span<const T> data, int root = 0);
};

}  // namespace gpurun::worker

#include "gpurun/worker/detail/communicator_inl.h"
