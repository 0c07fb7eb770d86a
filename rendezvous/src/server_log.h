// How the store server writes about its peers: a rate limit for the log lines a misbehaving peer
// can trigger at will, and bounded, printable renderings of keys, sizes and addresses.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace gpurun::rendezvous::server {

// At most kBurst lines per kWindow, then one summary line per window.
class LogLimiter {
 public:
  static constexpr int kBurst = 10;
  static constexpr auto kWindow = std::chrono::seconds(5);

  bool allow();
  // Ends the window when it is over: one summary line if anything was suppressed.
  void roll();

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  int lines_ = 0;
  std::uint64_t suppressed_ = 0;
};

// "64 MiB" for whole MiB, else "N bytes".
std::string mib(std::uint64_t bytes);
// Keys are arbitrary bytes: a bounded, printable rendering (\xNN escapes).
std::string printable(std::string_view s, std::size_t max = 64);
// "127.0.0.1:41234" / "[::1]:41234".
std::string endpoint_string(const boost::asio::ip::tcp::endpoint& ep);

}  // namespace gpurun::rendezvous::server
