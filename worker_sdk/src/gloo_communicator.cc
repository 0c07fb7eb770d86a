#include "gloo_communicator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/types.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <mutex>
#include <type_traits>

#include "arrival.h"
#include "collective_checks.h"
#include "collective_desc.h"
#include "gloo_algorithms.h"
#include "gloo_device.h"
#include "gloo_setup.h"
#include "gpurun/common/duration.h"
#include "gpurun/common/error.h"
#include "gpurun/common/log.h"
#include "reduce_kernels.h"
#include "shm_collectives.h"

namespace gpurun::worker::detail {
namespace {

constexpr std::uint32_t kDescTagBit = 0x80000000u;

template <typename F>
decltype(auto) visit_type(DataType t, F&& f) {
  switch (t) {
    case DataType::kFloat32:
      return f(float{});
    case DataType::kFloat64:
      return f(double{});
    case DataType::kInt32:
      return f(std::int32_t{});
    case DataType::kInt64:
      return f(std::int64_t{});
    case DataType::kUInt8:
      return f(std::uint8_t{});
    case DataType::kUInt64:
      return f(std::uint64_t{});
    default:
      break;
  }
  throw CommError(fmt::format(
      "{} is not supported by the Gloo backend (float32, float64, int32, int64, uint64 and "
      "uint8 are); convert to float32, or run every rank on a GPU to use NCCL",
      to_string(t)));
}

class GlooCommunicator final : public Communicator {
 public:
  GlooCommunicator(GlooConfig cfg, std::shared_ptr<::gloo::rendezvous::Context> ctx,
                   std::unique_ptr<ShmCollectives> shm, std::shared_ptr<LoopKicker> kicker)
      : rank_(cfg.rank),
        size_(cfg.size),
        timeout_(std::min(cfg.timeout, kGlooMaxTimeout)),
        memory_(std::move(cfg.memory)),
        ctx_(std::move(ctx)),
        tracker_(cfg.store, cfg.rank, cfg.size, cfg.timeout, cfg.progress_after),
        direct_max_(cfg.direct_max_bytes),
        check_tcp_(cfg.check_tcp),
        shm_(std::move(shm)),
        kicker_(std::move(kicker)) {}

  ~GlooCommunicator() override {
    const LoopKicker::Kick kick(kicker_.get());  // the pairs close with the context
    ctx_.reset();
  }
  GlooCommunicator(const GlooCommunicator&) = delete;
  GlooCommunicator& operator=(const GlooCommunicator&) = delete;

  Backend backend() const override { return Backend::kGloo; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  // Every op runs through run(): its descriptor is checked on every rank before any data moves
  // (piggybacked on the shared-memory round where the op has one, else a round of its own).
  void all_reduce(void* buf, std::size_t count, DataType type, ReduceOp op) override {
    const std::size_t bytes = count * size_of(type);
    run(CollectiveDesc::all_reduce(count, type, op), shm_ && count != 0,
        [&](std::uint32_t tag, const NumberedDesc& nd) {
          if (count == 0) return;
          void* p = stage_in(buf, bytes, 0);
          visit_type(type,
                     [&](auto zero) { allreduce_typed<decltype(zero)>(p, count, op, tag, nd); });
          stage_out(buf, p, bytes);
        });
  }

  void broadcast(void* buf, std::size_t count, DataType type, int root) override {
    check_root(rank_, size_, root, "broadcast");
    const std::size_t bytes = count * size_of(type);
    run(CollectiveDesc::broadcast(count, type, root), shm_ && count != 0,
        [&](std::uint32_t tag, const NumberedDesc& nd) {
          if (count == 0 || size_ == 1) return;
          void* p = rank_ == root ? stage_in(buf, bytes, 0) : host_ptr(buf, bytes, 0);
          if (shm_) {
            shm_->broadcast(static_cast<std::uint8_t*>(p), bytes, root, timeout_, nd);
          } else {
            ::gloo::BroadcastOptions o(ctx_);
            o.setOutput(static_cast<std::uint8_t*>(p), bytes);
            o.setRoot(root);
            o.setTag(tag);
            o.setTimeout(timeout_);
            ::gloo::broadcast(o);
          }
          stage_out(buf, p, bytes);
        });
  }

  void all_gather(const void* send, void* recv, std::size_t count, DataType type) override {
    const std::size_t bytes = count * size_of(type);
    const std::size_t total = bytes * static_cast<std::size_t>(size_);
    run(CollectiveDesc::all_gather(count, type), shm_ && count != 0,
        [&](std::uint32_t tag, const NumberedDesc& nd) {
          if (count == 0) return;
          reserve_staging(total + bytes);  // both regions first: growing later would move `out`
          void* out = host_ptr(recv, total, 0);
          void* in = host_ptr(const_cast<void*>(send), bytes, total);
          if (size_ == 1) {
            memory_in(in, send, bytes);
            if (out != in) std::memcpy(out, in, bytes);
          } else if (shm_) {
            // A host `send` goes into the slot as it is (copying it into `out` first would change
            // the caller's buffer before the descriptor check).
            const void* src = memory_ ? in : send;
            if (memory_) memory_in(in, send, bytes);
            shm_->all_gather(static_cast<const std::uint8_t*>(src), static_cast<std::uint8_t*>(out),
                             bytes, timeout_, nd);
          } else {
            memory_in(in, send, bytes);
            ::gloo::AllgatherOptions o(ctx_);
            o.setInput(static_cast<std::uint8_t*>(in), bytes);
            o.setOutput(static_cast<std::uint8_t*>(out), total);
            o.setTag(tag);
            o.setTimeout(timeout_);
            ::gloo::allgather(o);
          }
          stage_out(recv, out, total);
        });
  }

  void gather(const void* send, void* recv, const std::vector<std::size_t>& counts, DataType type,
              int root) override {
    check_root(rank_, size_, root, "gather");
    check_counts(rank_, size_, counts, "gather");
    const std::size_t es = size_of(type);
    std::size_t total = 0;
    for (auto c : counts) total += c;
    run(CollectiveDesc::gather(counts, type, root), shm_ != nullptr,
        [&](std::uint32_t tag, const NumberedDesc& nd) {
          const std::size_t mine = counts[static_cast<std::size_t>(rank_)] * es;
          if (shm_ && size_ > 1) {
            std::vector<std::size_t> bytes(counts.size());
            for (std::size_t r = 0; r < counts.size(); ++r) bytes[r] = counts[r] * es;
            // Root: the output (staged for a GPU rank); its own block is copied in after the
            // descriptor check (a GPU root's through staging first).
            void* out = rank_ == root ? host_ptr(recv, total * es, 0) : nullptr;
            const void* in = mine == 0 || (rank_ == root && !memory_)
                                 ? send
                                 : stage_in(const_cast<void*>(send), mine, total * es);
            shm_->gather(static_cast<const std::uint8_t*>(in), static_cast<std::uint8_t*>(out),
                         bytes, root, timeout_, nd);
            if (rank_ == root) stage_out(recv, out, total * es);
            return;
          }
          if (rank_ != root) {
            if (mine == 0) return;
            void* in = stage_in(const_cast<void*>(send), mine, 0);
            gather_p2p(*ctx_, in, nullptr, counts, es, root, tag, timeout_);
            return;
          }
          void* out = host_ptr(recv, total * es, 0);
          std::size_t before = 0;
          for (int r = 0; r < rank_; ++r) before += counts[static_cast<std::size_t>(r)] * es;
          memory_in(static_cast<std::uint8_t*>(out) + before, send, mine);
          gather_p2p(*ctx_, nullptr, out, counts, es, root, tag, timeout_);
          stage_out(recv, out, total * es);
        });
  }

  void reduce_scatter(const void* send, void* recv, std::size_t count, DataType type,
                      ReduceOp op) override {
    const std::size_t bytes = count * size_of(type);
    const std::size_t total = bytes * static_cast<std::size_t>(size_);
    run(CollectiveDesc::reduce_scatter(count, type, op), shm_ && count != 0,
        [&](std::uint32_t tag, const NumberedDesc& nd) {
          if (count == 0) return;
          // Ring allreduce of the whole buffer, keep our block: Gloo's fastest path on TCP for
          // the sizes we see, and exact (every rank reduces in the same order).
          scratch_.resize(total);
          memory_in(scratch_.data(), send, total);
          visit_type(type, [&](auto zero) {
            allreduce_typed<decltype(zero)>(scratch_.data(),
                                            count * static_cast<std::size_t>(size_), op, tag, nd);
          });
          const std::uint8_t* block = scratch_.data() + bytes * static_cast<std::size_t>(rank_);
          if (memory_) {
            memory_->to_device(recv, block, bytes);
          } else {
            std::memmove(recv, block, bytes);
          }
        });
  }

  void barrier() override {
    run(CollectiveDesc::barrier(), shm_ != nullptr, [&](std::uint32_t tag, const NumberedDesc& nd) {
      if (size_ == 1) return;
      if (shm_) {
        shm_->barrier(timeout_, nd);
        return;
      }
      ::gloo::BarrierOptions o(ctx_);
      o.setTag(tag);
      o.setTimeout(timeout_);
      ::gloo::barrier(o);
    });
  }

  void host_all_gather(const void* send, void* recv, std::size_t count, DataType type) override {
    with_host_buffers([&] { all_gather(send, recv, count, type); });
  }
  void host_gather(const void* send, void* recv, const std::vector<std::size_t>& counts,
                   DataType type, int root) override {
    with_host_buffers([&] { gather(send, recv, counts, type, root); });
  }
  void host_broadcast(void* buf, std::size_t count, DataType type, int root) override {
    with_host_buffers([&] { broadcast(buf, count, type, root); });
  }
  void host_all_reduce(void* buf, std::size_t count, DataType type, ReduceOp op) override {
    with_host_buffers([&] { all_reduce(buf, count, type, op); });
  }

 private:
  static ReduceKernel kernel_for(ReduceOp op, ReduceKernel sum, ReduceKernel max,
                                 ReduceKernel min) {
    return op == ReduceOp::kMax ? max : (op == ReduceOp::kMin ? min : sum);
  }

  template <typename T>
  void allreduce_typed(void* p, std::size_t count, ReduceOp op, std::uint32_t tag,
                       const NumberedDesc& nd) {
    T* data = static_cast<T*>(p);
    const std::size_t bytes = count * sizeof(T);
    if (size_ > 1 && shm_) {
      shm_->all_reduce(static_cast<std::uint8_t*>(p), bytes, sizeof(T),
                       kernel_for(op, sum_kernel<T>(), max_kernel<T>(), min_kernel<T>()), timeout_,
                       nd);
    } else if (size_ > 1 && bytes * static_cast<std::size_t>(size_ - 1) <= direct_max_) {
      allreduce_direct(*ctx_, static_cast<std::uint8_t*>(p), bytes, count,
                       kernel_for(op, sum_kernel<T>(), max_kernel<T>(), min_kernel<T>()), tag,
                       timeout_, direct_);
    } else if (size_ > 1) {
      ::gloo::AllreduceOptions o(ctx_);
      o.setOutput(data, count);
      switch (op) {
        case ReduceOp::kSum:
        case ReduceOp::kAvg:
          o.setReduceFunction(sum_kernel<T>());
          break;
        case ReduceOp::kMax:
          o.setReduceFunction(max_kernel<T>());
          break;
        case ReduceOp::kMin:
          o.setReduceFunction(min_kernel<T>());
          break;
      }
      o.setTag(tag);
      o.setTimeout(timeout_);
      ::gloo::allreduce(o);
    }
    if (op == ReduceOp::kAvg && size_ > 1) {
      // Floating types divide; integer types divide with truncation toward zero (as torch's
      // integer division of a summed tensor would).
      const T n = static_cast<T>(size_);
      for (std::size_t i = 0; i < count; ++i) data[i] = static_cast<T>(data[i] / n);
    }
  }

  // Runs f with host buffers taken as they are (no staging), for host_all_gather/host_gather on
  // a GPU rank of a hybrid job.
  template <typename F>
  void with_host_buffers(F&& f) {
    struct Restore {
      std::unique_ptr<DeviceMemory>& slot;
      std::unique_ptr<DeviceMemory> saved;
      ~Restore() { slot = std::move(saved); }
    } restore{memory_, std::move(memory_)};
    f();
  }

  // Host pointer to operate on: the caller's buffer for host memory, else staging space
  // (`offset` separates two staging regions used by one collective).
  // REQUIRES: a collective using two regions calls reserve_staging for both first (resizing
  // moves the buffer).
  void* host_ptr(void* user, std::size_t bytes, std::size_t offset) {
    if (!memory_) return user;
    reserve_staging(offset + bytes);
    return staging_.data() + offset;
  }
  void reserve_staging(std::size_t bytes) {
    if (memory_ && staging_.size() < bytes) staging_.resize(bytes);
  }
  // Like host_ptr, and copies the caller's data in.
  void* stage_in(void* user, std::size_t bytes, std::size_t offset) {
    void* p = host_ptr(user, bytes, offset);
    if (memory_) memory_->to_host(p, user, bytes);
    return p;
  }
  void memory_in(void* host_dst, const void* user, std::size_t bytes) {
    if (bytes == 0 || host_dst == user) return;
    if (memory_) {
      memory_->to_host(host_dst, user, bytes);
    } else {
      std::memmove(host_dst, user, bytes);
    }
  }
  void stage_out(void* user, const void* host, std::size_t bytes) {
    if (memory_ && bytes != 0) memory_->to_device(user, host, bytes);
  }

  // Runs one collective: refuses after an earlier failure, checks the descriptor on every rank
  // (`body_checks`: the body's shared-memory round carries it; else a round of its own first),
  // and turns every failure into a CommError that says what happened and what to do.
  template <typename Body>
  void run(const CollectiveDesc& desc, bool body_checks, Body&& body) {
    const char* op = to_string(desc.op);
    if (!broken_.empty()) {
      throw CommError(
          fmt::format("{} on rank {} refused (this communicator failed earlier: {}); "
                      "create a new one or restart the job",
                      op, rank_, broken_));
    }
    if (desc.type == static_cast<std::uint8_t>(DataType::kFloat16) ||
        desc.type == static_cast<std::uint8_t>(DataType::kBFloat16)) {
      visit_type(static_cast<DataType>(desc.type), [](auto) {});  // the "not supported" CommError
    }
    const NumberedDesc nd{tracker_.enter(op, desc), desc};
    const ArrivalTracker::Leave leave(tracker_);
    const std::uint32_t tag = ++tag_;
    const auto start = Clock::now();
    try {
      if (size_ > 1 && !body_checks) {
        if (shm_) {
          shm_->barrier(timeout_, nd);
        } else if (check_tcp_) {
          exchange_descs(*ctx_, nd, tag | kDescTagBit, timeout_, descs_);
        }
      }
      body(tag, nd);
    } catch (const CommError&) {
      throw;
    } catch (const CollectiveMismatch& m) {
      std::string msg = mismatch_message("gloo", rank_, size_, m.all());
      broken_ = fmt::format("{} #{} mismatch", op, nd.seq);
      GPURUN_LOG_INFO("comm", "{}", msg);
      throw CommError(msg);
    } catch (const std::exception& e) {
      auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
      std::string where = tracker_.describe_laggards(nd.seq, op);
      const std::string what = e.what();
      // A peer that exited is not slow: raising the timeout would not help.
      const bool exited = dynamic_cast<const ShmPeerExited*>(&e) != nullptr ||
                          what.find("closed by peer") != std::string::npos ||
                          what.find("Socket closed") != std::string::npos ||
                          what.find("unexpectedly closed") != std::string::npos ||
                          what.find("reset by peer") != std::string::npos;
      std::string msg = fmt::format(
          "gloo {} #{} ({}) failed on rank {}/{} after {} (timeout {}; {}); {}; {}", op, nd.seq,
          describe_args(desc), rank_, size_, format_duration(waited), format_duration(timeout_),
          what, where,
          exited ? "a peer exited or closed its connection: check the named ranks' logs and "
                   "exit codes for why it ended"
                 : "check the named ranks' logs, or raise GPURUN_COMM_TIMEOUT if they are only "
                   "slow");
      broken_ = fmt::format("{} #{} failed", op, nd.seq);
      GPURUN_LOG_INFO("comm", "{}", msg);
      throw CommError(msg);
    }
  }

  int rank_;
  int size_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<DeviceMemory> memory_;  // null: host buffers, no staging
  std::shared_ptr<::gloo::rendezvous::Context> ctx_;
  ArrivalTracker tracker_;
  std::uint32_t tag_ = 0;
  HostVector<std::uint8_t> staging_;
  HostVector<std::uint8_t> scratch_;
  HostVector<std::uint8_t> direct_;  // allreduce_direct's peer buffers (scratch_ may be its input)
  std::size_t direct_max_;
  bool check_tcp_;                       // GlooConfig::check_tcp
  std::unique_ptr<ShmCollectives> shm_;  // null: all_reduce over Gloo's TCP pairs
  std::shared_ptr<LoopKicker> kicker_;   // null if the device is not Gloo's TCP one
  std::vector<NumberedDesc> descs_;      // exchange_descs' buffers
  std::string broken_;
};

}  // namespace

std::unique_ptr<Communicator> make_gloo_communicator(GlooConfig cfg) {
  GlooConnection c = connect_gloo(cfg);
  return std::make_unique<GlooCommunicator>(std::move(cfg), std::move(c.ctx), std::move(c.shm),
                                            std::move(c.kicker));
}

}  // namespace gpurun::worker::detail
