// No process left behind (issue 16 §3). PR_SET_PDEATHSIG reaches only gpurun's direct children:
// a worker that is a wrapper script, double-forks or calls setsid leaves descendants that it
// does not cover. The Reaper closes that gap in three layers:
//  1. gpurun is a child subreaper (PR_SET_CHILD_SUBREAPER): orphaned descendants are
//     reparented to gpurun (and reaped by its waitpid(-1)), never to init, so their ancestry
//     still leads to gpurun while it runs.
//  2. Where a cgroup v2 hierarchy is mounted and writable (found in /proc/self/mountinfo and
//     /proc/self/cgroup, never assumed), the workers run in a cgroup of their own
//     (<gpurun's cgroup>/gpurun_<pid>_<n>), joined by each child before exec. Teardown kills it
//     with cgroup.kill (or SIGKILL to every pid of cgroup.procs on kernels without it).
//     At every teardown (exit, failure, signal) kill_descendants() kills the cgroup until it is
//     empty, or, without one, every process whose /proc ppid chain leads to gpurun, until none
//     is left (that walk reads every process's stat: it is not done when the cgroup holds
//     them all).
//  3. A watchdog process, forked before the workers in a session of its own, reads a pipe whose
//     write end only gpurun holds. EOF without gpurun's "stand down" means gpurun died
//     (kill -9): the watchdog kills the cgroup, or, without one, every process in the workers'
//     process groups or sessions or whose environment holds the run's marker (its
//     TORCHELASTIC_ERROR_FILE directory), then removes the run's temporary directory.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

namespace gpurun::launcher {

struct ReaperOptions {
  // Removed by the watchdog when gpurun dies without tearing down (a /tmp/gpurun_* base).
  std::string cleanup_dir;
  // "NAME=value" prefix of an environment entry that only this run's workers (and what they
  // start) carry; used by the watchdog when there is no cgroup. Empty: not used.
  std::string env_marker;
  bool use_cgroup = true;  // false: tests of the fallback (also GPURUN_NO_CGROUP=1)
};

class Reaper {
 public:
  explicit Reaper(const ReaperOptions& options);
  ~Reaper();  // kill_descendants(), then tells the watchdog to stand down; removes the cgroup
  Reaper(const Reaper&) = delete;
  Reaper& operator=(const Reaper&) = delete;

  // The cgroup.procs file a child writes "0" to before exec (null without a cgroup).
  const char* cgroup_procs() const { return procs_path_.empty() ? nullptr : procs_path_.c_str(); }
  // The cgroup v1 memory cgroup's cgroup.procs (hybrid hosts; null where v2 has the memory
  // controller or there is none): joined before exec too, for the OOM count alone.
  const char* memcg_procs() const { return memcg_procs_.empty() ? nullptr : memcg_procs_.c_str(); }
  // A worker started (parent side): moves it into the cgroup too (a no-op when the child did)
  // and tells the watchdog its pid (its process group and session).
  void adopt(pid_t pid);
  // Kills every descendant of gpurun (but the watchdog) and the cgroup; reaps what it can.
  void kill_descendants();
  // The kernel OOM killer's kills in the run's cgroup: oom_kill of its memory.events (cgroup v2
  // with the memory controller) or of memory.oom_control (the v1 memory cgroup gpurun makes
  // beside it on hybrid hosts); 0 without either.
  long oom_kills() const;
  std::string oom_source() const;  // the file oom_kills() reads, for messages
  // For --help/--dry-run and tests: "cgroup v2 <dir>" or "process groups, sessions and the
  // environment marker (no writable cgroup v2)".
  std::string mechanism() const;
  pid_t watchdog_pid() const { return watchdog_; }
  const std::string& cgroup_dir() const { return cgroup_dir_; }

 private:
  std::string cgroup_dir_, procs_path_;
  std::string memcg_dir_, memcg_procs_;  // cgroup v1 memory (hybrid hosts)
  pid_t watchdog_ = -1;
  int watchdog_fd_ = -1;  // write end of the pipe; only gpurun holds it
};

// Finds gpurun's cgroup v1 memory cgroup (hybrid hosts) and creates `name` under it. Returns the
// new directory, or "" (and why in *why).
std::string create_memory_cgroup_v1(const std::string& name, std::string* why);

// The oom_kill count of a memory.events (v2) or memory.oom_control (v1) file's text (0 when
// absent).
long oom_kill_count(const std::string& memory_events);

// Finds a writable cgroup v2 directory under gpurun's own cgroup and creates `name` there.
// Returns the new directory, or "" (and why in *why) when there is none.
std::string create_cgroup(const std::string& name, std::string* why);

}  // namespace gpurun::launcher
