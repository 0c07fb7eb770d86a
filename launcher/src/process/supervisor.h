// Supervisor: the policy of a run. Owns what happens when: spawn a worker group, notice the first
// failure, stop the others (signal, grace, SIGKILL), forward signals gpurun receives, restart the
// group (--max-restarts), enforce --timeout, and compute gpurun's exit code. It does not own the
// OS work (ProcessRunner), the console/log files (OutputSink) or the worker plan (a callback).
#pragma once

#include <chrono>
#include <csignal>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "process/process_runner.h"

namespace gpurun::launcher {

// Receives worker output as it arrives (OutputMux implements it). Called on the supervisor's
// thread only.
class OutputSink {
 public:
  virtual ~OutputSink() = default;
  virtual void on_output(int local_rank, Stream stream, std::string_view data) = 0;
  virtual void on_closed(int local_rank, Stream stream) = 0;  // EOF: flush a partial line
  virtual void on_exit(int local_rank) { (void)local_rank; }  // the worker was reaped
};

struct SupervisorOptions {
  // Grace between the stop signal and SIGKILL: for a signal gpurun received from outside
  // (torchrun's 30 s: checkpoint-on-SIGTERM handlers rely on it), and for the teardown after a
  // worker failure or --timeout (short: a worker that dies on SIGTERM is gone at once anyway).
  milliseconds shutdown_timeout{30000};
  milliseconds failure_shutdown_timeout{5000};
  std::optional<milliseconds> run_timeout;  // --timeout, the whole run across attempts
  int max_restarts = 0;
  // Received by gpurun: forwarded to every worker group, then the run stops (grace, SIGKILL).
  std::vector<int> stop_signals = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};
  // Received by gpurun: forwarded to every worker group; the run goes on (Slurm preemption).
  std::vector<int> forward_signals = {SIGUSR1, SIGUSR2};
  // After SIGKILL: how long to wait for the kernel to reap before giving up on a process
  // (uninterruptible sleep). Never a hang.
  milliseconds kill_wait{10000};
  // Polled (every stop_poll) while workers run: once it returns true the attempt is stopped as
  // for a failure elsewhere (SIGTERM, grace, SIGKILL) and run() returns with stopped_by_request.
  // The elastic agent sets it when another node failed or was lost. Unset: never polled.
  std::function<bool()> stop_requested;
  milliseconds stop_poll{20};
};

struct PlannedWorker {
  int rank = 0;  // global rank (the request's id is the local rank)
  SpawnRequest request;
};

struct WorkerRecord {
  int restart_count = 0;
  int local_rank = 0;
  int rank = 0;
  pid_t pid = 0;
  std::optional<ExitStatus> status;  // none: never reaped (gave up after SIGKILL) or not started
  std::chrono::system_clock::time_point started{};
  std::chrono::system_clock::time_point ended{};
  bool stopped_by_gpurun = false;  // gpurun had sent it a stop signal before it exited
  bool sigkilled = false;          // gpurun had to send SIGKILL
  std::string exec_error;          // exec failed: "No such file or directory"
  std::string argv0;
};

enum class Outcome { kSucceeded, kWorkerFailed, kInterrupted, kTimedOut, kSpawnFailed };

struct SupervisorResult {
  Outcome outcome = Outcome::kSucceeded;
  int exit_code = 0;
  int restarts = 0;                           // restarts performed (attempts - 1)
  std::vector<WorkerRecord> workers;          // the last attempt, by local rank
  std::optional<WorkerRecord> first_failure;  // root cause of the last attempt's failure
  std::vector<WorkerRecord> other_failures;   // failed on their own, not stopped by gpurun
  int interrupt_signal = 0;                   // the stop signal gpurun received, if any
  std::vector<int> running_at_timeout;        // global ranks still running when --timeout hit
  std::vector<int> not_reaped;                // global ranks that outlived SIGKILL + kill_wait
  std::string spawn_error;
  bool stopped_by_request = false;  // stop_requested() stopped the workers (not their failure)
};

class Supervisor {
 public:
  // plan(restart_count) -> the workers of that attempt. Called once per attempt, right before
  // spawning (so it may also prepare per-attempt log directories). notice(line) receives
  // one-line progress messages ("gpurun: received SIGINT; ..."), without a newline.
  using PlanFn = std::function<std::vector<PlannedWorker>(int restart_count)>;
  using NoticeFn = std::function<void(const std::string&)>;

  Supervisor(ProcessRunner& runner, SupervisorOptions options, OutputSink* sink = nullptr,
             NoticeFn notice = {});

  // Runs attempts until success, a non-restartable failure, an interrupt or the timeout.
  // Throws only for internal errors (poll failing).
  SupervisorResult run(const PlanFn& plan);

 private:
  struct Attempt;
  void run_attempt(int restart_count, const std::vector<PlannedWorker>& plan, Attempt& a,
                   SupervisorResult& result);
  void begin_stop(Attempt& a, int sig, milliseconds grace);
  void kill_all(Attempt& a);
  void handle_signal(Attempt& a, int sig, SupervisorResult& result);
  void say(const std::string& line);

  ProcessRunner& runner_;
  SupervisorOptions options_;
  OutputSink* sink_;
  NoticeFn notice_;
  std::optional<Clock::time_point> run_deadline_;
  bool interrupted_ = false;
  bool timed_out_ = false;
};

}  // namespace gpurun::launcher
