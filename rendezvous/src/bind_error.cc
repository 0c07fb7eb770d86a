#include "gpurun/rendezvous/bind_error.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cctype>

#include "gpurun/common/io.h"

namespace gpurun::rendezvous {

std::string bind_failure_message(const BindError& e, const BindFixes& fixes,
                                 const std::string& holder) {
  std::string why = e.code() ? e.code().message() : std::string(e.what());
  if (!why.empty()) why[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(why[0])));
  const std::string addr = fmt::format("{}:{}", e.host(), e.port());  // as the store says it
  const std::string* fix = &fixes.other;
  if (e.code() == std::errc::address_in_use) {
    fix = &fixes.in_use;
    if (!holder.empty()) why += " by " + holder;
  } else if (e.code() == std::errc::address_not_available) {
    fix = &fixes.not_local;
  } else if (e.code() == std::errc::permission_denied) {
    fix = &fixes.denied;
  }
  if (fix->empty()) fix = &fixes.other;
  return fmt::format("cannot bind store on {} ({}){}{}", addr, why, fix->empty() ? "" : "; ", *fix);
}

int report_bind_failure(const BindError& e, const BindFixes& fixes, const std::string& holder) {
  write_all(STDERR_FILENO, "gpurun: error: " + bind_failure_message(e, fixes, holder) + "\n");
  return static_cast<int>(ExitCode::kRendezvousFailed);
}

}  // namespace gpurun::rendezvous
