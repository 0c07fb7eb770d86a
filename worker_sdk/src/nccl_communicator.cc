#include "nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <nccl.h>

#include <string>
#include <thread>
#include <vector>

#include "arrival.h"
#include "collective_checks.h"
#include "collective_desc.h"
#include "gpurun/common/duration.h"
#include "gpurun/common/error.h"
#include "gpurun/common/log.h"

namespace gpurun::worker::detail {
namespace {

ncclDataType_t nccl_type(DataType t) {
  switch (t) {
    case DataType::kFloat32:
      return ncclFloat32;
    case DataType::kFloat64:
      return ncclFloat64;
    case DataType::kInt32:
      return ncclInt32;
    case DataType::kInt64:
      return ncclInt64;
    case DataType::kUInt8:
      return ncclUint8;
    case DataType::kFloat16:
      return ncclFloat16;
    case DataType::kBFloat16:
      return ncclBfloat16;
    case DataType::kUInt64:
      return ncclUint64;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
    case ReduceOp::kAvg:
      return ncclAvg;
  }
  return ncclSum;
}

std::string nccl_message(ncclResult_t r, ncclComm_t comm) {
  const char* last = ncclGetLastError(comm);
  return fmt::format("{}{}{}", ncclGetErrorString(r), last && *last ? ": " : "", last ? last : "");
}

void cuda_check(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) {
    throw CommError(fmt::format("{} failed ({}: {}); check the GPU with nvidia-smi", what,
                                cudaGetErrorName(err), cudaGetErrorString(err)));
  }
}

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(const NcclConfig& cfg)
      : rank_(cfg.rank),
        size_(cfg.size),
        device_(cfg.device),
        timeout_(cfg.timeout),
        check_(cfg.check_descriptors && cfg.size > 1),
        tracker_(cfg.group_store, cfg.rank, cfg.size, cfg.timeout, cfg.progress_after, "nccl") {
    cuda_check(cudaSetDevice(device_), fmt::format("cudaSetDevice({})", device_));
    ncclUniqueId id{};
    const std::string key = fmt::format("nccl/{}/uid", cfg.group);
    if (rank_ == 0) {
      ncclResult_t r = ncclGetUniqueId(&id);
      if (r != ncclSuccess) {
        throw CommError(
            fmt::format("ncclGetUniqueId on rank 0 failed ({}); check NCCL_SOCKET_IFNAME "
                        "and that a network interface is up",
                        nccl_message(r, nullptr)));
      }
      cfg.run_store->set(key, rendezvous::Bytes(id.internal, id.internal + sizeof(id.internal)));
    } else {
      try {
        cfg.run_store->wait({key}, timeout_);
      } catch (const StoreTimeout&) {
        throw CommError(
            fmt::format("timed out after {} waiting for key '{}' (rank 0 never published "
                        "it); check rank 0's log",
                        format_duration(timeout_), key));
      }
      auto v = cfg.run_store->get(key);
      if (v.size() != sizeof(id.internal)) {
        throw CommError(
            fmt::format("key '{}' holds {} bytes, not an ncclUniqueId ({} bytes); is "
                        "another job using the same store and run id?",
                        key, v.size(), sizeof(id.internal)));
      }
      std::copy(v.begin(), v.end(), id.internal);
    }
    ncclResult_t r = ncclCommInitRank(&comm_, size_, id, rank_);
    if (r != ncclSuccess) {
      throw CommError(
          fmt::format("ncclCommInitRank(rank {}, world {}, cuda:{}) failed ({}); set "
                      "NCCL_DEBUG=INFO for details",
                      rank_, size_, device_, nccl_message(r, comm_)));
    }
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    cuda_check(cudaMalloc(&scratch_, sizeof(float)), "cudaMalloc(barrier scratch)");
    if (check_) {
      descs_.resize(static_cast<std::size_t>(size_));
      cuda_check(cudaMalloc(&descs_dev_, sizeof(NumberedDesc) * descs_.size()),
                 "cudaMalloc(descriptor check)");
    }
    GPURUN_LOG_INFO("comm", "nccl connected: rank {}/{} on cuda:{}", rank_, size_, device_);
  }

  ~NcclCommunicator() override {
    if (comm_ != nullptr) {
      if (aborted_) {
        // ncclCommAbort already released it.
      } else {
        ncclCommDestroy(comm_);
      }
    }
    if (scratch_ != nullptr) cudaFree(scratch_);
    if (descs_dev_ != nullptr) cudaFree(descs_dev_);
    if (stage_ != nullptr) cudaFree(stage_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  Backend backend() const override { return Backend::kNccl; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce(void* buf, std::size_t count, DataType type, ReduceOp op) override {
    run(CollectiveDesc::all_reduce(count, type, op), [&] {
      return ncclAllReduce(buf, buf, count, nccl_type(type), nccl_op(op), comm_, stream_);
    });
  }
  void broadcast(void* buf, std::size_t count, DataType type, int root) override {
    check_root(rank_, size_, root, "broadcast");
    run(CollectiveDesc::broadcast(count, type, root),
        [&] { return ncclBroadcast(buf, buf, count, nccl_type(type), root, comm_, stream_); });
  }
  void all_gather(const void* send, void* recv, std::size_t count, DataType type) override {
    run(CollectiveDesc::all_gather(count, type),
        [&] { return ncclAllGather(send, recv, count, nccl_type(type), comm_, stream_); });
  }
  void gather(const void* send, void* recv, const std::vector<std::size_t>& counts, DataType type,
              int root) override {
    check_root(rank_, size_, root, "gather");
    check_counts(rank_, size_, counts, "gather");
    const std::size_t es = size_of(type);
    run(CollectiveDesc::gather(counts, type, root), [&]() -> ncclResult_t {
      ncclResult_t r = ncclGroupStart();
      if (r != ncclSuccess) return r;
      if (rank_ == root) {
        std::size_t off = 0;
        for (int p = 0; p < size_; ++p) {
          const std::size_t n = counts[static_cast<std::size_t>(p)];
          auto* dst = static_cast<std::uint8_t*>(recv) + off * es;
          if (p == rank_) {
            if (n != 0) {
              cuda_check(cudaMemcpyAsync(dst, send, n * es, cudaMemcpyDeviceToDevice, stream_),
                         "cudaMemcpyAsync(gather own block)");
            }
          } else if (n != 0) {
            r = ncclRecv(dst, n, nccl_type(type), p, comm_, stream_);
            if (r != ncclSuccess) break;
          }
          off += n;
        }
      } else if (counts[static_cast<std::size_t>(rank_)] != 0) {
        r = ncclSend(send, counts[static_cast<std::size_t>(rank_)], nccl_type(type), root, comm_,
                     stream_);
      }
      ncclResult_t e = ncclGroupEnd();
      return r != ncclSuccess ? r : e;
    });
  }
  void reduce_scatter(const void* send, void* recv, std::size_t count, DataType type,
                      ReduceOp op) override {
    run(CollectiveDesc::reduce_scatter(count, type, op), [&] {
      return ncclReduceScatter(send, recv, count, nccl_type(type), nccl_op(op), comm_, stream_);
    });
  }
  void barrier() override {
    run(CollectiveDesc::barrier(),
        [&] { return ncclAllReduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, comm_, stream_); });
  }

  // Host buffers: NCCL only reads and writes device memory, so stage through it.
  void host_all_gather(const void* send, void* recv, std::size_t count, DataType type) override {
    const std::size_t bytes = count * size_of(type);
    std::uint8_t* d = host_stage(bytes * (static_cast<std::size_t>(size_) + 1));
    copy_in(d, send, bytes);
    all_gather(d, d + bytes, count, type);
    copy_out(recv, d + bytes, bytes * static_cast<std::size_t>(size_));
  }
  void host_gather(const void* send, void* recv, const std::vector<std::size_t>& counts,
                   DataType type, int root) override {
    check_root(rank_, size_, root, "gather");
    check_counts(rank_, size_, counts, "gather");
    const std::size_t es = size_of(type);
    std::size_t total = 0;
    for (auto c : counts) total += c;
    const std::size_t mine = counts[static_cast<std::size_t>(rank_)] * es;
    const std::size_t received = rank_ == root ? total * es : 0;
    std::uint8_t* d = host_stage(mine + received);
    copy_in(d, send, mine);
    gather(d, d + mine, counts, type, root);
    copy_out(recv, d + mine, received);
  }
  void host_all_reduce(void* buf, std::size_t count, DataType type, ReduceOp op) override {
    const std::size_t bytes = count * size_of(type);
    std::uint8_t* d = host_stage(bytes);
    copy_in(d, buf, bytes);
    all_reduce(d, count, type, op);
    copy_out(buf, d, bytes);
  }
  void host_broadcast(void* buf, std::size_t count, DataType type, int root) override {
    check_root(rank_, size_, root, "broadcast");
    const std::size_t bytes = count * size_of(type);
    std::uint8_t* d = host_stage(bytes);
    if (rank_ == root) copy_in(d, buf, bytes);
    broadcast(d, count, type, root);
    copy_out(buf, d, bytes);
  }

 private:
  // Device memory for host_all_gather / host_gather, grown as needed and kept.
  std::uint8_t* host_stage(std::size_t bytes) {
    if (bytes > stage_bytes_) {
      if (stage_ != nullptr) cudaFree(stage_);
      stage_ = nullptr;
      stage_bytes_ = 0;
      cuda_check(cudaMalloc(&stage_, bytes), fmt::format("cudaMalloc({} bytes of staging)", bytes));
      stage_bytes_ = bytes;
    }
    return static_cast<std::uint8_t*>(stage_);
  }
  // Copies on the communicator's stream, so they are ordered with the collectives on it.
  void copy_in(void* dev, const void* host, std::size_t bytes) {
    if (bytes == 0) return;
    cuda_check(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, stream_),
               "cudaMemcpyAsync(host to device staging)");
  }
  void copy_out(void* host, const void* dev, std::size_t bytes) {
    if (bytes != 0) {
      cuda_check(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, stream_),
                 "cudaMemcpyAsync(device staging to host)");
    }
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize(staging)");
  }

  template <typename Enqueue>
  void run(const CollectiveDesc& desc, Enqueue&& enqueue) {
    const char* op = to_string(desc.op);
    if (aborted_ || !broken_.empty()) {
      throw CommError(fmt::format(
          "nccl {} on rank {} refused ({}); restart the job", op, rank_,
          broken_.empty() ? "the communicator was aborted after an earlier failure" : broken_));
    }
    const std::uint64_t seq = tracker_.enter(op, desc);
    const ArrivalTracker::Leave leave(tracker_);
    cuda_check(cudaSetDevice(device_), fmt::format("cudaSetDevice({})", device_));
    if (check_) check_descriptors(op, {seq, desc});
    ncclResult_t r = enqueue();
    if (r != ncclSuccess && r != ncclInProgress) {
      fail(op, seq, fmt::format("enqueue failed: {}", nccl_message(r, comm_)));
    }
    wait(op, seq);
  }

  // Every rank's numbered descriptor through one ncclAllGather (fixed size, so it cannot itself
  // mismatch), compared on the host before the collective's data is enqueued. On a mismatch
  // nothing else was enqueued, so every rank throws with its buffers unchanged.
  void check_descriptors(const char* op, const NumberedDesc& mine) {
    auto* dev = static_cast<NumberedDesc*>(descs_dev_);
    cuda_check(cudaMemcpyAsync(dev + rank_, &mine, sizeof mine, cudaMemcpyHostToDevice, stream_),
               "cudaMemcpyAsync(descriptor)");
    ncclResult_t r = ncclAllGather(dev + rank_, dev, sizeof mine, ncclUint8, comm_, stream_);
    if (r != ncclSuccess && r != ncclInProgress) {
      fail(op, mine.seq, fmt::format("descriptor exchange failed: {}", nccl_message(r, comm_)));
    }
    cuda_check(cudaMemcpyAsync(descs_.data(), dev, sizeof mine * descs_.size(),
                               cudaMemcpyDeviceToHost, stream_),
               "cudaMemcpyAsync(descriptors)");
    wait(op, mine.seq);
    if (!all_match(descs_)) {
      std::string msg = mismatch_message("nccl", rank_, size_, descs_);
      broken_ = fmt::format("{} #{} mismatch", op, mine.seq);
      GPURUN_LOG_INFO("comm", "{}", msg);
      throw CommError(msg);
    }
  }

  // Polls the stream against the deadline; aborts the communicator on timeout or async error.
  void wait(const char* op, std::uint64_t seq) {
    const auto start = Clock::now();
    const auto deadline = deadline_after(timeout_);
    int spins = 0;
    while (true) {
      cudaError_t st = cudaStreamQuery(stream_);
      if (st == cudaSuccess) return;
      if (st != cudaErrorNotReady) {
        fail(op, seq,
             fmt::format("CUDA error {}: {}", cudaGetErrorName(st), cudaGetErrorString(st)));
      }
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        fail(op, seq, fmt::format("NCCL async error: {}", nccl_message(async, comm_)));
      }
      if (Clock::now() >= deadline) {
        fail(op, seq,
             fmt::format("timed out after {}",
                         format_duration(std::chrono::duration_cast<std::chrono::milliseconds>(
                             Clock::now() - start))));
      }
      if (++spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  [[noreturn]] void fail(const char* op, std::uint64_t seq, const std::string& why) {
    if (!aborted_ && comm_ != nullptr) {
      ncclCommAbort(comm_);
      aborted_ = true;
    }
    std::string where = tracker_.describe_laggards(seq, op);
    std::string msg = fmt::format(
        "nccl {} #{} failed on rank {}/{} (cuda:{}, timeout {}; {}); {}; the communicator was "
        "aborted; check the named ranks' logs, or raise GPURUN_COMM_TIMEOUT if they are only slow",
        op, seq, rank_, size_, device_, format_duration(timeout_), why, where);
    GPURUN_LOG_INFO("comm", "{}", msg);
    throw CommError(msg);
  }

  int rank_;
  int size_;
  int device_;
  std::chrono::milliseconds timeout_;
  bool check_;  // NcclConfig::check_descriptors
  ArrivalTracker tracker_;
  std::vector<NumberedDesc> descs_;  // check_descriptors: every rank's, on the host
  void* descs_dev_ = nullptr;        // ... and on the device
  std::string broken_;               // why later calls are refused (a mismatch)
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* scratch_ = nullptr;
  void* stage_ = nullptr;  // host_* staging
  std::size_t stage_bytes_ = 0;
  bool aborted_ = false;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const NcclConfig& cfg) {
  return std::make_unique<NcclCommunicator>(cfg);
}

}  // namespace gpurun::worker::detail
