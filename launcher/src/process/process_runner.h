// The OS seam of the supervisor: starting workers, signalling their process groups, and one
// blocking wait that multiplexes child exits, child output and signals sent to gpurun itself.
// PosixProcessRunner is the real thing (fork/exec); FakeProcessRunner (fake_process_runner.h)
// scripts children in virtual time for Supervisor unit tests. The runner holds no policy: who
// gets signalled when, restarts and exit codes live in Supervisor.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gpurun/common/duration.h"
#include "gpurun/common/env.h"
#include "process/reaper.h"

namespace gpurun::launcher {

// How one of a child's standard streams is wired.
enum class StreamMode {
  kInherit,  // gpurun's own fd (no copy, no prefix): torchrun's default
  kPipe,     // a pipe read by gpurun (tag, tee, filter, ring buffer)
  kFile,     // `path` opened O_WRONLY|O_CREAT|O_APPEND and handed to the child (-r without -t)
  kNull,     // /dev/null
};

struct StreamSetup {
  StreamMode mode = StreamMode::kInherit;
  std::string path;  // kFile only
};

struct SpawnRequest {
  int id = 0;                     // the caller's name for the child (the local rank)
  std::vector<std::string> argv;  // argv[0]: a path, or a name searched in env's PATH
  EnvMap env;                     // the child's complete environment
  StreamSetup out;
  StreamSetup err;
  bool stdin_null = false;  // stdin from /dev/null instead of gpurun's stdin
  // gpurun's stdin is its terminal and gpurun is in the terminal's foreground: make the child's
  // process group the foreground one (tcsetpgrp) so it can read the terminal (pdb, input());
  // gpurun takes the terminal back, with its settings as they were, when the child is reaped.
  bool foreground = false;
  std::vector<int> cpus;  // CPU affinity set before exec (--numa-binding); empty = inherited
};

enum class Stream { kStdout = 1, kStderr = 2 };

// How a child ended.
struct ExitStatus {
  bool signaled = false;
  int code = 0;    // exit code when !signaled
  int signal = 0;  // terminating signal when signaled

  static ExitStatus exited(int code) { return {false, code, 0}; }
  static ExitStatus killed(int sig) { return {true, 0, sig}; }
  static ExitStatus from_wait_status(int status);

  bool success() const { return !signaled && code == 0; }
  // The shell convention: the code, or 128+signal (SIGSEGV -> 139).
  int as_exit_code() const { return signaled ? 128 + signal : code; }
  // torchrun's convention in its summary: negative signal number for a signal death.
  int torchrun_exitcode() const { return signaled ? -signal : code; }
  // "exited with code 3" / "killed by SIGSEGV".
  std::string describe() const;
};

// "SIGSEGV" for 11; "signal 77" when unknown.
std::string signal_name(int sig);
// Parses "SIGUSR1", "USR1", "usr1" or "10". Returns nullopt when unknown.
std::optional<int> parse_signal(const std::string& text);

struct RunnerEvent {
  enum class Kind {
    kOutput,  // `data` arrived on `stream` of child `id`
    kClosed,  // `stream` of child `id` reached EOF (flush any partial line)
    kExited,  // child `id` (pid) was reaped; every byte it wrote before exiting came first
    kSignal,  // gpurun itself received `signo` (only signals passed to watch_signals)
  };
  Kind kind = Kind::kOutput;
  int id = -1;
  pid_t pid = 0;
  Stream stream = Stream::kStdout;
  std::string data;
  ExitStatus status;
  std::string exec_error;  // kExited: why exec failed ("No such file or directory"), "" if it ran
  int signo = 0;
};

// REQUIRES: used from one thread (the one that spawns: PR_SET_PDEATHSIG follows that thread).
class ProcessRunner {
 public:
  virtual ~ProcessRunner() = default;

  // Starts a child in its own process group. Returns its pid at once (exec runs asynchronously;
  // an exec failure comes back as a kExited event with exec_error set and exit code 127).
  // Throws SpawnError when the child could not even be created (fork, pipe, open of a log file).
  virtual pid_t spawn(const SpawnRequest& request) = 0;

  // kill(-pid, sig) for the child's process group. Ignores a group that is already gone.
  virtual void signal_group(pid_t pid, int sig) = 0;

  // True when the child has already exited (a zombie not yet reaped) or is exiting: a signal
  // sent now cannot change how it ends, so its exit is its own.
  virtual bool exiting(pid_t pid) const {
    (void)pid;
    return false;
  }

  // Blocks until at least one event is available or `deadline` passes (then returns empty).
  virtual std::vector<RunnerEvent> wait(Clock::time_point deadline) = 0;

  // Signals to gpurun that wait() reports as kSignal events (handlers installed on first call,
  // also for a signal inherited as ignored: `gpurun ... &` in a script starts with SIGINT and
  // SIGQUIT ignored, and torchrun handles them anyway). Children get them back as SIG_DFL.
  virtual void watch_signals(const std::vector<int>& signals) = 0;

  // Workers the kernel's OOM killer killed, as the run's cgroup counts them (reaper.h; 0
  // without a memory cgroup), and the file that count was read from.
  virtual long oom_kills() const { return 0; }
  virtual std::string oom_source() const { return ""; }

  // The clock deadlines are measured on (virtual in the fake).
  virtual Clock::time_point now() const { return Clock::now(); }
};

// fork/exec with setpgid, PR_SET_PDEATHSIG(SIGKILL) + getppid() check, a close-on-exec error
// pipe, close_range(CLOEXEC) of inherited fds, and SIGCHLD + watched signals through a
// self-pipe. Destruction SIGKILLs and reaps children that are still running, and with the
// Reaper (reaper.h: child subreaper, a cgroup v2 where writable, a watchdog process) every
// process they started, also after kill -9 gpurun.
// Only one instance may exist at a time (it owns the process's SIGCHLD handler).
std::unique_ptr<ProcessRunner> make_posix_process_runner(const ReaperOptions& reaper = {});

}  // namespace gpurun::launcher
