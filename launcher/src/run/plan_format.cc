// format_plan(): the --dry-run report. Per rank: global/local rank, GPU, the exact command line,
// the variables gpurun sets (not the whole inherited environment) and where output goes.
#include <fmt/format.h>

#include <sstream>

#include "cli/config.h"
#include "probe/numa.h"
#include "run/worker_env.h"

namespace gpurun::launcher {

namespace {

std::string shell_quote(const std::string& s) {
  static const std::string kSafe =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@%+=:,./-";
  if (!s.empty() && s.find_first_not_of(kSafe) == std::string::npos) return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string join_quoted(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += (out.empty() ? "" : " ") + shell_quote(a);
  return out;
}

// Wraps "K=V" words into lines of at most `width` columns after `indent`.
std::string wrap(const std::vector<std::string>& words, std::size_t indent, std::size_t width) {
  std::string out, line;
  for (const auto& w : words) {
    if (!line.empty() && line.size() + 1 + w.size() > width) {
      out += line + "\n" + std::string(indent, ' ');
      line.clear();
    }
    line += (line.empty() ? "" : " ") + w;
  }
  return out + line;
}

std::string stream_text(const std::string& path, bool console) {
  if (path.empty())
    return console ? "console" : "dropped (not shown on the console and no log file)";
  return console ? "console + " + path : path;
}

}  // namespace

std::string format_plan(const LaunchConfig& cfg, const AttemptFacts& facts,
                        const std::vector<WorkerSpec>& workers, const GpuInventory& gpus,
                        std::string_view store_access) {
  std::ostringstream out;
  const WorkerSpec* first = workers.empty() ? nullptr : &workers.front();

  out << fmt::format("gpurun plan (dry run, nothing started): {} worker{} on node {} of {}",
                     workers.size(), workers.size() == 1 ? "" : "s", cfg.node_rank, cfg.nnodes_max);
  // As plan_workers: world size 0 = every node runs as many workers as this one.
  const std::size_t world_size =
      facts.world_size > 0 ? static_cast<std::size_t>(facts.world_size)
                           : workers.size() * static_cast<std::size_t>(facts.group_world_size);
  if (first) out << fmt::format(", world size {}", world_size);
  out << "\n";

  out << fmt::format("  GPUs:    {} visible via {}", gpus.gpus.size(), gpus.source);
  if (!gpus.driver_version.empty()) out << fmt::format(" (driver {})", gpus.driver_version);
  out << "\n";
  for (const auto& g : gpus.gpus) {
    out << fmt::format("           [{}] {} (id {})\n", g.index, g.name.empty() ? g.vendor : g.name,
                       g.id);
  }
  for (const auto& n : gpus.notes) out << "           note: " << n << "\n";
  if (first) {
    out << fmt::format("  store:   {}:{}{}\n", facts.master_addr, facts.master_port,
                       facts.master_port == 0 ? " (a free port is bound when the run starts)" : "");
    if (!store_access.empty()) out << "           access: " << store_access << "\n";
  }
  std::string device_policy =
      cfg.virtual_local_rank       ? "one GPU per worker, LOCAL_RANK=0 (--virtual-local-rank)"
      : cfg.narrow_visible_devices ? "CUDA_VISIBLE_DEVICES narrowed to each worker's GPU"
                                   : "worker uses GPU LOCAL_RANK; CUDA_VISIBLE_DEVICES unchanged";
  out << "  devices: " << device_policy << "\n";
  if (cfg.log_dir) out << "  logs:    " << *cfg.log_dir << "\n";

  for (const auto& w : workers) {
    std::string gpu = "no GPU";
    if (w.gpu && *w.gpu < static_cast<int>(gpus.gpus.size())) {
      const auto& g = gpus.gpus[static_cast<std::size_t>(*w.gpu)];
      gpu = fmt::format("GPU {}: {} (id {})", g.index, g.name.empty() ? g.vendor : g.name, g.id);
    }
    out << fmt::format("\nrank {} (local rank {})  {}\n", w.rank, w.local_rank, gpu);
    out << "  command: " << join_quoted(w.argv) << "\n";
    if (cfg.numa_binding) {
      out << "  cpus:    "
          << (w.cpus.empty() ? std::string("all (not bound)")
                             : fmt::format("{} (--numa-binding {})", format_cpu_list(w.cpus),
                                           to_string(*cfg.numa_binding)))
          << "\n";
    }
    std::vector<std::string> set;
    for (const auto& key : worker_env_keys()) {
      auto it = w.env.find(key);
      if (it != w.env.end()) set.push_back(key + "=" + shell_quote(it->second));
    }
    out << "  env:     " << wrap(set, 11, 89) << "\n";
    out << "  stdout:  " << stream_text(w.stdout_path, w.console_stdout) << "\n";
    out << "  stderr:  " << stream_text(w.stderr_path, w.console_stderr) << "\n";
  }
  return out.str();
}

}  // namespace gpurun::launcher
