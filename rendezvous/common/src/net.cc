#include "gpurun/common/net.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "gpurun/common/unique_fd.h"

namespace gpurun {
namespace {

std::string address_text(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (sa->sa_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, buf, sizeof(buf));
  } else if (sa->sa_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, buf, sizeof(buf));
  }
  return buf;
}

}  // namespace

std::vector<NetInterface> list_interfaces() {
  std::vector<NetInterface> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* ifa = list; ifa != nullptr; ifa = ifa->ifa_next) {
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const NetInterface& n) { return n.name == ifa->ifa_name; });
    if (it == out.end()) {
      out.push_back({ifa->ifa_name, false, false, {}});
      it = out.end() - 1;
    }
    it->up = it->up || (ifa->ifa_flags & IFF_UP);
    it->loopback = it->loopback || (ifa->ifa_flags & IFF_LOOPBACK);
    if (ifa->ifa_addr &&
        (ifa->ifa_addr->sa_family == AF_INET || ifa->ifa_addr->sa_family == AF_INET6)) {
      it->addresses.push_back(address_text(ifa->ifa_addr));
    }
  }
  ::freeifaddrs(list);
  return out;
}

std::optional<std::string> source_address_for(const std::string& host, std::string* why,
                                              std::uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) {
    if (why) *why = fmt::format("cannot resolve '{}': {}", host, ::gai_strerror(rc));
    return std::nullopt;
  }
  std::optional<std::string> answer;
  std::string last_error = "no address";
  for (addrinfo* ai = res; ai && !answer; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) continue;
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {  // picks a route; sends nothing
      last_error =
          fmt::format("no route to {} ({})", address_text(ai->ai_addr), std::strerror(errno));
      continue;
    }
    sockaddr_storage local{};
    socklen_t len = sizeof(local);
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &len) == 0) {
      answer = address_text(reinterpret_cast<sockaddr*>(&local));
    }
  }
  ::freeaddrinfo(res);
  if (!answer && why) *why = last_error;
  return answer;
}

bool is_loopback_name(const std::string& h) {
  return h.empty() || h == "localhost" || h.rfind("127.", 0) == 0 || h == "::1";
}

std::vector<std::string> resolve_addresses(const std::string& host, std::string* why) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::vector<std::string> out;
  const std::string h = !host.empty() && host.front() == '[' && host.back() == ']'
                            ? host.substr(1, host.size() - 2)
                            : host;
  if (int rc = ::getaddrinfo(h.c_str(), nullptr, &hints, &res); rc != 0) {
    if (why) *why = ::gai_strerror(rc);
    return out;
  }
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    std::string a = address_text(ai->ai_addr);
    if (!a.empty() && std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
  }
  ::freeaddrinfo(res);
  if (out.empty() && why) *why = "no address";
  return out;
}

std::string bind_address_for(const std::string& host) {
  if (host == "localhost" || host.empty()) return "127.0.0.1";
  if (is_loopback_name(host)) return host;
  const auto addrs = resolve_addresses(host, nullptr);
  std::vector<std::string> mine;
  for (const auto& i : list_interfaces()) {
    if (i.loopback) continue;
    mine.insert(mine.end(), i.addresses.begin(), i.addresses.end());
  }
  for (const auto& a : addrs) {
    if (std::find(mine.begin(), mine.end(), a) != mine.end()) return a;
  }
  const bool v6 = addrs.empty() ? host.find(':') != std::string::npos
                                : addrs.front().find(':') != std::string::npos;
  return v6 ? "::" : "0.0.0.0";
}

}  // namespace gpurun
