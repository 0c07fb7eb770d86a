#include "run/port_holder.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>

#include "cli/config.h"
#include "gpurun/common/unique_fd.h"

using namespace gpurun;
using namespace gpurun::launcher;

namespace {

// A TCP socket bound to an OS-chosen loopback port; listening only when asked.
struct BoundSocket {
  UniqueFd fd;
  int port = 0;
  BoundSocket(int family, bool listen_on) {
    fd = UniqueFd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd.get() >= 0);
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      a->sin_family = AF_INET;
      a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      len = sizeof(sockaddr_in);
    } else {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      a->sin6_family = AF_INET6;
      a->sin6_addr = in6addr_loopback;
      len = sizeof(sockaddr_in6);
    }
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
    if (listen_on) REQUIRE(::listen(fd.get(), 4) == 0);
    socklen_t got = sizeof(ss);
    REQUIRE(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &got) == 0);
    port = ntohs(family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                   : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  }
};

std::string my_cmdline_start() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string argv0;
  std::getline(in, argv0, '\0');
  return argv0;
}

}  // namespace

TEST_CASE("listening_inodes parses /proc/net/tcp", "[port_holder]") {
  const std::string table =
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
      "timeout inode\n"
      "   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        "
      "0 4242 1 0000000000000000 100 0 0 10 0\n"
      "   1: 0100007F:1F90 0100007F:A2B4 01 00000000:00000000 00:00000000 00000000  1000        "
      "0 4343 1 0000000000000000 20 4 30 10 -1\n"
      "   2: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        "
      "0 4444 1 0000000000000000 100 0 0 10 0\n";
  CHECK(listening_inodes(table, 8080) == std::vector<unsigned long>{4242});  // ESTABLISHED skipped
  CHECK(listening_inodes(table, 80) == std::vector<unsigned long>{4444});
  CHECK(listening_inodes(table, 81).empty());
  CHECK(listening_inodes("", 80).empty());
  CHECK(listening_inodes("header\ngarbage line\n", 80).empty());
}

TEST_CASE("describe_port_holder names this process for a port it listens on", "[port_holder]") {
  for (int family : {AF_INET, AF_INET6}) {
    INFO("family " << family);
    BoundSocket s(family, true);
    std::string who = describe_port_holder(s.port);
    CHECK_THAT(who, Catch::StartsWith(fmt::format("pid {} (", ::getpid())));
    CHECK_THAT(who, Catch::Contains(my_cmdline_start()));
    CHECK(who.back() == ')');
  }
}

TEST_CASE("describe_port_holder is empty when nobody listens", "[port_holder]") {
  BoundSocket bound_only(AF_INET, false);  // bound but not listening: not a holder
  CHECK(describe_port_holder(bound_only.port) == "");
  CHECK(describe_port_holder_in(bound_only.port, "/nonexistent") == "");
}
