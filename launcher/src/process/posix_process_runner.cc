// PosixProcessRunner: the real ProcessRunner. The child side (between clone and exec) is
// child_spawn.cc; what is left (~550 lines) is one class, the parent's event loop over its
// children (spawn, poll, read, reap, terminal hand-over), kept whole on purpose.
//
// Why not Boost.Process (v1 or v2, Boost 1.81): everything we need happens between the child's
// creation and exec (setpgid, prctl(PR_SET_PDEATHSIG) + the getppid() race check, the
// close-on-exec error pipe, close_range, stdio wiring, resetting signal handlers and mask), and
// that is ~40 lines of async-signal-safe code (child_spawn.cc) versus custom initializers in either
// Boost.Process API, which also bring their own SIGCHLD/wait machinery that would fight the one
// reaping point we want. posix_spawn cannot set PR_SET_PDEATHSIG. Spawning is the hot path of
// launch latency, so the child is created like glibc's posix_spawn does it: clone(CLONE_VM |
// CLONE_VFORK) (no page-table copy; fork() in sanitizer builds).
//
// Event model: SIGCHLD and the watched signals write one byte each to a non-blocking
// self-pipe; wait() poll()s that pipe plus every open child pipe, so an exit is seen at once and
// nothing is ever polled on a timer. Children are reaped in exactly one place (reap_children).
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "gpurun/common/error.h"
#include "gpurun/common/fd_limit.h"
#include "gpurun/common/io.h"
#include "gpurun/common/log.h"
#include "gpurun/common/unique_fd.h"
#include "process/child_spawn.h"
#include "process/process_runner.h"
#include "process/reaper.h"

namespace gpurun::launcher {
namespace {

int g_signal_pipe_write = -1;  // written by the handler; -1 when no runner exists

extern "C" void on_signal(int sig) {
  const int saved = errno;
  if (g_signal_pipe_write >= 0) {
    const auto byte = static_cast<unsigned char>(sig);
    [[maybe_unused]] ssize_t n = ::write(g_signal_pipe_write, &byte, 1);
  }
  errno = saved;
}

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

std::pair<UniqueFd, UniqueFd> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    throw SpawnError(fmt::format("cannot create a pipe ({}); raise the open-file limit (ulimit -n)",
                                 std::strerror(errno)));
  }
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// execvp's PATH search, done in the parent so the child only calls execve (allocation-free).
std::string resolve_executable(const std::string& name, const EnvMap& env) {
  if (name.empty() || name.find('/') != std::string::npos) return name;
  auto path = env_get(env, "PATH").value_or("/usr/local/bin:/usr/bin:/bin");
  for (const auto& dir : split(path, ':')) {
    std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    struct stat st {};
    if (::access(candidate.c_str(), X_OK) == 0 && ::stat(candidate.c_str(), &st) == 0 &&
        S_ISREG(st.st_mode)) {
      return candidate;
    }
  }
  return name;  // execve fails with ENOENT and the error pipe reports it
}

class PosixProcessRunner final : public ProcessRunner {
 public:
  explicit PosixProcessRunner(const ReaperOptions& reaper_options) {
    if (g_signal_pipe_write >= 0) {
      throw Error("internal: only one PosixProcessRunner may exist at a time");
    }
    auto [r, w] = make_pipe();
    set_nonblocking(r.get());
    set_nonblocking(w.get());
    sig_read_ = std::move(r);
    sig_write_ = std::move(w);
    g_signal_pipe_write = sig_write_.get();
    install(SIGCHLD);
    // A closed console (gpurun ... | head) must not kill gpurun (and with it every worker);
    // writes then fail with EPIPE and the output is dropped. Children get SIGPIPE back (below).
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    ::sigemptyset(&ign.sa_mask);
    ::sigaction(SIGPIPE, &ign, &old_sigpipe_);
    null_fd_.reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
    reaper_ = std::make_unique<Reaper>(reaper_options);  // forks the watchdog: before any worker
  }

  ~PosixProcessRunner() override {
    // RAII: a child still running when the runner goes away is killed and reaped.
    for (auto& [pid, child] : children_) {
      if (!child.reaped) ::kill(-pid, SIGKILL), ::kill(pid, SIGKILL);
    }
    // And whatever they started: other process groups, sessions (setsid), double forks.
    reaper_->kill_descendants();
    // Reap what died at once; never block on a process stuck in uninterruptible sleep (it is
    // reparented to init when gpurun exits).
    for (auto& [pid, child] : children_) {
      if (!child.reaped) {
        int st = 0;
        for (int i = 0; i < 100 && ::waitpid(pid, &st, WNOHANG) == 0; ++i) ::usleep(1000);
      }
    }
    reaper_.reset();  // the watchdog stands down; the cgroup is removed
    take_terminal_back();
    for (auto& [sig, old] : old_actions_) ::sigaction(sig, &old, nullptr);
    ::sigaction(SIGPIPE, &old_sigpipe_, nullptr);
    g_signal_pipe_write = -1;
  }

  void watch_signals(const std::vector<int>& signals) override {
    for (int sig : signals) {
      if (sig == SIGCHLD || sig == SIGKILL || sig == SIGSTOP) continue;
      if (old_actions_.count(sig) == 0) install(sig);
    }
  }

  pid_t spawn(const SpawnRequest& req) override {
    if (req.argv.empty()) throw SpawnError("internal: empty argv");
    // Everything the child needs is prepared here: it must not allocate after fork (the store
    // thread may hold the malloc lock at that moment).
    const std::string exe = resolve_executable(req.argv[0], req.env);
    std::vector<char*> argv;
    argv.reserve(req.argv.size() + 1);
    for (const auto& a : req.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::vector<std::string> env_strings = to_envp_strings(req.env);
    std::vector<char*> envp;
    envp.reserve(env_strings.size() + 1);
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);

    Child child;
    child.id = req.id;
    child.argv0 = req.argv[0];
    UniqueFd out_target, err_target;
    auto wire = [&](const StreamSetup& setup, UniqueFd& target, UniqueFd& read_end) {
      switch (setup.mode) {
        case StreamMode::kInherit:
          break;
        case StreamMode::kNull:
          target.reset(::fcntl(null_fd_.get(), F_DUPFD_CLOEXEC, 3));
          break;
        case StreamMode::kFile:
          target.reset(::open(setup.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
          if (!target) {
            throw SpawnError(fmt::format("cannot open log file '{}' ({}); check --log-dir",
                                         setup.path, std::strerror(errno)));
          }
          break;
        case StreamMode::kPipe: {
          auto [r, w] = make_pipe();
          set_nonblocking(r.get());
          read_end = std::move(r);
          target = std::move(w);
          break;
        }
      }
    };
    wire(req.out, out_target, child.out);
    wire(req.err, err_target, child.err);
    auto [exec_r, exec_w] = make_pipe();
    ChildArgs ca;
    ca.exe = exe.c_str();
    ca.argv = argv.data();
    ca.envp = envp.data();
    ca.in_fd = req.stdin_null ? null_fd_.get() : -1;
    ca.out_fd = out_target.get();
    ca.err_fd = err_target.get();
    ca.exec_fd = exec_w.get();
    ca.parent = ::getpid();
    // The terminal, when gpurun has it (its foreground group) and no other child has it now.
    const bool give_tty = req.foreground && !req.stdin_null && tty_owner_ == 0 &&
                          ::isatty(0) == 1 && ::tcgetpgrp(0) == ::getpgrp();
    if (give_tty) {
      saved_tty_ok_ = ::tcgetattr(0, &saved_tty_) == 0;
      ca.tty_fd = 0;
    }
    ca.cgroup_procs = reaper_->cgroup_procs();
    ca.memcg_procs = reaper_->memcg_procs();
    const std::optional<rlimit> nofile = original_fd_limit();  // before the store raised it
    if (nofile) ca.nofile = &*nofile;
    ca.handled = handled_signals_.data();
    ca.n_handled = handled_signals_.size();

    // --numa-binding: the affinity mask, built here (the child must not allocate).
    std::unique_ptr<cpu_set_t, void (*)(cpu_set_t*)> cpus(nullptr, [](cpu_set_t* p) {
      if (p) CPU_FREE(p);
    });
    if (!req.cpus.empty()) {
      const int max_cpu = *std::max_element(req.cpus.begin(), req.cpus.end());
      cpus.reset(CPU_ALLOC(max_cpu + 1));
      if (!cpus) throw SpawnError("cannot allocate a CPU set for --numa-binding");
      ca.cpus_size = CPU_ALLOC_SIZE(max_cpu + 1);
      CPU_ZERO_S(ca.cpus_size, cpus.get());
      for (int c : req.cpus) CPU_SET_S(static_cast<std::size_t>(c), ca.cpus_size, cpus.get());
      ca.cpus = cpus.get();
    }

    const pid_t pid = start_child(ca);
    if (pid < 0) {
      throw SpawnError(fmt::format("cannot start a worker process ({}); check ulimit -u and memory",
                                   std::strerror(errno)));
    }
    // ---- parent ----
    ::setpgid(pid, pid);  // also done by the child; whichever runs first wins the race
    reaper_->adopt(pid);
    if (give_tty) {
      hand_terminal_to(pid);  // the child has usually done it already (CLONE_VFORK)
      tty_owner_ = pid;
    }
    exec_w.reset();
    set_nonblocking(exec_r.get());
    child.exec_err = std::move(exec_r);
    child.pid = pid;
    children_.emplace(pid, std::move(child));
    return pid;
  }

  // /proc/<pid>/stat: state Z/X (a zombie), or PF_EXITING in the flags (in exit, not yet a
  // zombie). False when /proc cannot tell.
  bool exiting(pid_t pid) const override {
    auto it = children_.find(pid);
    if (it == children_.end()) return false;
    if (it->second.reaped) return true;
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
    UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
    if (!fd) return false;
    char buf[1024];
    const ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
    if (n <= 0) return false;
    buf[n] = '\0';
    // "pid (comm) S ppid pgrp session tty_nr tpgid flags ...": comm may hold spaces and ')'.
    const char* p = std::strrchr(buf, ')');
    if (p == nullptr || p[1] != ' ') return false;
    const char state = p[2];
    if (state == 'Z' || state == 'X' || state == 'x') return true;
    unsigned long flags = 0;
    if (std::sscanf(p + 3, " %*d %*d %*d %*d %*d %lu", &flags) != 1) return false;
    constexpr unsigned long kPfExiting = 0x4;
    return (flags & kPfExiting) != 0;
  }

  long oom_kills() const override { return reaper_->oom_kills(); }
  std::string oom_source() const override { return reaper_->oom_source(); }

  void signal_group(pid_t pid, int sig) override {
    auto it = children_.find(pid);
    if (it == children_.end()) return;
    if (::kill(-pid, sig) != 0 && errno == ESRCH && !it->second.reaped) {
      ::kill(pid, sig);  // setpgid not done yet (signal raced the child's first instructions)
    }
  }

  std::vector<RunnerEvent> wait(Clock::time_point deadline) override {
    std::vector<RunnerEvent> events;
    for (;;) {
      std::vector<pollfd> fds;
      std::vector<std::pair<pid_t, int>> owners;  // (pid, which: 1 out, 2 err, 3 exec)
      fds.push_back({sig_read_.get(), POLLIN, 0});
      owners.emplace_back(0, 0);
      for (auto& [pid, c] : children_) {
        if (c.out) fds.push_back({c.out.get(), POLLIN, 0}), owners.emplace_back(pid, 1);
        if (c.err) fds.push_back({c.err.get(), POLLIN, 0}), owners.emplace_back(pid, 2);
        if (c.exec_err) fds.push_back({c.exec_err.get(), POLLIN, 0}), owners.emplace_back(pid, 3);
      }
      // The time left is measured again after a signal interrupted poll.
      const int n = retry_eintr([&] {
        int timeout_ms = -1;
        if (deadline != Clock::time_point::max()) {
          const auto left = deadline - Clock::now();
          timeout_ms = left <= Clock::duration::zero()
                           ? 0
                           : static_cast<int>(std::min<long long>(
                                 std::chrono::ceil<milliseconds>(left).count(), 1 << 30));
        }
        return ::poll(fds.data(), fds.size(), events.empty() ? timeout_ms : 0);
      });
      if (n < 0) throw_errno("poll");
      if (n == 0) return events;
      if (fds[0].revents != 0) drain_signal_pipe(events);
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        auto it = children_.find(owners[i].first);
        if (it == children_.end()) continue;
        Child& c = it->second;
        switch (owners[i].second) {
          case 1:
            read_stream(c, Stream::kStdout, events);
            break;
          case 2:
            read_stream(c, Stream::kStderr, events);
            break;
          case 3:
            read_exec_error(c);
            break;
        }
      }
      reap_children(events);
      forget_finished();
      if (!events.empty()) return events;
      if (deadline != Clock::time_point::max() && Clock::now() >= deadline) return events;
    }
  }

 private:
  struct Child {
    int id = 0;
    pid_t pid = 0;
    std::string argv0;
    UniqueFd out, err, exec_err;
    std::string exec_error;
    bool reaped = false;
  };

  // The terminal back to gpurun's process group, with the settings it had before the child got
  // it (a debugger killed in raw mode must not leave the shell without echo). gpurun is in the
  // background at this point: SIGTTOU is blocked around the calls, as a shell does.
  void take_terminal_back() {
    if (tty_owner_ == 0) return;
    tty_owner_ = 0;
    sigset_t ttou, old;
    ::sigemptyset(&ttou);
    ::sigaddset(&ttou, SIGTTOU);
    ::pthread_sigmask(SIG_BLOCK, &ttou, &old);
    if (saved_tty_ok_) ::tcsetattr(0, TCSADRAIN, &saved_tty_);
    ::tcsetpgrp(0, ::getpgrp());
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }

  // tcsetpgrp(0, pgrp) with SIGTTOU blocked: gpurun may already be in the background (the
  // child made itself the foreground first), and a background tcsetpgrp would stop gpurun.
  static void hand_terminal_to(pid_t pgrp) {
    sigset_t ttou, old;
    ::sigemptyset(&ttou);
    ::sigaddset(&ttou, SIGTTOU);
    ::pthread_sigmask(SIG_BLOCK, &ttou, &old);
    ::tcsetpgrp(0, pgrp);
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }

  // Ctrl-Z: the worker that has the terminal stopped (SIGTSTP/SIGTTIN/SIGTTOU). As if it were
  // in gpurun's process group (torchrun 1.13's workers are): the terminal goes back to the
  // shell's job (gpurun), the other workers are stopped and gpurun stops itself, so the shell
  // regains the prompt; on `fg` (SIGCONT to gpurun) all continue and the worker gets the
  // terminal again. gpurun's group being orphaned (no job control) drops the stop: all go on.
  void suspend_with(pid_t pid, int sig) {
    if (sig != SIGTSTP && sig != SIGTTIN && sig != SIGTTOU) return;
    take_terminal_back();
    for (auto& [other, c] : children_) {
      if (other != pid && !c.reaped) ::kill(-other, SIGSTOP);
    }
    ::raise(SIGTSTP);  // SIG_DFL: gpurun stops here until SIGCONT
    if (::isatty(0) == 1 && ::tcgetpgrp(0) == ::getpgrp()) {
      saved_tty_ok_ = ::tcgetattr(0, &saved_tty_) == 0;
      hand_terminal_to(pid);
      tty_owner_ = pid;
    }
    for (auto& [other, c] : children_) {
      if (!c.reaped) ::kill(-other, SIGCONT);
    }
  }

  // Also over an inherited SIG_IGN (torchrun's signal.signal() does the same): a script's
  // `gpurun ... &` starts with SIGINT ignored, and `kill -INT` must still stop the job.
  void install(int sig) {
    struct sigaction old {};
    ::sigaction(sig, nullptr, &old);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    ::sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // SIGCHLD also for a stop: Ctrl-Z of the worker with the terminal
    ::sigaction(sig, &sa, nullptr);
    old_actions_[sig] = old;
    handled_signals_.push_back(sig);
  }

  void drain_signal_pipe(std::vector<RunnerEvent>& events) {
    unsigned char buf[256];
    for (;;) {
      const ssize_t n = ::read(sig_read_.get(), buf, sizeof buf);
      if (n <= 0) break;
      for (ssize_t i = 0; i < n; ++i) {
        if (buf[i] == SIGCHLD) continue;  // reap_children runs after every wake-up anyway
        RunnerEvent ev;
        ev.kind = RunnerEvent::Kind::kSignal;
        ev.signo = buf[i];
        events.push_back(std::move(ev));
      }
    }
  }

  // Reads what is available now (never blocks). EOF closes the stream and reports kClosed.
  void read_stream(Child& c, Stream stream, std::vector<RunnerEvent>& events) {
    UniqueFd& fd = stream == Stream::kStdout ? c.out : c.err;
    char buf[65536];
    for (int rounds = 0; fd && rounds < 16; ++rounds) {
      const ssize_t n = retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf); });
      if (n > 0) {
        RunnerEvent ev;
        ev.kind = RunnerEvent::Kind::kOutput;
        ev.id = c.id;
        ev.pid = c.pid;
        ev.stream = stream;
        ev.data.assign(buf, static_cast<std::size_t>(n));
        events.push_back(std::move(ev));
        if (static_cast<std::size_t>(n) < sizeof buf) return;
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      fd.reset();  // EOF or a real error
      RunnerEvent ev;
      ev.kind = RunnerEvent::Kind::kClosed;
      ev.id = c.id;
      ev.pid = c.pid;
      ev.stream = stream;
      events.push_back(std::move(ev));
      return;
    }
  }

  void read_exec_error(Child& c) {
    ChildError e{};
    const ssize_t n = retry_eintr([&] { return ::read(c.exec_err.get(), &e, sizeof e); });
    if (n < 0 && errno == EAGAIN) return;
    if (n == static_cast<ssize_t>(sizeof e)) {
      const char* what = e.stage == 1   ? "cannot set up its stdio"
                         : e.stage == 2 ? "gpurun exited while it started"
                         : e.stage == 4 ? "cannot bind it to its --numa-binding CPUs"
                                        : nullptr;
      c.exec_error = what ? fmt::format("{} ({})", what, std::strerror(e.err))
                          : std::string(std::strerror(e.err));
    }
    c.exec_err.reset();  // EOF = exec succeeded (close-on-exec), or the error was read
  }

  // The one place children are reaped.
  void reap_children(std::vector<RunnerEvent>& events) {
    for (;;) {
      int st = 0;
      const pid_t pid = retry_eintr([&] { return ::waitpid(-1, &st, WNOHANG | WUNTRACED); });
      if (pid <= 0) return;
      if (WIFSTOPPED(st)) {
        if (pid == tty_owner_) suspend_with(pid, WSTOPSIG(st));
        continue;  // other stops (a debugger's SIGSTOP) are the user's business
      }
      auto it = children_.find(pid);
      if (it == children_.end()) continue;  // not ours
      Child& c = it->second;
      c.reaped = true;
      if (pid == tty_owner_) take_terminal_back();
      // Every byte written before exit is in the pipes now: deliver it before the exit.
      if (c.out) read_stream(c, Stream::kStdout, events);
      if (c.err) read_stream(c, Stream::kStderr, events);
      if (c.exec_err) read_exec_error(c);
      RunnerEvent ev;
      ev.kind = RunnerEvent::Kind::kExited;
      ev.id = c.id;
      ev.pid = pid;
      ev.status = ExitStatus::from_wait_status(st);
      ev.exec_error = c.exec_error;
      events.push_back(std::move(ev));
    }
  }

  // Pipes held open by a reaped child's own children stay open (and are read) until EOF; a
  // reaped child with nothing left open is forgotten.
  void forget_finished() {
    for (auto it = children_.begin(); it != children_.end();) {
      const Child& c = it->second;
      if (c.reaped && !c.out && !c.err && !c.exec_err) {
        it = children_.erase(it);
      } else {
        ++it;
      }
    }
  }

  std::map<pid_t, Child> children_;
  std::unique_ptr<Reaper> reaper_;
  UniqueFd sig_read_, sig_write_, null_fd_;
  std::map<int, struct sigaction> old_actions_;
  std::vector<int> handled_signals_;
  struct sigaction old_sigpipe_ {};
  pid_t tty_owner_ = 0;  // the child that has the terminal (0: gpurun has it, or none)
  termios saved_tty_{};
  bool saved_tty_ok_ = false;
};

}  // namespace

ExitStatus ExitStatus::from_wait_status(int status) {
  if (WIFSIGNALED(status)) return killed(WTERMSIG(status));
  if (WIFEXITED(status)) return exited(WEXITSTATUS(status));
  return exited(255);
}

std::string ExitStatus::describe() const {
  if (signaled) return "killed by " + signal_name(signal);
  return fmt::format("exited with code {}", code);
}

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  if (abbrev != nullptr) return std::string("SIG") + abbrev;
  return fmt::format("signal {}", sig);
}

std::optional<int> parse_signal(const std::string& text) {
  if (text.empty()) return std::nullopt;
  if (text.find_first_not_of("0123456789") == std::string::npos) {
    const int n = std::atoi(text.c_str());
    if (n > 0 && n < NSIG) return n;
    return std::nullopt;
  }
  std::string name;
  for (char ch : text) name += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (name.rfind("SIG", 0) == 0) name = name.substr(3);
  for (int sig = 1; sig < NSIG; ++sig) {
    const char* abbrev = ::sigabbrev_np(sig);
    if (abbrev != nullptr && name == abbrev) return sig;
  }
  return std::nullopt;
}

std::unique_ptr<ProcessRunner> make_posix_process_runner(const ReaperOptions& reaper) {
  return std::make_unique<PosixProcessRunner>(reaper);
}

}  // namespace gpurun::launcher
