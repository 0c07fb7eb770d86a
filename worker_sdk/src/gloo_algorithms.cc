#include "gloo_algorithms.h"

#include <gloo/transport/unbound_buffer.h>
#include <gloo/types.h>

#include <cstring>
#include <memory>

namespace gpurun::worker::detail {
namespace {

// Slot prefixes of our own operations (Gloo's use others).
constexpr std::uint8_t kGatherSlotPrefix = 0x5a;  // gather_p2p
constexpr std::uint8_t kDirectSlotPrefix = 0x5b;  // allreduce_direct
constexpr std::uint8_t kDescSlotPrefix = 0x5c;    // exchange_descs

using Buffers = std::vector<std::unique_ptr<::gloo::transport::UnboundBuffer>>;

}  // namespace

void allreduce_direct(::gloo::Context& ctx, std::uint8_t* data, std::size_t bytes,
                      std::size_t count, ReduceKernel fn, std::uint32_t tag,
                      std::chrono::milliseconds timeout, HostVector<std::uint8_t>& scratch) {
  const int rank = ctx.rank;
  const int size = ctx.size;
  const auto slot = ::gloo::Slot::build(kDirectSlotPrefix, tag);
  const auto peers = static_cast<std::size_t>(size - 1);
  // Peer buffers, in rank order skipping ours, then room for the result.
  scratch.resize(bytes * (peers + 1));
  auto block = [&](int r) -> std::uint8_t* {
    if (r == rank) return data;
    return scratch.data() + bytes * static_cast<std::size_t>(r < rank ? r : r - 1);
  };
  Buffers recvs;
  for (int r = 0; r < size; ++r) {
    if (r == rank) continue;
    recvs.push_back(ctx.createUnboundBuffer(block(r), bytes));
    recvs.back()->recv(r, slot);
  }
  auto mine = ctx.createUnboundBuffer(data, bytes);
  for (int r = 0; r < size; ++r) {
    if (r != rank) mine->send(r, slot);
  }
  for (auto& b : recvs) b->waitRecv(timeout);
  for (std::size_t i = 0; i < peers; ++i) mine->waitSend(timeout);
  std::uint8_t* acc = scratch.data() + bytes * peers;
  fn(acc, block(0), block(1), count);
  for (int r = 2; r < size; ++r) fn(acc, acc, block(r), count);
  std::memcpy(data, acc, bytes);
}

void gather_p2p(::gloo::Context& ctx, const void* send, void* out,
                const std::vector<std::size_t>& counts, std::size_t elem_size, int root,
                std::uint32_t tag, std::chrono::milliseconds timeout) {
  const auto slot = ::gloo::Slot::build(kGatherSlotPrefix, tag);
  if (ctx.rank != root) {
    const std::size_t mine = counts[static_cast<std::size_t>(ctx.rank)] * elem_size;
    if (mine == 0) return;
    auto buf = ctx.createUnboundBuffer(const_cast<void*>(send), mine);
    buf->send(root, slot);
    buf->waitSend(timeout);
    return;
  }
  Buffers bufs;
  std::size_t off = 0;
  for (int r = 0; r < ctx.size; ++r) {
    const std::size_t n = counts[static_cast<std::size_t>(r)] * elem_size;
    if (r != ctx.rank && n != 0) {
      bufs.push_back(ctx.createUnboundBuffer(static_cast<std::uint8_t*>(out) + off, n));
      bufs.back()->recv(r, slot);
    }
    off += n;
  }
  for (auto& b : bufs) b->waitRecv(timeout);
}

void exchange_descs(::gloo::Context& ctx, const NumberedDesc& mine, std::uint32_t tag,
                    std::chrono::milliseconds timeout, std::vector<NumberedDesc>& all) {
  const auto me = static_cast<std::size_t>(ctx.rank);
  const auto slot = ::gloo::Slot::build(kDescSlotPrefix, tag);
  all.assign(static_cast<std::size_t>(ctx.size), NumberedDesc{});
  all[me] = mine;
  Buffers recvs;
  for (int r = 0; r < ctx.size; ++r) {
    if (r == ctx.rank) continue;
    recvs.push_back(
        ctx.createUnboundBuffer(&all[static_cast<std::size_t>(r)], sizeof(NumberedDesc)));
    recvs.back()->recv(r, slot);
  }
  auto out = ctx.createUnboundBuffer(&all[me], sizeof(NumberedDesc));
  for (int r = 0; r < ctx.size; ++r) {
    if (r != ctx.rank) out->send(r, slot);
  }
  for (auto& b : recvs) b->waitRecv(timeout);
  for (int i = 1; i < ctx.size; ++i) out->waitSend(timeout);
  if (!all_match(all)) throw CollectiveMismatch(all);
}

}  // namespace gpurun::worker::detail
