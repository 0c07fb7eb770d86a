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
#include <ranges>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "gpurun/common/error.h"
#include "gpurun/common/host_memory.h"

namespace gpurun::worker {

enum class Backend { kAuto, kGloo, kNccl };
enum class DataType { kFloat32, kFloat64, kInt32, kInt64, kUInt8, kFloat16, kBFloat16, kUInt64 };
enum class ReduceOp { kSum, kMax, kMin, kAvg };

std::string to_string(Backend b);  // "auto" | "gloo" | "nccl"
std::string to_string(DataType t);
std::string to_string(ReduceOp op);
std::size_t size_of(DataType t);

// The DataType of a C++ element type: float, double, and integers by width and sign (int32,
// int64, uint64 incl. std::size_t, uint8); bool, char and std::byte travel as uint8.
template <typename T>
constexpr DataType data_type_of() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, float>)
    return DataType::kFloat32;
  else if constexpr (std::is_same_v<U, double>)
    return DataType::kFloat64;
  else if constexpr (std::is_same_v<U, bool> || std::is_same_v<U, char> ||
                     std::is_same_v<U, std::byte> || std::is_same_v<U, std::uint8_t>)
    return DataType::kUInt8;
  else if constexpr (std::is_integral_v<U> && std::is_signed_v<U> && sizeof(U) == 4)
    return DataType::kInt32;
  else if constexpr (std::is_integral_v<U> && std::is_signed_v<U> && sizeof(U) == 8)
    return DataType::kInt64;
  else if constexpr (std::is_integral_v<U> && std::is_unsigned_v<U> && sizeof(U) == 8)
    return DataType::kUInt64;
  else
    static_assert(sizeof(T) == 0,
                  "unsupported element type: use float, double, int32/int64/uint64, uint8, bool, "
                  "char or std::byte");
}

namespace detail {
// A contiguous range with a size: std::vector, std::string, std::array, std::span, HostVector.
template <typename R>
concept ContiguousRange = std::ranges::contiguous_range<R> && std::ranges::sized_range<R>;
template <typename R>
using range_element_t = std::remove_reference_t<std::ranges::range_reference_t<R>>;
// A view (std::span) may point at device memory; an owning container is always host memory.
template <typename R>
inline constexpr bool is_view_v = std::ranges::view<std::remove_cvref_t<R>>;
template <typename R>
concept Resizable = requires(R& r, std::size_t n) {
  r.resize(n);
};
template <typename T>
concept Scalar = std::is_arithmetic_v<T> || std::is_same_v<T, std::byte>;
// bool travels as uint8: sum and max are a logical OR, min a logical AND (as torch.distributed
// does for bool tensors), so every result is still 0 or 1; avg has no bool meaning.
template <typename T>
ReduceOp reduce_op_for(ReduceOp op) {
  if constexpr (std::is_same_v<std::remove_cv_t<T>, bool>) {
    if (op == ReduceOp::kAvg) {
      throw ConfigError(
          "all_reduce of bool with ReduceOp::kAvg has no meaning; use kMax (any rank true) or "
          "kMin (every rank true), or convert to an integer type to count");
    }
    return op == ReduceOp::kMin ? ReduceOp::kMin : ReduceOp::kMax;
  } else {
    return op;
  }
}
}  // namespace detail

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

  // In place on a host buffer on every rank kind (a GPU rank stages it through device memory).
  virtual void host_all_reduce(void* buf, std::size_t count, DataType type, ReduceOp op) {
    all_reduce(buf, count, type, op);
  }

  // ---- typed helpers ----
  // A std::span is a buffer on the Context's device, like the raw calls above (device memory on a
  // GPU rank). Owning containers (std::vector, std::string, std::array, HostVector), scalars and
  // every returned vector are host memory on every rank kind (the host_* calls).

  // In place: all_reduce(std::span(grads)), all_reduce(vec), all_reduce(x) for a scalar x.
  template <detail::ContiguousRange R>
  void all_reduce(R&& data, ReduceOp op = ReduceOp::kSum) {
    using E = detail::range_element_t<R>;
    static_assert(!std::is_const_v<E>, "all_reduce works in place: pass a mutable range");
    using T = std::remove_cv_t<E>;
    if constexpr (detail::is_view_v<R>) {
      all_reduce(std::ranges::data(data), std::ranges::size(data), data_type_of<T>(),
                 detail::reduce_op_for<T>(op));
    } else {
      host_all_reduce(std::ranges::data(data), std::ranges::size(data), data_type_of<T>(),
                      detail::reduce_op_for<T>(op));
    }
  }
  template <detail::Scalar T>
  void all_reduce(T& value, ReduceOp op = ReduceOp::kSum) {
    host_all_reduce(&value, 1, data_type_of<T>(), detail::reduce_op_for<T>(op));
  }
  template <detail::Scalar T>
  T all_reduce_value(T value, ReduceOp op = ReduceOp::kSum) {
    all_reduce(value, op);
    return value;
  }

  // From `root` to every rank. std::string and resizable containers (std::vector) send their
  // length first and are resized on the receivers; spans and std::array keep their size (which
  // must be the same on every rank).
  template <detail::ContiguousRange R>
  void broadcast(R&& data, int root = 0) {
    using E = detail::range_element_t<R>;
    static_assert(!std::is_const_v<E>, "broadcast writes into the range: pass a mutable one");
    using T = std::remove_cv_t<E>;
    if constexpr (detail::is_view_v<R>) {
      broadcast(std::ranges::data(data), std::ranges::size(data), data_type_of<T>(), root);
    } else {
      if constexpr (detail::Resizable<std::remove_reference_t<R>>) {
        std::uint64_t n = std::ranges::size(data);
        host_broadcast(&n, 1, DataType::kUInt64, root);
        if (rank() != root) data.resize(static_cast<std::size_t>(n));
      }
      host_broadcast(std::ranges::data(data), std::ranges::size(data), data_type_of<T>(), root);
    }
  }
  template <detail::Scalar T>
  void broadcast(T& value, int root = 0) {
    host_broadcast(&value, 1, data_type_of<T>(), root);
  }
  template <detail::Scalar T>
  T broadcast_value(T value, int root = 0) {
    broadcast(value, root);
    return value;
  }

  // Every rank's elements (host memory; the same count on every rank), rank r's at r * count.
  template <detail::ContiguousRange R>
  std::vector<std::remove_cv_t<detail::range_element_t<R>>> all_gather(const R& data) {
    using T = std::remove_cv_t<detail::range_element_t<R>>;
    std::vector<T> out(std::ranges::size(data) * static_cast<std::size_t>(size()));
    host_all_gather(std::ranges::data(data), out.data(), std::ranges::size(data),
                    data_type_of<T>());
    return out;
  }
  template <detail::Scalar T>
  std::vector<T> all_gather_value(T value) {
    std::vector<T> out(static_cast<std::size_t>(size()));
    host_all_gather(&value, out.data(), 1, data_type_of<T>());
    return out;
  }

  // Gathers host-memory spans of any length to `root` (lengths exchanged first), on any rank kind.
  // On root: every rank's elements in one buffer, no per-rank copies. Elsewhere: empty.
  template <typename T>
  Gathered<T> gather_host_flat(std::span<const T> data, int root = 0);
  // The same, as one vector per rank on root (an empty vector elsewhere).
  template <typename T>
  std::vector<std::vector<T>> gather_host(std::span<const T> data, int root = 0);
  // The same from any contiguous host range (std::vector, std::string, a non-const span, ...).
  template <detail::ContiguousRange R>
  auto gather_host_flat(const R& data, int root = 0) {
    return gather_host_flat(std::span<const std::remove_cv_t<detail::range_element_t<R>>>(
                                std::ranges::data(data), std::ranges::size(data)),
                            root);
  }
  template <detail::ContiguousRange R>
  auto gather_host(const R& data, int root = 0) {
    return gather_host(std::span<const std::remove_cv_t<detail::range_element_t<R>>>(
                           std::ranges::data(data), std::ranges::size(data)),
                       root);
  }
};

}  // namespace gpurun::worker

#include "gpurun/worker/detail/communicator_inl.h"
