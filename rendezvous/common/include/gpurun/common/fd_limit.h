// RLIMIT_NOFILE: a process hosting the store raises its soft limit to the hard limit (so the
// connection cap is not ~1000), and its children get back the limit the user gave it (as under
// torchrun: a worker that loops over every possible fd, or sizes tables by the limit, must not
// see 1M because its launcher hosts a store).
#pragma once

#include <sys/resource.h>

#include <optional>
#include <string>

namespace gpurun {

struct FdLimitRaise {
  bool raised = false;  // false: already at the hard limit, or raised before, or failed
  rlim_t from = 0, to = 0;
  std::string error;  // why setrlimit failed ("" otherwise)
};

// Raises the soft RLIMIT_NOFILE to the hard limit; the first call that raises it remembers the
// soft limit it had (original_fd_limit()).
FdLimitRaise raise_fd_limit();

// The limits before raise_fd_limit() raised them; nullopt when it never did (children then
// inherit the limit unchanged anyway).
std::optional<rlimit> original_fd_limit();

}  // namespace gpurun
