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

#include "output/error_file.h"
#include "process/supervisor.h"

namespace gpurun::launcher {

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
  bool torchrun_exit_codes = false;  // --exit-code-mode torchrun: 1 for any failure
};

// Where gpurun's exit code comes from: a worker's own code (or 128+the signal that killed it),
// or gpurun (interrupted, --timeout, a worker that could not be started or executed). A
// worker's 2/3/4/124/127 is then never mistaken for one of gpurun's reserved codes.
struct ExitOrigin {
  int exit_code = 0;    // what gpurun exits with (after --exit-code-mode)
  int gpurun_code = 0;  // the code in gpurun's own mode (the worker's code for a worker)
  std::string origin;   // "worker", "gpurun", or "" (success)
  std::string reason;   // "rank 1's own exit code", "--timeout expired", ...
};
ExitOrigin exit_origin(const FailureReport& report);

// --exit-code-mode torchrun: 0 stays 0, a usage error stays 2 (argparse's), anything else is 1.
int torchrun_exit_code(int gpurun_code);

// --summary-json for a run that ended before any worker ran (bad port, rendezvous): outcome
// "error", the exit code, origin "gpurun" and the message.
nlohmann::json error_summary_json(int exit_code, const std::string& message);
// Writes `j` to `path` (pretty); a warning on stderr when it cannot.
void write_summary_json(const std::string& path, const nlohmann::json& j);

// "2026-11-23_17:55:23" (local time, torchrun's timestamp_isoformat(sep="_")).
std::string torchrun_time(std::chrono::system_clock::time_point t);
std::string torchrun_time(long long epoch_seconds);

// torchrun's ChildFailedError block (without the leading blank line torchrun has).
std::string format_torchrun_block(const FailureReport& report);

// Everything gpurun prints on stderr when the run did not succeed (ends with '\n'):
// explanation, last lines, torchrun block; or the interrupt / timeout / spawn-error message.
std::string format_failure_summary(const FailureReport& report);
// The same without the last line (the exit code and its origin).
std::string format_failure_body(const FailureReport& report);

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

// The worker's error file (@record) holds a traceback: torchrun's block shows it, so the summary
// does not quote the same lines from its output again.
bool has_traceback(const FailureEntry& f);

// torchrun's `traceback :` value for one failure: the error file's traceback or message, the
// signal, or torchrun's "To enable traceback" hint.
std::string torchrun_message(const FailureEntry& f);
// When the failure happened (the error file's timestamp, else the worker's end), epoch seconds.
long long failure_epoch(const FailureEntry& f);

// The first line of the explanation for the root cause, without "gpurun: error: ".
std::string explain_failure(const FailureEntry& f, bool has_last_lines);

}  // namespace gpurun::launcher
