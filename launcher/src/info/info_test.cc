#include "info/info.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "gpurun/common/unique_fd.h"
#include "probe/gpu_probe.h"

using namespace gpurun;
using namespace gpurun::launcher;

namespace {

// Listens on an OS-chosen port on 127.0.0.1.
struct Listener {
  UniqueFd fd;
  int port = 0;
  explicit Listener(bool listen_on = true) {
    fd = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int one = 1;  // as the store and port_status() bind: SO_REUSEADDR
    REQUIRE(::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
    if (listen_on) REQUIRE(::listen(fd.get(), 4) == 0);
    socklen_t len = sizeof(a);
    REQUIRE(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port = ntohs(a.sin_port);
  }
};

}  // namespace

TEST_CASE("port_status names the holder of a busy port", "[info]") {
  Listener l;
  std::string s = port_status(l.port);
  CHECK_THAT(s, Catch::StartsWith(fmt::format("in use by pid {} (", ::getpid())));
}

TEST_CASE("port_status says free for a port nobody listens on", "[info]") {
  int port;
  {
    Listener bound_only(false);  // bound, not listening: SO_REUSEADDR binds still succeed
    port = bound_only.port;
    CHECK(port_status(port) == "free");
  }
}

TEST_CASE("interfaces include loopback, loopback reaches 127.0.0.1", "[info]") {
  auto ifaces = list_interfaces();
  bool has_lo = false;
  for (const auto& i : ifaces) {
    if (i.loopback) {
      has_lo = true;
      CHECK(std::find(i.addresses.begin(), i.addresses.end(), "127.0.0.1") != i.addresses.end());
    }
  }
  CHECK(has_lo);
  std::string why;
  CHECK(source_address_for("127.0.0.1", &why) == "127.0.0.1");
  CHECK_FALSE(source_address_for("no-such-host.invalid", &why));
  CHECK_THAT(why, Catch::Contains("cannot resolve 'no-such-host.invalid'"));
}

TEST_CASE("relevant_env keeps only distributed-job variables", "[info]") {
  EnvMap env{{"NCCL_DEBUG", "INFO"},        {"HOME", "/root"},
             {"PET_NNODES", "2"},           {"OMP_NUM_THREADS", "4"},
             {"CUDA_VISIBLE_DEVICES", "0"}, {"TERM", "xterm"}};
  CHECK(relevant_env(env) == std::vector<std::string>{"CUDA_VISIBLE_DEVICES=0", "NCCL_DEBUG=INFO",
                                                      "OMP_NUM_THREADS=4", "PET_NNODES=2"});
}

TEST_CASE("versions are reported or 'not found', never a crash", "[info]") {
  for (const auto& v : {cuda_runtime_version(), cuda_driver_version(), nccl_version()}) {
    INFO(v);
    bool ok = v.rfind("not found", 0) == 0 || v.rfind("unknown", 0) == 0 ||
              std::isdigit(static_cast<unsigned char>(v[0]));
    CHECK(ok);
  }
}

TEST_CASE("info_text: GPUs, versions, interfaces, port, env", "[info]") {
  Listener busy;
  LaunchConfig cfg = resolve_config({"info", "--master-port", std::to_string(busy.port)}, {});
  EnvMap env{{"NCCL_DEBUG", "WARN"}, {"CUDA_VISIBLE_DEVICES", "1,0"}, {"HOME", "/h"}};
  FakeGpuProbe probe(2);
  std::string text = info_text(cfg, env, probe);
  CHECK_THAT(text, Catch::Contains("GPUs: 2 visible (found via fake)"));
  CHECK_THAT(text, Catch::Contains("[0] Fake GPU"));
  CHECK_THAT(text, Catch::Contains("id 1        GPU-fa4e0000-0000-4000-8000-000000000001"));
  CHECK_THAT(text, Catch::Contains("CUDA_VISIBLE_DEVICES: '1,0'"));
  CHECK_THAT(text, Catch::Contains("NCCL "));
  CHECK_THAT(text, Catch::Contains("CUDA runtime"));
  CHECK_THAT(text, Catch::Contains("MASTER_ADDR 127.0.0.1 is reached via"));
  CHECK_THAT(text, Catch::Contains(
                       fmt::format("--master-port {}: in use by pid {}", busy.port, ::getpid())));
  CHECK_THAT(text, Catch::Contains("  NCCL_DEBUG=WARN\n"));
  CHECK_THAT(text, !Catch::Contains("HOME="));

  cfg = resolve_config({"info"}, {});
  FakeGpuProbe none(0);
  text = info_text(cfg, {}, none);
  CHECK_THAT(text, Catch::Contains("GPUs: 0 visible"));
  CHECK_THAT(text, Catch::Contains("binds a free port"));
  CHECK_THAT(text, Catch::Contains("(none set)"));
}
