// Tests only: a real etcd (Debian's etcd-server) as this test's own child process on 127.0.0.1,
// free ports, a temporary data dir; ready when its log says it serves clients; killed (and its
// data dir removed) by the destructor. GPURUN_ETCD_BINARY is the configure-time path of etcd.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

namespace gpurun::rendezvous::testing {

inline int free_tcp_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("free_tcp_port: bind failed");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

class EtcdProcess {
 public:
  EtcdProcess() {
    char tmpl[] = "/tmp/gpurun-etcd-test-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    client_port_ = free_tcp_port();
    const int peer_port = free_tcp_port();
    const std::string client = "http://127.0.0.1:" + std::to_string(client_port_);
    const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port);
    const std::string log = dir_ + "/etcd.log";
    const std::string data = dir_ + "/data";
    const std::string cluster = "m0=" + peer;
    // Everything the child needs is built before fork (the test process has threads).
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error("cannot create " + log);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives a test that crashed
      ::execl(GPURUN_ETCD_BINARY, "etcd", "--name", "m0", "--data-dir", data.c_str(),
              "--listen-client-urls", client.c_str(), "--advertise-client-urls", client.c_str(),
              "--listen-peer-urls", peer.c_str(), "--initial-advertise-peer-urls", peer.c_str(),
              "--initial-cluster", cluster.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fd);
    // Ready when etcd logs that it serves clients (bounded: a broken etcd fails the test).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (;;) {
      std::ifstream in(log);
      std::stringstream ss;
      ss << in.rdbuf();
      if (ss.str().find("ready to serve client requests") != std::string::npos) break;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("etcd exited at start:\n" + ss.str());
      }
      if (std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error("etcd not ready after 60 s:\n" + ss.str());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ~EtcdProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;

  std::string endpoint() const { return "127.0.0.1:" + std::to_string(client_port_); }
  int client_port() const { return client_port_; }

 private:
  std::string dir_;
  int client_port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace gpurun::rendezvous::testing
