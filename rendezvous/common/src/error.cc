#include "gpurun/common/error.h"

#include <cerrno>

namespace gpurun {

void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

void throw_errno(const std::string& what) { throw_errno(errno, what); }

}  // namespace gpurun
