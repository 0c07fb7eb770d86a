// The two POSIX I/O loops everyone needs, written once: retry a call interrupted by a signal, and
// write a whole buffer (partial writes, EINTR, and a non-blocking fd that is full). Used by the
// launcher (console, tee files, stderr), the SDK (console helpers), logging and the examples.
#pragma once

#include <cerrno>
#include <cstddef>
#include <string_view>

namespace gpurun {

// Retries a syscall-like callable while it fails with EINTR. Returns the last result.
template <typename F>
auto retry_eintr(F&& f) -> decltype(f()) {
  decltype(f()) r;
  do {
    r = f();
  } while (r == -1 && errno == EINTR);
  return r;
}

// Writes all of `data` to `fd`: retries EINTR and short writes, waits (poll) while a non-blocking
// fd is full. Returns false on any other error (errno says which: EPIPE when the reader is gone)
// or when write() returns 0.
bool write_all(int fd, const void* data, std::size_t size);
inline bool write_all(int fd, std::string_view text) {
  return write_all(fd, text.data(), text.size());
}

}  // namespace gpurun
