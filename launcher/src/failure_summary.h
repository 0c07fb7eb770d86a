// The failure summary: gpurun's plain explanation first ("gpurun: error: rank 2 (pid 4711)
// killed by SIGSEGV (exit 139); see its last output below"), the last lines of that rank's
// output, then torchrun's ChildFailedError block byte for byte (people grep it), and the same as
// JSON for --summary-json. Pure formatting plus reading torchrun's error-file JSON (a corrupt or
// missing file is reported, never thrown).
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "supervisor.h"

namespace gpurun::launcher {

// TORCHELASTIC_ERROR_FILE as written by torch.distributed.elastic's @record.
struct ErrorFile {
  std::string path;
  bool present = false;
  std::string problem;    // "unreadable: ..." for a corrupt file ("" when fine or absent)
  std::string message;    // message.message (or the string message)
  std::string traceback;  // message.extraInfo.py_callstack
  std::optional<long long> timestamp;  // epoch seconds
  nlohmann::json raw;                  // the parsed document when valid
};

ErrorFile read_error_file(const std::string& path);
ErrorFile parse_error_file(const std::string& path, const std::string& content);

struct FailureEntry {
  WorkerRecord worker;
  ErrorFile error_file;                 // path "" = no error file exported (log dir /dev/null)
  std::vector<std::string> last_lines;  // that rank's last stderr lines (or stdout's)
  std::string last_lines_from;          // "stderr", "stdout", "/path/stderr.log"
  // The PROGRAM when the worker's argv[0] was the Python interpreter that runs it ("" when
  // PROGRAM ran directly): an exec failure is then the interpreter's, not the program's.
  std::string python_program;
};

struct FailureReport {
  std::string entrypoint;  // script path for python, else the program as given
  std::string host;        // gethostname()
  SupervisorResult result;
  std::optional<FailureEntry> root;  // set when result.first_failure
  std::vector<FailureEntry> others;
};

// "2026-11-23_17:55:23" (local time, torchrun's timestamp_isoformat(sep="_")).
std::string torchrun_time(std::chrono::system_clock::time_point t);
std::string torchrun_time(long long epoch_seconds);

// torchrun's ChildFailedError block (without the leading blank line torchrun has).
std::string format_torchrun_block(const FailureReport& report);

// Everything gpurun prints on stderr when the run did not succeed (ends with '\n'):
// explanation, last lines, torchrun block; or the interrupt / timeout / spawn-error message.
std::string format_failure_summary(const FailureReport& report);

// --summary-json: outcome, exit code, root cause, failures, every worker. Also for success.
nlohmann::json summary_json(const FailureReport& report);

// --event-log-handler console: torchelastic's end-of-run events, one per worker of the last
// attempt, as torch's agent records them (name "torchelastic.worker.status.<state>": SUCCEEDED,
// FAILED for a worker that failed itself, TERMINATED for one stopped after another's failure;
// source "WORKER", timestamp in seconds, metadata: run_id, global_rank, group_rank, worker_id
// (the pid), role, hostname, state, total_run_time, rdzv_backend, raw_error (the error file's
// JSON), metadata (group_world_size, entry_point), agent_restarts). Pure.
struct EventContext {
  std::string run_id;
  int group_rank = 0;
  int group_world_size = 1;
  std::string role = "default";
  std::string rdzv_backend = "static";
  double total_run_time_s = 0.0;
  long long timestamp_s = 0;
};
std::vector<nlohmann::json> worker_events(const FailureReport& report, const EventContext& ctx);

// The first line of the explanation for the root cause, without "gpurun: error: ".
std::string explain_failure(const FailureEntry& f, bool has_last_lines);

}  // namespace gpurun::launcher
