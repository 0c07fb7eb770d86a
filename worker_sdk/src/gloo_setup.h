// Setting up a Gloo communicator: the transport (interface or address, checked with a message
// that lists what exists), the full mesh through the store (naming the ranks that never joined),
// and the unanimous vote on shared-memory collectives. The communicator itself
// (gloo_communicator.cc) only dispatches collectives.
#pragma once

#include <gloo/rendezvous/context.h>

#include <chrono>
#include <memory>

#include "gloo_communicator.h"
#include "gloo_device.h"
#include "shm_collectives.h"

namespace gpurun::worker::detail {

// Gloo adds its timeout to now(); keep "no timeout" representable.
constexpr std::chrono::milliseconds kGlooMaxTimeout{30LL * 24 * 3600 * 1000};

struct GlooConnection {
  std::shared_ptr<::gloo::rendezvous::Context> ctx;
  std::unique_ptr<ShmCollectives> shm;  // null: collectives over Gloo's TCP pairs
  std::shared_ptr<LoopKicker> kicker;   // null if the device is not Gloo's TCP one
};

// Throws CommError naming the interface, the missing ranks or the failed vote.
GlooConnection connect_gloo(const GlooConfig& cfg);

}  // namespace gpurun::worker::detail
