// Who listens on a TCP port, from /proc (for "port busy" diagnostics). Internals exposed for tests.
#pragma once

#include <string>
#include <vector>

namespace gpurun::launcher {

// Socket inodes in LISTEN state on `port` found in a /proc/net/tcp-format table.
std::vector<unsigned long> listening_inodes(const std::string& proc_net_tcp_text, int port);

// describe_port_holder() (config.h) with a different /proc root, for tests.
std::string describe_port_holder_in(int port, const std::string& proc_root);

}  // namespace gpurun::launcher
