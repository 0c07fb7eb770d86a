#include "probe/numa.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>

#include "gpurun/common/env.h"
#include "gpurun/common/error.h"
#include "gpurun/common/int_ranges.h"

namespace gpurun::launcher {

namespace fs = std::filesystem;

std::string to_string(NumaBinding mode) {
  switch (mode) {
    case NumaBinding::kNode:
      return "node";
    case NumaBinding::kSocket:
      return "socket";
    case NumaBinding::kExclusive:
      return "exclusive";
    case NumaBinding::kCoreComplex:
      return "core-complex";
  }
  return "node";
}

std::optional<NumaBinding> parse_numa_binding(const std::string& text) {
  for (NumaBinding m : {NumaBinding::kNode, NumaBinding::kSocket, NumaBinding::kExclusive,
                        NumaBinding::kCoreComplex}) {
    if (text == to_string(m)) return m;
  }
  if (text == "core_complex") return NumaBinding::kCoreComplex;
  return std::nullopt;
}

namespace {

std::optional<std::string> read_line(const fs::path& p) {
  std::ifstream f(p);
  if (!f) return std::nullopt;
  std::string line;
  std::getline(f, line);
  return trim(line);
}

std::optional<int> to_int(const std::string& s) {
  int v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<int> read_int(const fs::path& p) {
  auto line = read_line(p);
  return line ? to_int(*line) : std::nullopt;
}

}  // namespace

std::vector<int> parse_cpu_list(const std::string& text) {
  std::set<int> out;
  const std::string t = trim(text);
  std::vector<std::string> items = t.empty() ? std::vector<std::string>() : split(t, ',');
  if (!items.empty() && items.back().empty()) items.pop_back();  // "0-3," as "0-3"
  for (const std::string& item : items) {
    const std::size_t dash = item.find('-');
    const auto lo = to_int(item.substr(0, dash));
    const auto hi = dash == std::string::npos ? lo : to_int(item.substr(dash + 1));
    if (!lo || !hi || *lo < 0 || *hi < *lo || *hi > (1 << 20)) {
      throw std::invalid_argument("not a CPU list: '" + text + "'");
    }
    for (int c = *lo; c <= *hi; ++c) out.insert(c);
  }
  return {out.begin(), out.end()};
}

std::string format_cpu_list(const std::vector<int>& cpus) { return format_int_ranges(cpus, 2); }

CpuTopology read_cpu_topology(const std::string& sysfs_root) {
  const fs::path cpu_dir = fs::path(sysfs_root) / "devices/system/cpu";
  const auto online_text = read_line(cpu_dir / "online");
  std::vector<int> online;
  try {
    if (online_text) online = parse_cpu_list(*online_text);
  } catch (const std::invalid_argument&) {
  }
  if (online.empty()) {
    throw ConfigError(
        fmt::format("--numa-binding: cannot read the online CPUs from {}; is sysfs mounted?",
                    (cpu_dir / "online").string()));
  }
  std::map<int, int> node_of;
  const fs::path node_dir = fs::path(sysfs_root) / "devices/system/node";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(node_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("node", 0) != 0) continue;
    const auto node = to_int(name.substr(4));
    const auto list = read_line(entry.path() / "cpulist");
    if (!node || !list) continue;
    try {
      for (int c : parse_cpu_list(*list)) node_of[c] = *node;
    } catch (const std::invalid_argument&) {
    }
  }
  CpuTopology topo;
  std::set<int> nodes;
  for (int c : online) {
    CpuInfo ci;
    ci.cpu = c;
    const fs::path base = cpu_dir / ("cpu" + std::to_string(c));
    auto it = node_of.find(c);
    ci.node = it == node_of.end() ? 0 : it->second;
    ci.package = read_int(base / "topology/physical_package_id").value_or(0);
    ci.core = read_int(base / "topology/core_id").value_or(c);
    ci.l3 = -1;
    for (const auto& idx : fs::directory_iterator(base / "cache", ec)) {
      if (idx.path().filename().string().rfind("index", 0) != 0) continue;
      if (read_int(idx.path() / "level") != 3) continue;
      const auto shared = read_line(idx.path() / "shared_cpu_list");
      try {
        if (shared) ci.l3 = parse_cpu_list(*shared).front();
      } catch (const std::invalid_argument&) {
      }
    }
    if (ci.l3 < 0) ci.l3 = -1 - ci.package;  // no L3 information: one domain per socket
    nodes.insert(ci.node);
    topo.cpus.push_back(ci);
  }
  topo.nodes = static_cast<int>(nodes.size());
  return topo;
}

std::string sysfs_pci_bus_id(const std::string& bus_id) {
  // NVML: "00000000:3B:00.0" (8-digit domain, upper case); sysfs: "0000:3b:00.0".
  std::string s;
  for (char c : bus_id) s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const std::size_t colon = s.find(':');
  if (colon != std::string::npos && colon > 4) s = s.substr(colon - 4);
  return s;
}

std::optional<int> read_pci_numa_node(const std::string& sysfs_root, const std::string& bus_id) {
  if (bus_id.empty()) return std::nullopt;
  const auto v =
      read_int(fs::path(sysfs_root) / "bus/pci/devices" / sysfs_pci_bus_id(bus_id) / "numa_node");
  if (!v || *v < 0) return std::nullopt;
  return v;
}

NumaPlan plan_numa_binding(NumaBinding mode, const std::vector<std::optional<int>>& worker_nodes,
                           const std::vector<int>& ranks, const CpuTopology& topo) {
  NumaPlan plan;
  plan.cpus.resize(worker_nodes.size());
  auto rank_of = [&](std::size_t w) { return w < ranks.size() ? ranks[w] : static_cast<int>(w); };
  std::vector<int> unbound;
  // Workers per node, in worker order (exclusive and core-complex share a node between them).
  std::map<int, std::vector<std::size_t>> on_node;
  for (std::size_t w = 0; w < worker_nodes.size(); ++w) {
    if (!worker_nodes[w]) {
      unbound.push_back(rank_of(w));
      continue;
    }
    on_node[*worker_nodes[w]].push_back(w);
  }
  for (const auto& [node, workers] : on_node) {
    std::vector<const CpuInfo*> mine;
    for (const CpuInfo& c : topo.cpus) {
      if (c.node == node) mine.push_back(&c);
    }
    if (mine.empty()) {
      std::vector<int> r;
      for (std::size_t w : workers) r.push_back(rank_of(w));
      plan.notes.push_back(fmt::format(
          "--numa-binding: NUMA node {} (the GPU of rank{} {}) has no online CPU; not bound", node,
          r.size() == 1 ? "" : "s", format_rank_list(r)));
      continue;
    }
    switch (mode) {
      case NumaBinding::kNode:
        for (std::size_t w : workers) {
          for (const CpuInfo* c : mine) plan.cpus[w].push_back(c->cpu);
        }
        break;
      case NumaBinding::kSocket: {
        std::set<int> packages;
        for (const CpuInfo* c : mine) packages.insert(c->package);
        for (std::size_t w : workers) {
          for (const CpuInfo& c : topo.cpus) {
            if (packages.count(c.package)) plan.cpus[w].push_back(c.cpu);
          }
        }
        break;
      }
      case NumaBinding::kExclusive: {
        // Physical cores in order of their first CPU; every hyperthread of a core together.
        std::vector<std::pair<int, int>> core_order;  // (package, core) in first-seen order
        std::map<std::pair<int, int>, std::vector<int>> threads;
        for (const CpuInfo* c : mine) {
          auto key = std::make_pair(c->package, c->core);
          if (!threads.count(key)) core_order.push_back(key);
          threads[key].push_back(c->cpu);
        }
        const std::size_t cores = core_order.size();
        const std::size_t n = workers.size();
        if (cores < n) {
          throw ConfigError(fmt::format(
              "--numa-binding exclusive: NUMA node {} has {} physical core{} for {} workers; "
              "use --numa-binding node (shared cores) or fewer workers",
              node, cores, cores == 1 ? "" : "s", n));
        }
        for (std::size_t k = 0; k < n; ++k) {
          // Shares differ by at most one core; the first ones get the remainder.
          const std::size_t begin = k * (cores / n) + std::min(k, cores % n);
          const std::size_t size = cores / n + (k < cores % n ? 1 : 0);
          for (std::size_t i = begin; i < begin + size; ++i) {
            for (int cpu : threads[core_order[i]]) plan.cpus[workers[k]].push_back(cpu);
          }
        }
        break;
      }
      case NumaBinding::kCoreComplex: {
        std::vector<int> domain_order;  // L3 domains of this node, by first CPU
        std::map<int, std::vector<int>> domain;
        for (const CpuInfo* c : mine) {
          if (!domain.count(c->l3)) domain_order.push_back(c->l3);
          domain[c->l3].push_back(c->cpu);
        }
        if (workers.size() > domain_order.size()) {
          plan.notes.push_back(fmt::format(
              "--numa-binding core-complex: NUMA node {} has {} L3 domain{} for {} workers; "
              "some workers share one",
              node, domain_order.size(), domain_order.size() == 1 ? "" : "s", workers.size()));
        }
        for (std::size_t k = 0; k < workers.size(); ++k) {
          plan.cpus[workers[k]] = domain[domain_order[k % domain_order.size()]];
        }
        break;
      }
    }
    for (std::size_t w : workers) std::sort(plan.cpus[w].begin(), plan.cpus[w].end());
  }
  if (!unbound.empty()) {
    plan.notes.push_back(
        fmt::format("--numa-binding: rank{} {} {} no GPU with a known NUMA node; not bound",
                    unbound.size() == 1 ? "" : "s", format_rank_list(unbound),
                    unbound.size() == 1 ? "has" : "have"));
  }
  return plan;
}

void apply_numa_binding(const LaunchConfig& cfg, const GpuInventory& gpus, const EnvMap& env,
                        std::vector<WorkerSpec>& workers, std::vector<std::string>* notes) {
  if (!cfg.numa_binding) return;
  const std::string root = env_get(env, "GPURUN_SYSFS_ROOT").value_or("/sys");
  const CpuTopology topo = read_cpu_topology(root);
  std::vector<std::optional<int>> nodes;
  std::vector<int> ranks;
  std::vector<int> unknown;
  for (const WorkerSpec& w : workers) {
    ranks.push_back(w.rank);
    std::optional<int> node;
    if (w.gpu && *w.gpu < static_cast<int>(gpus.gpus.size())) {
      const GpuInfo& g = gpus.gpus[static_cast<std::size_t>(*w.gpu)];
      node = g.numa_node ? g.numa_node : read_pci_numa_node(root, g.pci_bus_id);
      if (!node && topo.nodes == 1 && !topo.cpus.empty()) node = topo.cpus.front().node;
      if (!node) unknown.push_back(w.rank);
    }
    nodes.push_back(node);
  }
  NumaPlan plan = plan_numa_binding(*cfg.numa_binding, nodes, ranks, topo);
  for (std::size_t i = 0; i < workers.size(); ++i) workers[i].cpus = std::move(plan.cpus[i]);
  if (notes) {
    if (!unknown.empty()) {
      notes->push_back(fmt::format(
          "--numa-binding: the NUMA node of the GPU of rank{} {} is unknown (no PCI bus id or "
          "numa_node in {}/bus/pci/devices)",
          unknown.size() == 1 ? "" : "s", format_rank_list(unknown), root));
    }
    notes->insert(notes->end(), plan.notes.begin(), plan.notes.end());
  }
}

}  // namespace gpurun::launcher
