// Reaper: see reaper.h. The watchdog runs in a fork()ed copy of gpurun (no exec): it only uses
// plain libc calls (glibc makes malloc safe in a forked child) and never logs.
#include "process/reaper.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <vector>

#include "gpurun/common/error.h"
#include "gpurun/common/io.h"
#include "gpurun/common/log.h"

namespace gpurun::launcher {
namespace {

struct ProcInfo {
  pid_t pid = 0, ppid = 0, pgrp = 0, sid = 0;
  char state = '?';
};

bool read_stat(pid_t pid, ProcInfo& info) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  // "pid (comm) S ppid pgrp session ...": comm may hold spaces and ')'.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] != ' ') return false;
  int ppid = 0, pgrp = 0, sid = 0;
  if (std::sscanf(p + 2, "%c %d %d %d", &info.state, &ppid, &pgrp, &sid) != 4) return false;
  info.pid = pid;
  info.ppid = ppid;
  info.pgrp = pgrp;
  info.sid = sid;
  return true;
}

std::vector<ProcInfo> list_processes() {
  std::vector<ProcInfo> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    ProcInfo info;
    if (read_stat(static_cast<pid_t>(std::atoi(name.c_str())), info)) out.push_back(info);
  }
  return out;
}

bool live(const ProcInfo& p) { return p.state != 'Z' && p.state != 'X' && p.state != 'x'; }

// /proc/<pid>/environ holds an entry that starts with `marker`.
bool has_env_marker(pid_t pid, const std::string& marker) {
  if (marker.empty()) return false;
  std::ifstream in(fmt::format("/proc/{}/environ", pid), std::ios::binary);
  if (!in) return false;
  std::string env((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (env.compare(0, marker.size(), marker) == 0) return true;
  return env.find(std::string(1, '\0') + marker) != std::string::npos;
}

bool write_file(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// cgroup.kill (Linux 5.14+), else SIGKILL to every pid of cgroup.procs. Returns how many pids
// the cgroup still listed.
int kill_cgroup(const std::string& dir) {
  if (dir.empty()) return 0;
  const bool killed = write_file(dir + "/cgroup.kill", "1");
  std::istringstream procs(read_file(dir + "/cgroup.procs"));
  int n = 0;
  for (pid_t pid; procs >> pid; ++n) {
    if (!killed) ::kill(pid, SIGKILL);
  }
  return n;
}

bool cgroup_populated(const std::string& dir) {
  return read_file(dir + "/cgroup.events").find("populated 1") != std::string::npos;
}

// Waits (bounded: 5 s) for the cgroup to empty, then removes it.
void remove_cgroup(const std::string& dir) {
  if (dir.empty()) return;
  for (int i = 0; i < 500 && cgroup_populated(dir); ++i) ::usleep(10000);
  ::rmdir(dir.c_str());
}

// A cgroup v1 memory directory: removed once its last task is gone (bounded: 5 s; rmdir fails
// with EBUSY while tasks remain).
void remove_memcg(const std::string& dir) {
  if (dir.empty()) return;
  for (int i = 0; i < 500 && ::rmdir(dir.c_str()) != 0 && errno == EBUSY; ++i) ::usleep(10000);
}

// The watchdog: see reaper.h. `workers` grows from the pipe's "p <pid>" lines.
[[noreturn]] void watchdog_main(int read_fd, const std::string& cgroup_dir,
                                const std::string& memcg_dir, const ReaperOptions& options) {
  ::setsid();  // out of gpurun's process group and terminal: Ctrl-C and kill -PGID miss it
  for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
  for (int sig : {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGPIPE, SIGTSTP, SIGTTIN, SIGTTOU}) {
    ::signal(sig, SIG_IGN);
  }
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // Hold nothing of gpurun's: no store socket, no worker pipe, not the caller's stdout.
  const int null_fd = ::open("/dev/null", O_RDWR);
  if (read_fd != 3) {
    ::dup2(read_fd, 3);
    read_fd = 3;
  }
  for (int fd = 0; fd < 3; ++fd) ::dup2(null_fd, fd);
  ::close_range(4, ~0U, 0);
  ::prctl(PR_SET_NAME, "gpurun-watchdog");

  std::set<pid_t> workers;
  std::string line;
  char buf[4096];
  for (;;) {
    const ssize_t n = retry_eintr([&] { return ::read(read_fd, buf, sizeof buf); });
    if (n <= 0) break;  // EOF: gpurun is gone without standing us down
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] != '\n') {
        line += buf[i];
        continue;
      }
      if (line == "q") ::_exit(0);
      if (line.rfind("p ", 0) == 0) workers.insert(static_cast<pid_t>(std::atoi(line.c_str() + 2)));
      line.clear();
    }
  }
  // gpurun died (kill -9): kill what it left, until a round finds nothing alive.
  const pid_t self = ::getpid();
  for (int round = 0; round < 100; ++round) {
    int found = kill_cgroup(cgroup_dir);
    for (const ProcInfo& p : list_processes()) {
      if (p.pid == self || !live(p)) continue;
      // A worker's own group, a session a worker started, or the run's environment marker.
      if (workers.count(p.pgrp) || workers.count(p.sid) ||
          has_env_marker(p.pid, options.env_marker)) {
        ::kill(p.pid, SIGKILL);
        ++found;
      }
    }
    if (found == 0) break;
    ::usleep(10000);
  }
  std::error_code ec;
  if (!options.cleanup_dir.empty()) std::filesystem::remove_all(options.cleanup_dir, ec);
  remove_cgroup(cgroup_dir);
  remove_memcg(memcg_dir);
  ::_exit(0);
}

std::atomic<int> g_reaper_count{0};

}  // namespace

namespace {

// Which hierarchy: cgroup v2 ("0::<path>" in /proc/self/cgroup, a "cgroup2" mount), or the v1
// hierarchy with the memory controller ("N:...memory...:<path>", a "cgroup" mount whose super
// options name memory).
enum class Hierarchy { kV2, kV1Memory };

bool names_memory(const std::string& list) {
  std::istringstream in(list);
  for (std::string c; std::getline(in, c, ',');) {
    if (c == "memory") return true;
  }
  return false;
}

// Creates `name` under gpurun's own cgroup of `h`; "" and *why when it cannot.
std::string create_in(Hierarchy h, const std::string& name, std::string* why) {
  const bool v2 = h == Hierarchy::kV2;
  const char* what = v2 ? "cgroup v2" : "cgroup v1 memory controller";
  std::string rel;
  {
    std::istringstream in(read_file("/proc/self/cgroup"));
    for (std::string l; std::getline(in, l);) {
      const auto a = l.find(':');
      const auto b = a == std::string::npos ? a : l.find(':', a + 1);
      if (b == std::string::npos) continue;
      const bool match = v2 ? l.rfind("0::", 0) == 0 : names_memory(l.substr(a + 1, b - a - 1));
      if (match) rel = l.substr(b + 1);
    }
  }
  if (rel.empty()) {
    *why = fmt::format("no {} in /proc/self/cgroup", what);
    return "";
  }
  // Its mount: "id parent maj:min root mountpoint opts ... - <fstype> src super_opts".
  std::string mount_root, mount_point;
  {
    const std::string sep = v2 ? " - cgroup2 " : " - cgroup ";
    std::istringstream in(read_file("/proc/self/mountinfo"));
    for (std::string l; std::getline(in, l);) {
      const auto dash = l.find(sep);
      if (dash == std::string::npos) continue;
      std::istringstream tail(l.substr(dash + sep.size()));
      std::string src, super;
      tail >> src >> super;
      if (!v2 && !names_memory(super)) continue;
      std::istringstream f(l.substr(0, dash));
      std::string id, parent, dev;
      f >> id >> parent >> dev >> mount_root >> mount_point;
      break;
    }
  }
  if (mount_point.empty()) {
    *why = fmt::format("no {} mount in /proc/self/mountinfo", what);
    return "";
  }
  if (mount_root != "/" && rel.rfind(mount_root, 0) != 0) {
    *why =
        fmt::format("gpurun's {} group {} is outside its mount's root {}", what, rel, mount_root);
    return "";
  }
  if (mount_root != "/") rel = rel.substr(mount_root.size());
  std::string parent = mount_point + rel;
  while (parent.size() > 1 && parent.back() == '/') parent.pop_back();
  const std::string dir = parent + "/" + name;
  if (::mkdir(dir.c_str(), 0755) != 0) {
    *why = fmt::format("cannot create {} ({})", dir, std::strerror(errno));
    return "";
  }
  if (::access((dir + "/cgroup.procs").c_str(), W_OK) != 0 ||
      (!v2 && ::access((dir + "/memory.oom_control").c_str(), R_OK) != 0)) {
    *why = fmt::format("{}/cgroup.procs is not writable ({})", dir, std::strerror(errno));
    ::rmdir(dir.c_str());
    return "";
  }
  return dir;
}

}  // namespace

std::string create_cgroup(const std::string& name, std::string* why) {
  return create_in(Hierarchy::kV2, name, why);
}

std::string create_memory_cgroup_v1(const std::string& name, std::string* why) {
  return create_in(Hierarchy::kV1Memory, name, why);
}

Reaper::Reaper(const ReaperOptions& options) {
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  const char* no_cgroup = std::getenv("GPURUN_NO_CGROUP");
  if (options.use_cgroup && !(no_cgroup && std::string(no_cgroup) == "1")) {
    std::string why;
    cgroup_dir_ = create_cgroup(fmt::format("gpurun_{}_{}", ::getpid(), g_reaper_count++), &why);
    if (cgroup_dir_.empty()) GPURUN_LOG_DEBUG("reaper", "no cgroup for the workers: {}", why);
  }
  if (!cgroup_dir_.empty()) procs_path_ = cgroup_dir_ + "/cgroup.procs";
  // The OOM killer's count: the v2 cgroup's memory.events when the memory controller is on v2;
  // on a hybrid v1/v2 host (memory on v1) a v1 memory cgroup beside it, for that alone.
  const bool v2_memory =
      !cgroup_dir_.empty() && ::access((cgroup_dir_ + "/memory.events").c_str(), R_OK) == 0;
  if (!v2_memory && options.use_cgroup && !(no_cgroup && std::string(no_cgroup) == "1")) {
    std::string why;
    memcg_dir_ =
        create_memory_cgroup_v1(fmt::format("gpurun_{}_{}", ::getpid(), g_reaper_count++), &why);
    if (memcg_dir_.empty()) {
      GPURUN_LOG_DEBUG("reaper", "no memory cgroup (OOM kills are not told apart): {}", why);
    } else {
      memcg_procs_ = memcg_dir_ + "/cgroup.procs";
    }
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return;  // no watchdog: layers 1 and 2 still hold
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[1]);
    watchdog_main(fds[0], cgroup_dir_, memcg_dir_, options);
  }
  ::close(fds[0]);
  if (pid < 0) {
    ::close(fds[1]);
    return;
  }
  watchdog_ = pid;
  watchdog_fd_ = fds[1];
}

Reaper::~Reaper() {
  kill_descendants();
  if (watchdog_fd_ >= 0) {
    [[maybe_unused]] ssize_t n = ::write(watchdog_fd_, "q\n", 2);
    ::close(watchdog_fd_);
  }
  if (watchdog_ > 0) {
    int st = 0;
    for (int i = 0; i < 1000 && ::waitpid(watchdog_, &st, WNOHANG) == 0; ++i) ::usleep(1000);
  }
  remove_cgroup(cgroup_dir_);
  remove_memcg(memcg_dir_);
}

void Reaper::adopt(pid_t pid) {
  if (!procs_path_.empty() && !write_file(procs_path_, std::to_string(pid)) && errno != ESRCH) {
    GPURUN_LOG_WARN("reaper",
                    "cannot move worker {} into {} ({}); falling back to process groups and "
                    "sessions",
                    pid, cgroup_dir_, std::strerror(errno));
    procs_path_.clear();
  }
  if (!memcg_procs_.empty() && !write_file(memcg_procs_, std::to_string(pid)) && errno != ESRCH) {
    memcg_procs_.clear();  // only the OOM count is lost
  }
  if (watchdog_fd_ >= 0) {
    const std::string msg = fmt::format("p {}\n", pid);
    [[maybe_unused]] ssize_t n = ::write(watchdog_fd_, msg.data(), msg.size());
  }
}

void Reaper::kill_descendants() {
  const pid_t self = ::getpid();
  if (!cgroup_dir_.empty()) {
    // The cgroup holds every descendant (joined before exec; what they start inherits it), so
    // no /proc scan: that walk costs O(processes on the host) per teardown, quadratic when
    // hundreds of agents share a host. Reaps what dies (the workers' statuses are not wanted
    // any more: this runs at the end). Bounded: a process stuck in D state falls through to
    // the scan after ~1 s.
    for (int round = 0; round < 500; ++round) {
      const int listed = kill_cgroup(cgroup_dir_);
      while (::waitpid(-1, nullptr, WNOHANG) > 0) {
      }
      if (listed == 0 && !cgroup_populated(cgroup_dir_)) return;
      ::usleep(2000);
    }
  }
  for (int round = 0; round < 200; ++round) {
    int found = kill_cgroup(cgroup_dir_);
    const auto procs = list_processes();
    std::map<pid_t, pid_t> parent;
    for (const auto& p : procs) parent[p.pid] = p.ppid;
    for (const auto& p : procs) {
      if (p.pid == self || p.pid == watchdog_ || !live(p)) continue;
      pid_t up = p.ppid;
      for (int depth = 0; depth < 256 && up > 1 && up != self; ++depth) {
        auto it = parent.find(up);
        up = it == parent.end() ? 0 : it->second;
      }
      if (up != self) continue;
      ::kill(p.pid, SIGKILL);
      ++found;
      if (p.ppid == self) ::waitpid(p.pid, nullptr, WNOHANG);
    }
    if (found == 0) return;
    ::usleep(2000);
  }
}

long oom_kill_count(const std::string& memory_events) {
  std::istringstream in(memory_events);
  for (std::string key; in >> key;) {
    long v = 0;
    in >> v;
    if (key == "oom_kill") return v;
  }
  return 0;
}

long Reaper::oom_kills() const {
  if (!memcg_dir_.empty()) return oom_kill_count(read_file(memcg_dir_ + "/memory.oom_control"));
  return cgroup_dir_.empty() ? 0 : oom_kill_count(read_file(cgroup_dir_ + "/memory.events"));
}

std::string Reaper::oom_source() const {
  return memcg_dir_.empty() ? cgroup_dir_ + "/memory.events" : memcg_dir_ + "/memory.oom_control";
}

std::string Reaper::mechanism() const {
  if (!cgroup_dir_.empty()) return "cgroup v2 " + cgroup_dir_;
  return "process groups, sessions and the run's environment marker (no writable cgroup v2)";
}

}  // namespace gpurun::launcher
