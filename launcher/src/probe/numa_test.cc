#include "probe/numa.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "gpurun/common/error.h"

using namespace gpurun::launcher;
namespace fs = std::filesystem;

namespace {

// A made-up sysfs tree: 8 CPUs on 2 sockets, one NUMA node per socket, 2 hyperthreads per core
// (cpu c and c+2 share a core), node 0 with one L3, node 1 with two (cpus 4,6 and 5,7).
struct FakeSysfs {
  fs::path root = fs::temp_directory_path() / ("gpurun_sysfs_" + std::to_string(::getpid()));
  FakeSysfs() {
    fs::remove_all(root);
    put("devices/system/cpu/online", "0-7");
    put("devices/system/node/node0/cpulist", "0-3");
    put("devices/system/node/node1/cpulist", "4-7");
    put("devices/system/node/possible", "0-1");  // not a node directory: ignored
    for (int c = 0; c < 8; ++c) {
      const std::string cpu = "devices/system/cpu/cpu" + std::to_string(c);
      put(cpu + "/topology/physical_package_id", std::to_string(c / 4));
      put(cpu + "/topology/core_id", std::to_string(c % 2));
      put(cpu + "/cache/index0/level", "1");
      put(cpu + "/cache/index0/shared_cpu_list", std::to_string(c));
      put(cpu + "/cache/index3/level", "3");
      put(cpu + "/cache/index3/shared_cpu_list", c < 4 ? "0-3" : (c % 2 == 0 ? "4,6" : "5,7"));
    }
    put("bus/pci/devices/0000:3b:00.0/numa_node", "1");
    put("bus/pci/devices/0000:17:00.0/numa_node", "-1");
  }
  ~FakeSysfs() { fs::remove_all(root); }
  void put(const std::string& rel, const std::string& text) const {
    fs::create_directories((root / rel).parent_path());
    std::ofstream(root / rel) << text << "\n";
  }
};

using Cpus = std::vector<int>;

}  // namespace

TEST_CASE("CPU lists parse and print like the kernel's", "[numa]") {
  CHECK(parse_cpu_list("0-3,8,10-11\n") == Cpus{0, 1, 2, 3, 8, 10, 11});
  CHECK(parse_cpu_list("5") == Cpus{5});
  CHECK(parse_cpu_list("") == Cpus{});
  CHECK_THROWS_AS(parse_cpu_list("3-1"), std::invalid_argument);
  CHECK_THROWS_AS(parse_cpu_list("a"), std::invalid_argument);
  CHECK(format_cpu_list({8, 0, 1, 2, 3, 10, 11}) == "0-3,8,10-11");
  CHECK(format_cpu_list({4}) == "4");
  CHECK(format_cpu_list({}).empty());
}

TEST_CASE("binding names, and NVML's bus id in sysfs form", "[numa]") {
  CHECK(parse_numa_binding("node") == NumaBinding::kNode);
  CHECK(parse_numa_binding("core-complex") == NumaBinding::kCoreComplex);
  CHECK(parse_numa_binding("core_complex") == NumaBinding::kCoreComplex);
  CHECK_FALSE(parse_numa_binding("numa"));
  CHECK(to_string(NumaBinding::kExclusive) == "exclusive");
  CHECK(sysfs_pci_bus_id("00000000:3B:00.0") == "0000:3b:00.0");
  CHECK(sysfs_pci_bus_id("0000:3b:00.0") == "0000:3b:00.0");
}

TEST_CASE("the topology and a GPU's node come from sysfs", "[numa]") {
  FakeSysfs sys;
  const CpuTopology t = read_cpu_topology(sys.root.string());
  REQUIRE(t.cpus.size() == 8);
  CHECK(t.nodes == 2);
  CHECK(t.cpus[5].node == 1);
  CHECK(t.cpus[5].package == 1);
  CHECK(t.cpus[5].core == 1);
  CHECK(t.cpus[5].l3 == 5);
  CHECK(t.cpus[2].l3 == 0);
  CHECK(read_pci_numa_node(sys.root.string(), "00000000:3B:00.0") == 1);
  CHECK_FALSE(read_pci_numa_node(sys.root.string(), "0000:17:00.0"));  // -1: unknown
  CHECK_FALSE(read_pci_numa_node(sys.root.string(), "0000:99:00.0"));
  CHECK_FALSE(read_pci_numa_node(sys.root.string(), ""));
  CHECK_THROWS_WITH(read_cpu_topology((sys.root / "nope").string()),
                    Catch::Contains("online CPUs") && Catch::Contains("nope"));
}

TEST_CASE("a kernel without NUMA nodes has every CPU on node 0", "[numa]") {
  FakeSysfs sys;
  fs::remove_all(sys.root / "devices/system/node");
  const CpuTopology t = read_cpu_topology(sys.root.string());
  CHECK(t.nodes == 1);
  CHECK(t.cpus[6].node == 0);
}

TEST_CASE("node, socket, exclusive and core-complex plans", "[numa]") {
  FakeSysfs sys;
  const CpuTopology t = read_cpu_topology(sys.root.string());
  const std::vector<std::optional<int>> nodes = {0, 0, 1, 1, std::nullopt};
  const std::vector<int> ranks = {0, 1, 2, 3, 4};

  NumaPlan p = plan_numa_binding(NumaBinding::kNode, nodes, ranks, t);
  CHECK(p.cpus[0] == Cpus{0, 1, 2, 3});
  CHECK(p.cpus[1] == Cpus{0, 1, 2, 3});
  CHECK(p.cpus[3] == Cpus{4, 5, 6, 7});
  CHECK(p.cpus[4].empty());
  REQUIRE(p.notes.size() == 1);
  CHECK_THAT(p.notes[0], Catch::Contains("rank 4 has no GPU"));

  // One node per socket here, so socket = node; a socket holding two nodes is the next case.
  p = plan_numa_binding(NumaBinding::kSocket, nodes, ranks, t);
  CHECK(p.cpus[2] == Cpus{4, 5, 6, 7});

  // Two cores per node: each of the node's two workers gets one core with both its threads.
  p = plan_numa_binding(NumaBinding::kExclusive, nodes, ranks, t);
  CHECK(p.cpus[0] == Cpus{0, 2});
  CHECK(p.cpus[1] == Cpus{1, 3});
  CHECK(p.cpus[2] == Cpus{4, 6});
  CHECK(p.cpus[3] == Cpus{5, 7});

  // Node 0 has one L3 (shared by both), node 1 two (one each).
  p = plan_numa_binding(NumaBinding::kCoreComplex, nodes, ranks, t);
  CHECK(p.cpus[0] == Cpus{0, 1, 2, 3});
  CHECK(p.cpus[1] == Cpus{0, 1, 2, 3});
  CHECK(p.cpus[2] == Cpus{4, 6});
  CHECK(p.cpus[3] == Cpus{5, 7});
  CHECK_THAT(p.notes[0], Catch::Contains("node 0 has 1 L3 domain for 2 workers"));
}

TEST_CASE("socket binding takes every node of the GPU's socket", "[numa]") {
  CpuTopology t;
  for (int c = 0; c < 8; ++c) t.cpus.push_back({c, c / 2, c / 4, c % 2, c / 2});  // 4 nodes
  t.nodes = 4;
  NumaPlan p = plan_numa_binding(NumaBinding::kSocket, {1, 2}, {0, 1}, t);
  CHECK(p.cpus[0] == Cpus{0, 1, 2, 3});  // node 1 sits on socket 0 with node 0
  CHECK(p.cpus[1] == Cpus{4, 5, 6, 7});
}

TEST_CASE("exclusive binding refuses more workers than cores, and splits unevenly", "[numa]") {
  CpuTopology t;
  for (int c = 0; c < 5; ++c) t.cpus.push_back({c, 0, 0, c, 0});  // 5 cores, no hyperthreads
  NumaPlan p = plan_numa_binding(NumaBinding::kExclusive, {0, 0}, {0, 1}, t);
  CHECK(p.cpus[0] == Cpus{0, 1, 2});
  CHECK(p.cpus[1] == Cpus{3, 4});
  const std::vector<std::optional<int>> six(6, 0);
  CHECK_THROWS_WITH(plan_numa_binding(NumaBinding::kExclusive, six, {0, 1, 2, 3, 4, 5}, t),
                    Catch::Contains("NUMA node 0 has 5 physical cores for 6 workers") &&
                        Catch::Contains("--numa-binding node"));
}

TEST_CASE("apply_numa_binding: fake GPUs on two nodes, CPU workers left alone", "[numa]") {
  FakeSysfs sys;
  LaunchConfig cfg;
  cfg.numa_binding = NumaBinding::kNode;
  GpuInventory gpus;
  gpus.gpus.resize(3);
  gpus.gpus[0].numa_node = 1;                // known without sysfs (fake GPUs)
  gpus.gpus[1].pci_bus_id = "0000:3b:00.0";  // numa_node 1 in sysfs
  gpus.gpus[2].pci_bus_id = "0000:17:00.0";  // -1: unknown on a two-node machine
  std::vector<WorkerSpec> ws(4);
  for (int i = 0; i < 4; ++i) {
    ws[static_cast<std::size_t>(i)].rank = i;
    if (i < 3) ws[static_cast<std::size_t>(i)].gpu = i;
  }
  std::vector<std::string> notes;
  apply_numa_binding(cfg, gpus, {{"GPURUN_SYSFS_ROOT", sys.root.string()}}, ws, &notes);
  CHECK(ws[0].cpus == Cpus{4, 5, 6, 7});
  CHECK(ws[1].cpus == Cpus{4, 5, 6, 7});
  CHECK(ws[2].cpus.empty());
  CHECK(ws[3].cpus.empty());
  REQUIRE(notes.size() == 2);
  CHECK_THAT(notes[0], Catch::Contains("GPU of rank 2 is unknown"));
  CHECK_THAT(notes[1], Catch::Contains("ranks 2,3 have no GPU with a known NUMA node"));

  // Unset: nothing is read or bound (even with an unreadable root).
  cfg.numa_binding.reset();
  ws[0].cpus.clear();
  apply_numa_binding(cfg, gpus, {{"GPURUN_SYSFS_ROOT", "/nonexistent"}}, ws, &notes);
  CHECK(ws[0].cpus.empty());
}
