// Helpers the benchmark programs share: a free loopback port, and the torchrun command line they
// compare gpurun with.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

namespace gpurun_bench {

// A loopback port nobody listens on right now, for launchers that must be told one (torchrun's
// --master_port, torch's TCPStore). Bound and closed, so it can race; fine for a benchmark.
inline int free_port(int fallback = 29500) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  const bool ok = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  if (fd >= 0) ::close(fd);
  return ok ? ntohs(a.sin_port) : fallback;
}

// `python -m torch.distributed.run --nproc_per_node=N --master_port=<free> -r 1 -t 1 --log_dir
// DIR`: torchrun 1.13 on Python 3.11 crashes on its default -r 0 -t 0 (Std.from_str("0") returns
// None under 3.11's IntFlag, pytorch#92319), so stdout goes to the log files and is tee'd back.
inline std::vector<std::string> torchrun_command(const std::string& python, int nproc,
                                                 const std::string& log_dir) {
  return {python,
          "-m",
          "torch.distributed.run",
          "--nproc_per_node=" + std::to_string(nproc),
          "--master_port=" + std::to_string(free_port()),
          "-r",
          "1",
          "-t",
          "1",
          "--log_dir",
          log_dir};
}

// Median, 90th percentile and minimum of a sample (the benches' summary of repeated runs).
struct Stats {
  double median = 0, p90 = 0, min = 0;
  std::size_t n = 0;
};

inline Stats stats(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.n = v.size();
  s.min = v.front();
  s.median = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  s.p90 = v[std::min(v.size() - 1, static_cast<std::size_t>(0.9 * static_cast<double>(v.size())))];
  return s;
}

}  // namespace gpurun_bench
