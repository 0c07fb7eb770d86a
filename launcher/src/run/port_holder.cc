// describe_port_holder(): /proc/net/tcp{,6} -> LISTEN socket inode on the port -> the process
// whose /proc/<pid>/fd has "socket:[inode]" -> "pid 4711 (python3 train.py --foo)". Best effort:
// processes of other users are invisible without privileges, and then the answer is "".
#include "run/port_holder.h"

#include <dirent.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <fstream>
#include <sstream>

#include "cli/config.h"

namespace gpurun::launcher {

namespace {

constexpr const char* kTcpListen = "0A";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool all_digits(const char* s) {
  if (!*s) return false;
  for (; *s; ++s) {
    if (*s < '0' || *s > '9') return false;
  }
  return true;
}

std::string cmdline_of(const std::string& proc_root, const std::string& pid) {
  std::string raw = read_file(fmt::format("{}/{}/cmdline", proc_root, pid));
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();
  for (auto& c : raw) {
    if (c == '\0') c = ' ';
  }
  if (raw.empty()) {  // kernel thread or zombie: fall back to comm
    raw = read_file(fmt::format("{}/{}/comm", proc_root, pid));
    while (!raw.empty() && (raw.back() == '\n' || raw.back() == '\0')) raw.pop_back();
  }
  constexpr std::size_t kMax = 200;
  if (raw.size() > kMax) raw = raw.substr(0, kMax) + "...";
  return raw;
}

}  // namespace

std::vector<unsigned long> listening_inodes(const std::string& text, int port) {
  std::vector<unsigned long> inodes;
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    std::istringstream ls(line);
    std::string sl, local, remote, state, queues, timer, retr, uid, timeout;
    unsigned long inode = 0;
    if (!(ls >> sl >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >>
          inode)) {
      continue;
    }
    if (state != kTcpListen) continue;
    auto colon = local.rfind(':');
    if (colon == std::string::npos) continue;
    unsigned long local_port = std::strtoul(local.c_str() + colon + 1, nullptr, 16);
    if (static_cast<int>(local_port) == port && inode != 0) inodes.push_back(inode);
  }
  return inodes;
}

std::string describe_port_holder_in(int port, const std::string& proc_root) {
  std::vector<unsigned long> inodes;
  for (const char* table : {"net/tcp", "net/tcp6"}) {
    auto found = listening_inodes(read_file(fmt::format("{}/{}", proc_root, table)), port);
    inodes.insert(inodes.end(), found.begin(), found.end());
  }
  if (inodes.empty()) return "";
  std::vector<std::string> targets;
  for (auto inode : inodes) targets.push_back(fmt::format("socket:[{}]", inode));

  DIR* proc = ::opendir(proc_root.c_str());
  if (!proc) return "";
  std::string answer;
  while (answer.empty()) {
    dirent* e = ::readdir(proc);
    if (!e) break;
    if (!all_digits(e->d_name)) continue;
    std::string pid = e->d_name;
    std::string fd_dir = fmt::format("{}/{}/fd", proc_root, pid);
    DIR* fds = ::opendir(fd_dir.c_str());
    if (!fds) continue;  // another user's process, or it exited
    while (dirent* f = ::readdir(fds)) {
      if (!all_digits(f->d_name)) continue;
      char buf[PATH_MAX];
      std::string link = fd_dir + "/" + f->d_name;
      ssize_t n = ::readlink(link.c_str(), buf, sizeof(buf) - 1);
      if (n <= 0) continue;
      std::string target(buf, static_cast<std::size_t>(n));
      if (std::find(targets.begin(), targets.end(), target) != targets.end()) {
        answer = fmt::format("pid {} ({})", pid, cmdline_of(proc_root, pid));
        break;
      }
    }
    ::closedir(fds);
  }
  ::closedir(proc);
  return answer;
}

std::string describe_port_holder(int port) { return describe_port_holder_in(port, "/proc"); }

}  // namespace gpurun::launcher
