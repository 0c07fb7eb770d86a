// `gpurun info` / `gpurun --info`: what a distributed job would see on this machine: GPUs and how
// they were found, driver/CUDA/NCCL versions (optional libraries loaded with dlopen), network
// interfaces and which one reaches MASTER_ADDR, whether --master-port is free and who holds it,
// and the environment variables that steer NCCL/Gloo/CUDA/torchrun.
#include "info/info.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <map>
#include <sstream>

#include "gpurun/common/unique_fd.h"
#include "probe/dl_handle.h"

namespace gpurun::launcher {

namespace {

std::string cuda_style_version(int v) {  // 12040 -> "12.4"
  return fmt::format("{}.{}", v / 1000, (v % 1000) / 10);
}

}  // namespace

std::string port_status(int port) {
  // Bind as the store will (SO_REUSEADDR, all interfaces): "in use" means someone listens.
  for (int family : {AF_INET6, AF_INET}) {
    UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) continue;  // no IPv6 on this host: try IPv4
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int rc;
    if (family == AF_INET6) {
      sockaddr_in6 a{};
      a.sin6_family = AF_INET6;
      a.sin6_addr = in6addr_any;
      a.sin6_port = htons(static_cast<std::uint16_t>(port));
      rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a));
    } else {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_ANY);
      a.sin_port = htons(static_cast<std::uint16_t>(port));
      rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a));
    }
    if (rc == 0) return "free";
    int err = errno;
    if (err == EADDRINUSE) {
      std::string who = describe_port_holder(port);
      return who.empty() ? "in use (holder not visible: another user's process or another "
                           "network namespace)"
                         : "in use by " + who;
    }
    if (err == EACCES) return "not bindable (permission denied: ports below 1024 need root)";
    if (family == AF_INET) return fmt::format("not bindable ({})", std::strerror(err));
  }
  return "unknown (cannot create a socket)";
}

std::vector<std::string> relevant_env(const EnvMap& env) {
  static const char* kPrefixes[] = {"NCCL_",         "CUDA_",  "GLOO_",   "MASTER_", "PET_",
                                    "TORCHELASTIC_", "TORCH_", "GPURUN_", "ROCR_",   "HIP_",
                                    "NVIDIA_",       "UCX_",   "FI_"};
  static const char* kExact[] = {"OMP_NUM_THREADS",  "WORLD_SIZE",  "RANK",   "LOCAL_RANK",
                                 "LOCAL_WORLD_SIZE", "PYTHON_EXEC", "PYTHON", "LD_LIBRARY_PATH",
                                 "LOGLEVEL",         "USE_LIBUV"};
  std::vector<std::string> out;
  for (const auto& [k, v] : env) {
    bool match =
        std::any_of(std::begin(kExact), std::end(kExact), [&](const char* e) { return k == e; }) ||
        std::any_of(std::begin(kPrefixes), std::end(kPrefixes),
                    [&](const char* p) { return k.rfind(p, 0) == 0; });
    if (match) out.push_back(k + "=" + v);
  }
  return out;
}

std::string cuda_runtime_version() {
  std::string why;
  auto lib = DlHandle::open(
      {"libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"}, &why);
  if (!lib) return fmt::format("not found ({})", why);
  auto fn = lib.symbol<int (*)(int*)>("cudaRuntimeGetVersion");
  int v = 0;
  if (!fn || fn(&v) != 0)
    return fmt::format("unknown ({} has no usable cudaRuntimeGetVersion)", lib.name());
  return fmt::format("{} ({})", cuda_style_version(v), lib.name());
}

std::string cuda_driver_version() {
  std::string why;
  auto lib = DlHandle::open({"libcuda.so.1"}, &why);
  if (!lib) return fmt::format("not found ({})", why);
  auto fn = lib.symbol<int (*)(int*)>("cuDriverGetVersion");
  int v = 0;
  if (!fn || fn(&v) != 0)
    return fmt::format("unknown ({} has no usable cuDriverGetVersion)", lib.name());
  return fmt::format("{} ({})", cuda_style_version(v), lib.name());
}

std::string nccl_version() {
  std::string why;
  auto lib = DlHandle::open({"libnccl.so.2", "libnccl.so"}, &why);
  if (!lib) return fmt::format("not found ({})", why);
  auto fn = lib.symbol<int (*)(int*)>("ncclGetVersion");
  int v = 0;
  if (!fn || fn(&v) != 0)
    return fmt::format("unknown ({} has no usable ncclGetVersion)", lib.name());
  // NCCL_VERSION_CODE: major*10000 + minor*100 + patch since 2.9, major*1000 + ... before.
  std::string text = v >= 20900 ? fmt::format("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100)
                                : fmt::format("{}.{}.{}", v / 1000, (v % 1000) / 100, v % 100);
  return fmt::format("{} ({})", text, lib.name());
}

std::string info_text(const LaunchConfig& cfg, const EnvMap& env, GpuProbe& probe) {
  std::ostringstream out;
  out << fmt::format("gpurun {} info\n", GPURUN_VERSION);

  GpuInventory inv = probe.probe(env);
  out << fmt::format("\nGPUs: {} visible (found via {})\n", inv.gpus.size(), inv.source);
  for (const auto& g : inv.gpus) {
    out << fmt::format("  [{}] {:<28} id {:<8} {}\n", g.index, g.name.empty() ? g.vendor : g.name,
                       g.id, g.uuid);
  }
  for (const auto& n : inv.notes) out << "  note: " << n << "\n";
  auto cvd = env_get(env, "CUDA_VISIBLE_DEVICES");
  out << fmt::format("  CUDA_VISIBLE_DEVICES: {}\n", cvd ? "'" + *cvd + "'" : "unset (all GPUs)");

  out << "\nversions:\n";
  out << fmt::format("  {:<16} {}\n", "NVIDIA driver",
                     inv.driver_version.empty() ? "not found" : inv.driver_version);
  out << fmt::format("  {:<16} {}\n", "CUDA driver API", cuda_driver_version());
  out << fmt::format("  {:<16} {}\n", "CUDA runtime", cuda_runtime_version());
  out << fmt::format("  {:<16} {}\n", "NCCL", nccl_version());

  out << "\nnetwork interfaces:\n";
  auto ifaces = list_interfaces();
  for (const auto& i : ifaces) {
    std::string addrs;
    for (const auto& a : i.addresses) addrs += (addrs.empty() ? "" : " ") + a;
    out << fmt::format("  {:<12} {:<5} {}\n", i.name, i.loopback ? "loop" : (i.up ? "up" : "down"),
                       addrs.empty() ? "(no address)" : addrs);
  }
  std::string why;
  auto src = source_address_for(cfg.master_addr, &why);
  if (src) {
    std::string via = "an unknown interface";
    for (const auto& i : ifaces) {
      if (std::find(i.addresses.begin(), i.addresses.end(), *src) != i.addresses.end()) {
        via = i.name;
        break;
      }
    }
    out << fmt::format("  MASTER_ADDR {} is reached via {} ({})\n", cfg.master_addr, via, *src);
  } else {
    out << fmt::format("  MASTER_ADDR {} is not reachable: {}\n", cfg.master_addr, why);
  }
  for (const char* var : {"NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "GPURUN_SOCKET_IFNAME"}) {
    if (auto v = env_get(env, var)) out << fmt::format("  {}={} is set\n", var, *v);
  }

  out << "\nstore port:\n";
  if (cfg.master_port && *cfg.master_port > 0) {
    out << fmt::format("  --master-port {}: {}\n", *cfg.master_port, port_status(*cfg.master_port));
  } else {
    out << "  --master-port not given: gpurun binds a free port at start (no race)\n";
  }

  out << "\nenvironment (NCCL_*, CUDA_*, GLOO_*, MASTER_*, PET_*, TORCH*, GPURUN_*, ...):\n";
  auto vars = relevant_env(env);
  if (vars.empty()) out << "  (none set)\n";
  for (const auto& v : vars) out << "  " << v << "\n";
  return out.str();
}

int print_info(const LaunchConfig& cfg, const EnvMap& env, GpuProbe& probe) {
  std::cout << info_text(cfg, env, probe) << std::flush;
  return 0;
}

}  // namespace gpurun::launcher
