// --dump-config: the resolved LaunchConfig as JSON (nlohmann), durations in milliseconds.
#include <nlohmann/json.hpp>

#include "cli/config.h"
#include "probe/numa.h"
#include "process/process_runner.h"
#include "run/worker_env.h"

namespace gpurun::launcher {

// The enums' names in the JSON (nlohmann's enum mapping; found by argument-dependent lookup).
NLOHMANN_JSON_SERIALIZE_ENUM(Action, {
                                         {Action::kRun, "run"},
                                         {Action::kHelp, "help"},
                                         {Action::kVersion, "version"},
                                         {Action::kInfo, "info"},
                                         {Action::kDryRun, "dry-run"},
                                         {Action::kDumpConfig, "dump-config"},
                                         {Action::kStore, "store"},
                                     })
NLOHMANN_JSON_SERIALIZE_ENUM(NprocKind, {
                                            {NprocKind::kNumber, "number"},
                                            {NprocKind::kGpu, "gpu"},
                                            {NprocKind::kCpu, "cpu"},
                                            {NprocKind::kAuto, "auto"},
                                        })
NLOHMANN_JSON_SERIALIZE_ENUM(ColorMode, {
                                            {ColorMode::kAuto, "auto"},
                                            {ColorMode::kAlways, "always"},
                                            {ColorMode::kNever, "never"},
                                        })

std::string config_to_json(const LaunchConfig& c) {
  using nlohmann::json;
  auto std_json = [](const StdSpec& s) {
    json per = json::object();
    for (const auto& [r, m] : s.per_rank) per[std::to_string(r)] = m;
    return json{{"all", s.all}, {"per_rank", per}};
  };
  auto opt_str = [](const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); };
  json j;
  j["action"] = c.action;
  if (c.action == Action::kStore) j["store_args"] = c.store_args;
  j["nnodes"] = {{"min", c.nnodes_min}, {"max", c.nnodes_max}};
  j["node_rank"] = c.node_rank;
  j["nproc_per_node"] =
      c.nproc_kind == NprocKind::kNumber ? json(c.nproc_per_node) : json(c.nproc_kind);
  j["rdzv_backend"] = c.rdzv_backend;
  j["rdzv_endpoint"] = c.rdzv_endpoint;
  j["rdzv_id"] = c.rdzv_id;
  j["rdzv_conf"] = c.rdzv_conf;
  j["standalone"] = c.standalone;
  j["max_restarts"] = c.max_restarts;
  j["monitor_interval_ms"] = c.monitor_interval.count();
  j["start_method"] = c.start_method;
  j["role"] = c.role;
  j["module"] = c.module;
  j["no_python"] = c.no_python;
  j["run_path"] = c.run_path;
  j["log_dir"] = opt_str(c.log_dir);
  j["redirects"] = std_json(c.redirects);
  j["tee"] = std_json(c.tee);
  j["local_ranks_filter"] = c.local_ranks_filter ? json(*c.local_ranks_filter) : json(nullptr);
  j["duplicate_stdout_filters"] = c.duplicate_stdout_filters;
  j["duplicate_stderr_filters"] = c.duplicate_stderr_filters;
  j["master_addr"] = c.master_addr;
  j["master_port"] = c.master_port ? json(*c.master_port) : json(nullptr);
  j["local_addr"] = opt_str(c.local_addr);
  j["rdzv_allow"] = opt_str(c.rdzv_allow);
  json sigs = json::array();
  for (int s : c.signals_to_handle) sigs.push_back(signal_name(s));
  j["signals_to_handle"] = sigs;
  j["shutdown_timeout_ms"] = c.shutdown_timeout.count();
  j["failure_shutdown_timeout_ms"] = c.failure_shutdown_timeout.count();
  j["exit_barrier_timeout_ms"] = c.exit_barrier_timeout.count();
  j["virtual_local_rank"] = c.virtual_local_rank;
  j["numa_binding"] = c.numa_binding ? json(to_string(*c.numa_binding)) : json(nullptr);
  j["event_log_handler"] = c.event_log_handler;
  j["per_worker_visible_devices"] = c.narrow_visible_devices;
  j["timeout_ms"] = c.run_timeout ? json(c.run_timeout->count()) : json(nullptr);
  j["rdzv_timeout_ms"] = c.rdzv_timeout.count();
  j["summary_json"] = opt_str(c.summary_json);
  j["exit_code_mode"] = c.torchrun_exit_codes ? "torchrun" : "gpurun";
  j["color"] = c.color;
  j["tag_output"] = c.tag_output;
  j["python"] = c.python;
  j["stdin_rank"] = c.stdin_rank ? json(*c.stdin_rank) : json(nullptr);
  j["program"] = c.program;
  j["program_args"] = c.program_args;
  j["command"] = c.program.empty() ? json::array() : json(base_command(c));
  j["notes"] = c.notes;
  return j.dump(2);
}

}  // namespace gpurun::launcher
