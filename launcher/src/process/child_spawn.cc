// The child between clone/fork and exec (child_spawn.h).
#include "process/child_spawn.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "gpurun/common/error.h"

namespace gpurun::launcher {
namespace {

[[noreturn]] void child_fail(int fd, int stage) {
  ChildError e{errno, stage};
  [[maybe_unused]] ssize_t n = ::write(fd, &e, sizeof e);
  ::_exit(static_cast<int>(ExitCode::kCannotExec));
}

// The child between clone/fork and exec: raw syscalls only (it may share the parent's memory).
[[noreturn]] void child_main(const ChildArgs& a) {
  // Handlers first (signals are blocked): a signal must not run gpurun's handler in here.
  for (std::size_t i = 0; i < a.n_handled; ++i) ::signal(a.handled[i], SIG_DFL);
  // gpurun ignores SIGPIPE; workers get the default back, and SIGXFSZ too: torchrun's workers
  // get both from Python's subprocess (restore_signals), whatever torchrun inherited.
  ::signal(SIGPIPE, SIG_DFL);
  ::signal(SIGXFSZ, SIG_DFL);
  ::setpgid(0, 0);
  // The user's descriptor limit, not the one gpurun raised for its store.
  if (a.nofile != nullptr) ::setrlimit(RLIMIT_NOFILE, a.nofile);
  // Before exec: nothing the worker starts escapes the cgroup(s).
  for (const char* procs : {a.cgroup_procs, a.memcg_procs}) {
    if (procs == nullptr) continue;
    const int fd = ::open(procs, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      [[maybe_unused]] ssize_t n = ::write(fd, "0", 1);
      ::close(fd);
    }
  }
  // As a shell does, from both sides (the parent does it too): SIGTTOU is blocked here.
  if (a.tty_fd >= 0) ::tcsetpgrp(a.tty_fd, ::getpid());
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_fail(a.exec_fd, 0);
  if (::getppid() != a.parent) {  // gpurun died between fork and prctl
    errno = ESRCH;
    child_fail(a.exec_fd, 2);
  }
  if (a.in_fd >= 0 && ::dup2(a.in_fd, 0) < 0) child_fail(a.exec_fd, 1);
  if (a.out_fd >= 0 && ::dup2(a.out_fd, 1) < 0) child_fail(a.exec_fd, 1);
  if (a.err_fd >= 0 && ::dup2(a.err_fd, 2) < 0) child_fail(a.exec_fd, 1);
  if (a.cpus != nullptr && ::sched_setaffinity(0, a.cpus_size, a.cpus) != 0) {
    child_fail(a.exec_fd, 4);
  }
  // Like Python's close_fds=True (torchrun): nothing but 0/1/2 survives exec (e.g. the store's
  // sockets, other workers' pipes). The error pipe already has FD_CLOEXEC.
  ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(a.exe, a.argv, a.envp);
  child_fail(a.exec_fd, 0);
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define GPURUN_SPAWN_WITH_FORK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define GPURUN_SPAWN_WITH_FORK 1
#endif
#endif

#ifndef GPURUN_SPAWN_WITH_FORK
extern "C" int child_trampoline(void* arg) { child_main(*static_cast<const ChildArgs*>(arg)); }
#endif

}  // namespace

// clone(CLONE_VM | CLONE_VFORK), as glibc's posix_spawn: no page-table copy, so a spawn costs
// the same however big gpurun is, and the parent resumes once the child has exec'd (or failed).
// Sanitizer builds use fork (the sanitizers do not follow a CLONE_VM child). All signals are
// blocked around it so that no handler of ours runs in the child before it resets them.
pid_t start_child(const ChildArgs& a) {
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
#ifdef GPURUN_SPAWN_WITH_FORK
  const pid_t pid = ::fork();
  if (pid == 0) child_main(a);
#else
  static constexpr std::size_t kStack = 64 * 1024;
  static thread_local auto stack = std::make_unique<char[]>(kStack);
  const pid_t pid = ::clone(child_trampoline, stack.get() + kStack,
                            CLONE_VM | CLONE_VFORK | SIGCHLD, const_cast<ChildArgs*>(&a));
#endif
  const int saved = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = saved;
  return pid;
}

}  // namespace gpurun::launcher
