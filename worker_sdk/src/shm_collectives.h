// Shared-memory collectives (all_reduce, all_gather, broadcast, barrier) for a group whose ranks
// all run on one host (the common single-node job): one POSIX shared-memory segment, one slot per
// rank, no sockets and no helper threads.
//
// Why: Gloo's TCP pairs need a request/ready/data handshake through each process's transport
// thread for every collective, so even a 4 KiB all_reduce costs ~200 us on a VM, and gradients
// move at loopback-TCP speed (~1 GB/s). Through shared memory an all_reduce is: copy this rank's
// chunk into its slot, publish a sequence number, wait for the others' (spin briefly, then
// futex-sleep), reduce the N slots in rank order into the caller's buffer (all_gather copies
// them out; broadcast copies the root's). NCCL (SHM transport) and DeepSpeed (CPU shm
// all_reduce) do the same for ranks that share a host.
//
// Data larger than a slot (256 KiB) goes through in chunks. Two sets of slots alternate, so one
// arrival per chunk is the only synchronisation: a rank writes set p again (chunk g + 2) only after
// every rank has arrived at chunk g + 1, which each does after it finished reading chunk g. Every
// rank reduces slot 0 op slot 1 op ... in rank order, so all ranks hold the same bits.
//
// Every collective carries its CollectiveDesc in the rank's header line, written before the first
// chunk's arrival and compared by every rank right after it, before any slot is read: a mismatch
// throws CollectiveMismatch on every rank, with the caller's buffer untouched. The descriptors
// alternate between two sets like the slots, so a fast rank never overwrites one still being read.
//
// A waiting rank notices a peer that exited (same PID namespace) within ~20 ms (ShmPeerExited),
// and a peer that is only late after the communicator timeout (ShmPeerLate); both name the ranks.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "collective_desc.h"
#include "gpurun/rendezvous/store.h"
#include "reduce_kernels.h"

namespace gpurun::worker::detail {

class ShmPeerExited : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
class ShmPeerLate : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ShmCollectives {
 public:
  // Collective: every rank of the group calls it once, in the same place. Rank 0 creates the
  // segment and publishes its name (and this host's boot id) under "shm" in `store`; the others
  // map it. `agree(ok)` must return the minimum of `ok` over all ranks (a 1-int all_reduce), so
  // that either every rank uses shared memory or none does. Returns null when any rank could not
  // map the segment (another host, another IPC namespace, /dev/shm full) or any rank was told not
  // to use it (`enabled` false: GPURUN_SHM=0); `why` says why.
  static std::unique_ptr<ShmCollectives> create(int rank, int size, rendezvous::Store& store,
                                                bool enabled, const std::function<int(int)>& agree,
                                                std::string* why);
  ~ShmCollectives();
  ShmCollectives(const ShmCollectives&) = delete;
  ShmCollectives& operator=(const ShmCollectives&) = delete;

  // Each call is collective #seq described by `desc` (see above). In place on `bytes` bytes
  // (count elements of elem_size). Throws CollectiveMismatch, ShmPeerExited or ShmPeerLate.
  void all_reduce(std::uint8_t* data, std::size_t bytes, std::size_t elem_size, ReduceKernel fn,
                  std::chrono::milliseconds timeout, const NumberedDesc& desc);
  // recv holds size() blocks of `bytes`, rank r's at r * bytes; send may alias recv's own block.
  void all_gather(const std::uint8_t* send, std::uint8_t* recv, std::size_t bytes,
                  std::chrono::milliseconds timeout, const NumberedDesc& desc);
  void broadcast(std::uint8_t* data, std::size_t bytes, int root, std::chrono::milliseconds timeout,
                 const NumberedDesc& desc);
  // Rank r sends counts[r] bytes; on root, recv gets them laid out by rank (root's own included;
  // root's send may already be its block of recv).
  void gather(const std::uint8_t* send, std::uint8_t* recv, const std::vector<std::size_t>& counts,
              int root, std::chrono::milliseconds timeout, const NumberedDesc& desc);
  // A round with no data: a barrier, or only the descriptor check of a collective whose data
  // goes over another transport (reduce_scatter over Gloo's pairs).
  void barrier(std::chrono::milliseconds timeout, const NumberedDesc& desc);

  std::size_t slot_bytes() const { return slot_bytes_; }

 private:
  struct Header;
  ShmCollectives(int rank, int size, void* base, std::size_t length, std::size_t slot_bytes);
  Header& header(int r) const;
  std::uint8_t* slot(std::uint32_t parity, int r) const;
  void arrive(std::uint32_t g);
  void wait_for_all(std::uint32_t g, std::chrono::steady_clock::time_point deadline,
                    std::size_t chunk, std::size_t chunks, const char* op);
  // After the first chunk's arrival: every rank's descriptor equals `mine`, else
  // CollectiveMismatch.
  void check_descs(std::uint32_t parity, const NumberedDesc& mine) const;
  // Runs `bytes` through the slots in chunks: put(slot, offset, n) fills this rank's slot, then
  // every rank arrives, then take(parity, offset, n) reads the slots. bytes == 0: one empty round.
  template <typename Put, typename Take>
  void chunked(std::size_t bytes, std::size_t step, std::chrono::milliseconds timeout,
               const NumberedDesc& desc, Put&& put, Take&& take);

  int rank_;
  int size_;
  void* base_;
  std::size_t length_;
  std::size_t slot_bytes_;
  std::uint32_t seq_ = 0;
  bool check_pids_ = false;
};

}  // namespace gpurun::worker::detail
