// The child side of a spawn: what runs between clone/fork and exec (raw, async-signal-safe
// syscalls only: the child may share gpurun's memory), split from the parent's event loop in
// posix_process_runner.cc. The parent prepares a ChildArgs (no allocation in the child) and reads
// a ChildError from the close-on-exec error pipe when exec or a setup step failed.
#pragma once

#include <sched.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <cstddef>

namespace gpurun::launcher {

// Child-side failure record sent through the error pipe.
struct ChildError {
  int err;
  int stage;  // 0 exec, 1 dup2, 2 parent died, 3 chdir, 4 sched_setaffinity
};

// Everything the child needs, prepared by the parent (the child must not allocate).
struct ChildArgs {
  const char* exe = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  int in_fd = -1, out_fd = -1, err_fd = -1, exec_fd = -1;
  pid_t parent = 0;
  const int* handled = nullptr;  // signals gpurun catches: back to SIG_DFL in the child
  std::size_t n_handled = 0;
  const cpu_set_t* cpus = nullptr;  // --numa-binding: affinity to set (null: inherited)
  std::size_t cpus_size = 0;
  int tty_fd = -1;  // make the child's group the terminal's foreground group (signals blocked)
  const char* cgroup_procs = nullptr;  // the run's cgroup.procs: joined before exec (reaper.h)
  const char* memcg_procs = nullptr;   // its v1 memory cgroup's (hybrid hosts), likewise
  const rlimit* nofile = nullptr;      // RLIMIT_NOFILE to restore (the user's, fd_limit.h)
};

// Starts the child (clone(CLONE_VM | CLONE_VFORK) as glibc's posix_spawn, fork in sanitizer
// builds) with every signal blocked around it. Returns its pid, or -1 with errno.
pid_t start_child(const ChildArgs& a);

}  // namespace gpurun::launcher
