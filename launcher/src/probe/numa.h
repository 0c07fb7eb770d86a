// --numa-binding (torchrun 2.8+): each GPU worker's CPU affinity is set, before it execs, to CPUs
// near its GPU. The GPU's NUMA node comes from sysfs (<sysfs>/bus/pci/devices/<bus id>/numa_node,
// as torch.numa reads it), the CPU topology from <sysfs>/devices/system/{cpu,node}. Reading and
// planning are separate: plan_numa_binding() is pure and unit-tested on made-up topologies;
// read_cpu_topology() is tested on a fake sysfs tree. GPURUN_SYSFS_ROOT (tests only) moves "/sys".
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cli/config.h"

namespace gpurun::launcher {

// "node" | "socket" | "exclusive" | "core-complex".
std::string to_string(NumaBinding mode);
std::optional<NumaBinding> parse_numa_binding(const std::string& text);

// One online logical CPU.
struct CpuInfo {
  int cpu = 0;
  int node = 0;     // NUMA node (0 when the kernel exposes no nodes)
  int package = 0;  // physical socket
  int core = 0;     // physical core id within the package
  int l3 = 0;       // first CPU of the L3 cache domain it belongs to (its "core complex")
};

struct CpuTopology {
  std::vector<CpuInfo> cpus;  // ascending cpu number
  int nodes = 1;              // NUMA nodes with CPUs
};

// "0-3,8,10-11" -> {0,1,2,3,8,10,11}; throws std::invalid_argument on anything else.
std::vector<int> parse_cpu_list(const std::string& text);
// The inverse, compact: {0,1,2,3,8} -> "0-3,8".
std::string format_cpu_list(const std::vector<int>& cpus);

// The online CPUs under `sysfs_root` ("/sys"). Missing per-CPU files fall back to one socket, one
// core per CPU, one L3 per socket; a kernel without NUMA nodes gives every CPU node 0. Throws
// ConfigError when the online CPU list itself cannot be read.
CpuTopology read_cpu_topology(const std::string& sysfs_root);

// The NUMA node of the PCI device `bus_id` ("0000:3b:00.0"), nullopt when unknown (no file, -1).
std::optional<int> read_pci_numa_node(const std::string& sysfs_root, const std::string& bus_id);

// "00000000:3B:00.0" (NVML's form) or "0000:3b:00.0" -> "0000:3b:00.0" (sysfs's form).
std::string sysfs_pci_bus_id(const std::string& bus_id);

struct NumaPlan {
  std::vector<std::vector<int>> cpus;  // per worker; empty = not bound
  std::vector<std::string> notes;      // warnings for the console
};

// CPU sets for workers whose GPUs sit on NUMA nodes `worker_nodes` (nullopt: no GPU or unknown):
//   node         every CPU of the GPU's node
//   socket       every CPU of the socket(s) holding that node
//   exclusive    the node's physical cores split into disjoint contiguous shares, one per worker
//                on that node (all hyperthreads of a core go together); ConfigError when the node
//                has fewer cores than workers
//   core-complex one L3 domain of the node per worker (round-robin when there are more workers
//                than domains)
// `ranks` names the workers (global ranks) in notes. Pure.
NumaPlan plan_numa_binding(NumaBinding mode, const std::vector<std::optional<int>>& worker_nodes,
                           const std::vector<int>& ranks, const CpuTopology& topo);

// Sets each worker's `cpus` for cfg.numa_binding (nothing when unset): reads the topology under
// $GPURUN_SYSFS_ROOT or /sys, finds each GPU's node (GpuInfo::numa_node, else sysfs by PCI bus
// id; on a one-node machine that node), plans, and appends warnings to `notes`. Throws
// ConfigError (exclusive with too few cores, unreadable sysfs).
void apply_numa_binding(const LaunchConfig& cfg, const GpuInventory& gpus, const EnvMap& env,
                        std::vector<WorkerSpec>& workers, std::vector<std::string>* notes);

}  // namespace gpurun::launcher
