#include "server_log.h"

#include <fmt/format.h>

#include "gpurun/common/log.h"

namespace gpurun::rendezvous::server {

bool LogLimiter::allow() {
  roll();
  if (lines_ < kBurst) {
    ++lines_;
    return true;
  }
  ++suppressed_;
  return false;
}

void LogLimiter::roll() {
  auto now = std::chrono::steady_clock::now();
  if (now - start_ < kWindow) return;
  if (suppressed_ > 0) {
    GPURUN_LOG_WARN(
        "store", "{} more lines about misbehaving connections suppressed in the last {}s",
        suppressed_, std::chrono::duration_cast<std::chrono::seconds>(now - start_).count());
  }
  start_ = now;
  lines_ = 0;
  suppressed_ = 0;
}

std::string mib(std::uint64_t bytes) {
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) return fmt::format("{} MiB", bytes >> 20);
  return fmt::format("{} bytes", bytes);
}

std::string printable(std::string_view s, std::size_t max) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  if (s.size() > max) out += fmt::format("...({} bytes)", s.size());
  return out;
}

std::string endpoint_string(const boost::asio::ip::tcp::endpoint& ep) {
  auto addr = ep.address();
  if (addr.is_v6()) return fmt::format("[{}]:{}", addr.to_string(), ep.port());
  return fmt::format("{}:{}", addr.to_string(), ep.port());
}

}  // namespace gpurun::rendezvous::server
