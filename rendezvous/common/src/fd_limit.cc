#include "gpurun/common/fd_limit.h"

#include <cerrno>
#include <cstring>
#include <mutex>

namespace gpurun {
namespace {

std::mutex g_mu;
std::optional<rlimit> g_original;

}  // namespace

FdLimitRaise raise_fd_limit() {
  FdLimitRaise r;
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur >= lim.rlim_max) return r;
  std::lock_guard<std::mutex> lock(g_mu);
  const rlimit before = lim;
  r.from = lim.rlim_cur;
  r.to = lim.rlim_max;
  lim.rlim_cur = lim.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) {
    r.error = std::strerror(errno);
    return r;
  }
  if (!g_original) g_original = before;
  r.raised = true;
  return r;
}

std::optional<rlimit> original_fd_limit() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_original;
}

}  // namespace gpurun
