// --summary-json and --event-log-handler's documents: the failure report as JSON (pure, apart
// from write_summary_json).
#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "output/failure_summary.h"

namespace gpurun::launcher {

namespace {

std::string outcome_name(Outcome o) {
  switch (o) {
    case Outcome::kSucceeded:
      return "succeeded";
    case Outcome::kWorkerFailed:
      return "worker_failed";
    case Outcome::kInterrupted:
      return "interrupted";
    case Outcome::kTimedOut:
      return "timed_out";
    case Outcome::kSpawnFailed:
      return "spawn_failed";
  }
  return "unknown";
}

std::string iso_time(std::chrono::system_clock::time_point t) {
  if (t.time_since_epoch().count() == 0) return "";
  return torchrun_time(t);
}

nlohmann::json worker_json(const WorkerRecord& w) {
  nlohmann::json j = {{"rank", w.rank},
                      {"local_rank", w.local_rank},
                      {"pid", w.pid},
                      {"restart_count", w.restart_count},
                      {"stopped_by_gpurun", w.stopped_by_gpurun},
                      {"sigkilled", w.sigkilled},
                      {"started", iso_time(w.started)},
                      {"ended", iso_time(w.ended)}};
  if (w.status) {
    j["exit_code"] = w.status->as_exit_code();
    j["exitcode"] = w.status->torchrun_exitcode();  // torchrun's: -signal for a signal death
    j["signal"] = w.status->signaled ? nlohmann::json(signal_name(w.status->signal)) : nullptr;
    j["status"] = w.status->describe();
  } else {
    j["exit_code"] = nullptr;
    j["status"] = "not reaped";
  }
  if (!w.exec_error.empty()) j["exec_error"] = w.exec_error;
  return j;
}

nlohmann::json failure_json(const FailureEntry& f, const std::string& host) {
  nlohmann::json j = worker_json(f.worker);
  j["host"] = host;
  j["time"] = torchrun_time(failure_epoch(f));
  j["timestamp"] = failure_epoch(f);
  j["message"] = torchrun_message(f);
  j["error_file"] =
      f.error_file.path.empty() ? nlohmann::json(nullptr) : nlohmann::json(f.error_file.path);
  j["error_file_present"] = f.error_file.present;
  if (!f.error_file.problem.empty()) j["error_file_problem"] = f.error_file.problem;
  if (f.error_file.present && f.error_file.problem.empty()) {
    j["error_message"] = f.error_file.message;
    j["traceback"] = f.error_file.traceback;
  }
  j["last_lines"] = f.last_lines;
  j["last_lines_from"] = f.last_lines_from;
  return j;
}

}  // namespace

nlohmann::json summary_json(const FailureReport& report) {
  const SupervisorResult& r = report.result;
  nlohmann::json j;
  j["outcome"] = outcome_name(r.outcome);
  const ExitOrigin eo = exit_origin(report);
  j["exit_code"] = eo.exit_code;
  j["exit_code_origin"] = eo.origin.empty() ? nlohmann::json(nullptr) : nlohmann::json(eo.origin);
  j["exit_code_reason"] = eo.reason.empty() ? nlohmann::json(nullptr) : nlohmann::json(eo.reason);
  j["exit_code_mode"] = report.torchrun_exit_codes ? "torchrun" : "gpurun";
  if (eo.exit_code != eo.gpurun_code) j["gpurun_exit_code"] = eo.gpurun_code;
  j["restarts"] = r.restarts;
  j["host"] = report.host;
  j["entrypoint"] = report.entrypoint;
  j["interrupt_signal"] =
      r.interrupt_signal ? nlohmann::json(signal_name(r.interrupt_signal)) : nullptr;
  j["running_at_timeout"] = r.running_at_timeout;
  j["spawn_error"] =
      r.spawn_error.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.spawn_error);
  if (report.root) {
    j["root_cause"] = failure_json(*report.root, report.host);
    j["explanation"] = explain_failure(*report.root, !report.root->last_lines.empty());
  } else {
    j["root_cause"] = nullptr;
  }
  j["failures"] = nlohmann::json::array();
  if (report.root) j["failures"].push_back(failure_json(*report.root, report.host));
  for (const auto& o : report.others) j["failures"].push_back(failure_json(o, report.host));
  j["workers"] = nlohmann::json::array();
  for (const auto& w : r.workers) j["workers"].push_back(worker_json(w));
  return j;
}

std::vector<nlohmann::json> worker_events(const FailureReport& report, const EventContext& ctx) {
  std::vector<nlohmann::json> out;
  auto failure_of = [&](int rank) -> const FailureEntry* {
    if (report.root && report.root->worker.rank == rank) return &*report.root;
    for (const auto& o : report.others) {
      if (o.worker.rank == rank) return &o;
    }
    return nullptr;
  };
  for (const WorkerRecord& w : report.result.workers) {
    const FailureEntry* f = failure_of(w.rank);
    // torch's _get_worker_state: the run's state for a worker that failed itself (or for all
    // when the run succeeded); TERMINATED for one the agent stopped.
    const std::string state = report.result.outcome == Outcome::kSucceeded ? "SUCCEEDED"
                              : f != nullptr                               ? "FAILED"
                                                                           : "TERMINATED";
    nlohmann::json raw = nullptr;
    if (f && f->error_file.present && !f->error_file.raw.is_null()) raw = f->error_file.raw.dump();
    nlohmann::json md;
    md["group_world_size"] = ctx.group_world_size;
    md["entry_point"] = report.entrypoint;
    nlohmann::json metadata;
    metadata["run_id"] = ctx.run_id;
    metadata["global_rank"] = w.rank;
    metadata["group_rank"] = ctx.group_rank;
    metadata["worker_id"] = std::to_string(w.pid);
    metadata["role"] = ctx.role;
    metadata["hostname"] = report.host;
    metadata["state"] = state;
    metadata["total_run_time"] = static_cast<long long>(ctx.total_run_time_s);  // torch: int s
    metadata["rdzv_backend"] = ctx.rdzv_backend;
    metadata["raw_error"] = raw;
    metadata["metadata"] = md.dump();
    metadata["agent_restarts"] = report.result.restarts;
    metadata["duration_ms"] = nullptr;
    nlohmann::json e;
    e["name"] = "torchelastic.worker.status." + state;
    e["source"] = "WORKER";
    e["timestamp"] = ctx.timestamp_s;
    e["metadata"] = metadata;
    out.push_back(std::move(e));
  }
  return out;
}

nlohmann::json error_summary_json(int exit_code, const std::string& message) {
  nlohmann::json j;
  j["outcome"] = "error";
  j["exit_code"] = exit_code;
  j["exit_code_origin"] = "gpurun";
  j["exit_code_reason"] = message;
  j["failures"] = nlohmann::json::array();
  j["workers"] = nlohmann::json::array();
  return j;
}

void write_summary_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream f(path);
  if (f) f << j.dump(2) << "\n";
  if (!f) {
    std::fprintf(stderr, "gpurun: warning: cannot write --summary-json '%s' (%s)\n", path.c_str(),
                 std::strerror(errno));
  }
}

}  // namespace gpurun::launcher
