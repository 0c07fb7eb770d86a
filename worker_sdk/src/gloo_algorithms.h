// The algorithms GlooCommunicator runs over Gloo's TCP pairs besides Gloo's own (ring allreduce,
// broadcast, allgather, barrier): each a free function over a connected ::gloo::Context, like
// Gloo's allreduce_ring / allreduce_bcube files. Buffers are host memory; `tag` separates
// concurrent operations; every wait is bounded by `timeout` (Gloo throws on expiry).
#pragma once

#include <gloo/context.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "collective_desc.h"
#include "gpurun/common/host_memory.h"
#include "reduce_kernels.h"

namespace gpurun::worker::detail {

// One round: every rank sends its whole buffer to every peer, then reduces all N buffers in rank
// order (b0 op b1 op ... op bN-1), so every rank computes the same bits. `scratch` holds the
// peers' buffers (grown as needed, kept between calls).
void allreduce_direct(::gloo::Context& ctx, std::uint8_t* data, std::size_t bytes,
                      std::size_t count, ReduceKernel fn, std::uint32_t tag,
                      std::chrono::milliseconds timeout, HostVector<std::uint8_t>& scratch);

// Variable-size gather, point to point: a non-root rank sends `send` (counts[rank] x elem_size
// bytes) to the root; the root receives every other rank's block into `out` laid out by rank
// (its own block is the caller's to fill). Ranks with nothing to send send nothing.
void gather_p2p(::gloo::Context& ctx, const void* send, void* out,
                const std::vector<std::size_t>& counts, std::size_t elem_size, int root,
                std::uint32_t tag, std::chrono::milliseconds timeout);

// The descriptor round: every rank sends its numbered descriptor to every peer and compares what
// it receives; throws CollectiveMismatch when they differ. Fixed-size messages, so a mismatch can
// never reach Gloo's own size checks (whose failure on the transport thread aborts the process).
// `all` receives every rank's descriptor (kept between calls).
void exchange_descs(::gloo::Context& ctx, const NumberedDesc& mine, std::uint32_t tag,
                    std::chrono::milliseconds timeout, std::vector<NumberedDesc>& all);

}  // namespace gpurun::worker::detail
