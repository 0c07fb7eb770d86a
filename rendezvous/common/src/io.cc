#include "gpurun/common/io.h"

#include <poll.h>
#include <unistd.h>

namespace gpurun {

bool write_all(int fd, const void* data, std::size_t size) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n > 0) {
      p += n;
      size -= static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd pfd{fd, POLLOUT, 0};
      retry_eintr([&] { return ::poll(&pfd, 1, -1); });
      continue;
    }
    return false;
  }
  return true;
}

}  // namespace gpurun
