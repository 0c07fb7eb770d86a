// rdzv_bench's etcd: one real etcd member (Debian's etcd-server) on 127.0.0.1, free ports, a
// temporary data dir; ready when its log says it serves clients (bounded); killed and removed by
// the destructor.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

#include "../common/bench_common.h"

namespace rdzv_bench {

class EtcdProc {
 public:
  explicit EtcdProc(const std::string& exe) {
    char tmpl[] = "/tmp/rdzv_bench_etcd_XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    port_ = gpurun_bench::free_port();
    const std::string client = "http://127.0.0.1:" + std::to_string(port_);
    const std::string peer = "http://127.0.0.1:" + std::to_string(gpurun_bench::free_port());
    const std::string log = dir_ + "/etcd.log", data = dir_ + "/data", cluster = "b0=" + peer;
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives a test that crashed
      ::execl(exe.c_str(), "etcd", "--name", "b0", "--data-dir", data.c_str(),
              "--listen-client-urls", client.c_str(), "--advertise-client-urls", client.c_str(),
              "--listen-peer-urls", peer.c_str(), "--initial-advertise-peer-urls", peer.c_str(),
              "--initial-cluster", cluster.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fd);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (;;) {
      std::ifstream in(log);
      std::stringstream ss;
      ss << in.rdbuf();
      if (ss.str().find("ready to serve client requests") != std::string::npos) return;
      if (std::chrono::steady_clock::now() > deadline || ::waitpid(pid_, nullptr, WNOHANG) != 0) {
        throw std::runtime_error("etcd did not start:\n" + ss.str());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ~EtcdProc() {
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  EtcdProc(const EtcdProc&) = delete;
  EtcdProc& operator=(const EtcdProc&) = delete;

  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace rdzv_bench
