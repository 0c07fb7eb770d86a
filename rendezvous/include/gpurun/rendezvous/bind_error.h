// The one message for a store that could not bind its listening socket, shared by every front end
// that hosts a store (gpurun's single-node and multi-node runs, the elastic agent, `gpurun store`):
//   cannot bind store on HOST:PORT (WHY[ by HOLDER]); FIX
// WHY is the errno's text, HOLDER who listens on the port when known, FIX what the caller's own
// command line can change (each front end names its own flags).
#pragma once

#include <string>

#include "gpurun/common/error.h"

namespace gpurun::rendezvous {

// How to fix each kind of bind failure, in the caller's terms. An empty entry falls back to
// `other`.
struct BindFixes {
  std::string in_use{};     // EADDRINUSE: "pass --master-port 0 (auto) or pick a free port"
  std::string not_local{};  // EADDRNOTAVAIL: the address is not one of this host's
  std::string denied{};     // EACCES: a privileged port
  std::string other{};      // anything else
};

// `holder`: "pid 4711 (python3 x.py)" for the process listening on the port, "" when unknown
// (only said for "address already in use").
std::string bind_failure_message(const BindError& e, const BindFixes& fixes,
                                 const std::string& holder = "");

// Writes "gpurun: error: <bind_failure_message>" to stderr and returns
// ExitCode::kRendezvousFailed (3): a busy port is not a usage error, the same command works once
// the port is free.
int report_bind_failure(const BindError& e, const BindFixes& fixes, const std::string& holder = "");

}  // namespace gpurun::rendezvous
