#include "process/supervisor.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "gpurun/common/error.h"
#include "gpurun/common/int_ranges.h"

namespace gpurun::launcher {

namespace {
bool contains(const std::vector<int>& v, int x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}
}  // namespace

struct Supervisor::Attempt {
  std::vector<WorkerRecord> workers;
  std::map<pid_t, std::size_t> running;  // pid -> index in workers
  std::optional<std::size_t> first_failure;
  std::vector<std::size_t> other_failures;
  bool stopping = false;
  bool killed = false;
  Clock::time_point stop_deadline = Clock::time_point::max();
  Clock::time_point kill_deadline = Clock::time_point::max();
  int stop_signal = SIGTERM;
  milliseconds grace{0};  // of the stop in progress
};

Supervisor::Supervisor(ProcessRunner& runner, SupervisorOptions options, OutputSink* sink,
                       NoticeFn notice)
    : runner_(runner), options_(std::move(options)), sink_(sink), notice_(std::move(notice)) {}

void Supervisor::say(const std::string& line) {
  if (notice_) notice_(line);
}

SupervisorResult Supervisor::run(const PlanFn& plan) {
  std::vector<int> watched = options_.stop_signals;
  for (int s : options_.forward_signals) {
    if (!contains(watched, s)) watched.push_back(s);
  }
  runner_.watch_signals(watched);
  if (options_.run_timeout) run_deadline_ = runner_.now() + *options_.run_timeout;

  SupervisorResult result;
  for (int restart_count = 0;; ++restart_count) {
    Attempt a;
    result = SupervisorResult{};
    result.restarts = restart_count;
    const auto workers = plan(restart_count);
    run_attempt(restart_count, workers, a, result);

    result.workers = a.workers;
    std::sort(result.workers.begin(), result.workers.end(),
              [](const auto& x, const auto& y) { return x.local_rank < y.local_rank; });
    if (a.first_failure) result.first_failure = a.workers[*a.first_failure];
    for (auto i : a.other_failures) result.other_failures.push_back(a.workers[i]);

    if (result.stopped_by_request && !a.first_failure && result.spawn_error.empty()) {
      result.outcome = Outcome::kInterrupted;
      result.exit_code = static_cast<int>(ExitCode::kWorkerFailed);
      return result;
    }
    if (!result.spawn_error.empty()) {
      result.outcome = Outcome::kSpawnFailed;
      result.exit_code = static_cast<int>(ExitCode::kWorkerFailed);
      return result;
    }
    if (a.first_failure) {
      const WorkerRecord& f = a.workers[*a.first_failure];
      const int code = f.status ? f.status->as_exit_code() : 1;
      result.outcome = Outcome::kWorkerFailed;
      result.exit_code = code == 0 ? 1 : code;
      const bool restartable = !interrupted_ && !timed_out_ && f.exec_error.empty() &&
                               restart_count < options_.max_restarts;
      if (restartable) {
        say(fmt::format("gpurun: rank {} (pid {}) {}; restarting all {} workers (restart {} of {})",
                        f.rank, f.pid, f.status ? f.status->describe() : "failed", a.workers.size(),
                        restart_count + 1, options_.max_restarts));
        continue;
      }
      return result;
    }
    if (timed_out_) {
      result.outcome = Outcome::kTimedOut;
      result.exit_code = static_cast<int>(ExitCode::kTimeout);
      return result;
    }
    if (interrupted_) {
      result.outcome = Outcome::kInterrupted;
      result.exit_code = 128 + result.interrupt_signal;
      return result;
    }
    result.outcome = Outcome::kSucceeded;
    result.exit_code = 0;
    return result;
  }
}

void Supervisor::begin_stop(Attempt& a, int sig, milliseconds grace) {
  if (a.stopping) return;
  a.stopping = true;
  a.stop_signal = sig;
  a.grace = grace;
  for (auto& [pid, idx] : a.running) {
    // One that has already exited (or is exiting) ends on its own: if it failed, it is a
    // failure of its own (torchrun lists it), not one gpurun terminated.
    if (!runner_.exiting(pid)) a.workers[idx].stopped_by_gpurun = true;
    runner_.signal_group(pid, sig);
  }
  if (grace <= milliseconds::zero()) {
    kill_all(a);
  } else {
    a.stop_deadline = runner_.now() + grace;
  }
}

void Supervisor::kill_all(Attempt& a) {
  if (a.killed) return;
  a.stopping = true;
  a.killed = true;
  for (auto& [pid, idx] : a.running) {
    if (!runner_.exiting(pid)) {
      a.workers[idx].stopped_by_gpurun = true;
      a.workers[idx].sigkilled = true;
    }
    runner_.signal_group(pid, SIGKILL);
  }
  a.kill_deadline = runner_.now() + options_.kill_wait;
}

void Supervisor::handle_signal(Attempt& a, int sig, SupervisorResult& result) {
  if (contains(options_.stop_signals, sig)) {
    const bool second = interrupted_ || a.stopping;
    if (!interrupted_) result.interrupt_signal = sig;
    interrupted_ = true;
    if (a.running.empty()) return;
    if (second) {
      say(fmt::format("gpurun: received {} again; killing {} workers now (SIGKILL)",
                      signal_name(sig), a.running.size()));
      kill_all(a);
      return;
    }
    say(fmt::format(
        "gpurun: received {}; forwarding it to {} workers (SIGKILL in {}; send it "
        "again to kill now)",
        signal_name(sig), a.running.size(), format_duration(options_.shutdown_timeout)));
    begin_stop(a, sig, options_.shutdown_timeout);
    return;
  }
  // Forward-only (SIGUSR1/SIGUSR2 by default): workers decide what to do.
  for (auto& [pid, idx] : a.running) runner_.signal_group(pid, sig);
}

void Supervisor::run_attempt(int restart_count, const std::vector<PlannedWorker>& plan, Attempt& a,
                             SupervisorResult& result) {
  a.workers.reserve(plan.size());
  for (const auto& w : plan) {
    WorkerRecord rec;
    rec.restart_count = restart_count;
    rec.local_rank = w.request.id;
    rec.rank = w.rank;
    rec.argv0 = w.request.argv.empty() ? "" : w.request.argv[0];
    rec.started = std::chrono::system_clock::now();
    try {
      rec.pid = runner_.spawn(w.request);
    } catch (const SpawnError& e) {
      result.spawn_error = fmt::format("cannot start rank {}: {}", w.rank, e.what());
      a.workers.push_back(rec);
      begin_stop(a, SIGTERM, options_.failure_shutdown_timeout);
      break;
    }
    a.running.emplace(rec.pid, a.workers.size());
    a.workers.push_back(rec);
  }
  if (interrupted_ || timed_out_) {  // a signal between attempts
    begin_stop(a, SIGTERM,
               interrupted_ ? options_.shutdown_timeout : options_.failure_shutdown_timeout);
  }
  if (!a.stopping && options_.stop_requested && options_.stop_requested()) {
    result.stopped_by_request = true;
    begin_stop(a, SIGTERM, options_.failure_shutdown_timeout);
  }

  while (!a.running.empty()) {
    Clock::time_point deadline = Clock::time_point::max();
    if (run_deadline_ && !timed_out_) deadline = std::min(deadline, *run_deadline_);
    if (a.stopping && !a.killed) deadline = std::min(deadline, a.stop_deadline);
    if (a.killed) deadline = std::min(deadline, a.kill_deadline);
    if (options_.stop_requested && !a.stopping) {
      deadline = std::min(deadline, runner_.now() + options_.stop_poll);
    }

    // Exits seen in one wake-up happened before we could react: none of them was caused by
    // our stop signal, so the stop is sent after the whole batch is recorded.
    bool stop_now = false;
    for (auto& ev : runner_.wait(deadline)) {
      switch (ev.kind) {
        case RunnerEvent::Kind::kOutput:
          if (sink_) sink_->on_output(ev.id, ev.stream, ev.data);
          break;
        case RunnerEvent::Kind::kClosed:
          if (sink_) sink_->on_closed(ev.id, ev.stream);
          break;
        case RunnerEvent::Kind::kSignal:
          handle_signal(a, ev.signo, result);
          break;
        case RunnerEvent::Kind::kExited: {
          auto it = a.running.find(ev.pid);
          if (it == a.running.end()) break;  // a previous attempt's straggler
          const std::size_t idx = it->second;
          a.running.erase(it);
          WorkerRecord& w = a.workers[idx];
          w.status = ev.status;
          w.exec_error = ev.exec_error;
          w.ended = std::chrono::system_clock::now();
          if (sink_) sink_->on_exit(w.local_rank);
          if (w.status->success()) break;
          if (w.stopped_by_gpurun) break;  // what we asked for, not a failure of its own
          if (!a.first_failure) {
            a.first_failure = idx;
            const std::size_t others = a.running.size();
            if (others > 0 && !a.stopping) {
              say(fmt::format("gpurun: rank {} (pid {}) {}; stopping the other {} worker{}", w.rank,
                              w.pid,
                              w.exec_error.empty() ? w.status->describe() : "could not be started",
                              others, others == 1 ? "" : "s"));
            }
            stop_now = true;
          } else {
            a.other_failures.push_back(idx);
          }
          break;
        }
      }
    }

    if (stop_now) begin_stop(a, SIGTERM, options_.failure_shutdown_timeout);
    if (!a.stopping && options_.stop_requested && options_.stop_requested()) {
      result.stopped_by_request = true;
      begin_stop(a, SIGTERM, options_.failure_shutdown_timeout);
    }

    const auto now = runner_.now();
    if (run_deadline_ && !timed_out_ && now >= *run_deadline_ && !a.running.empty()) {
      timed_out_ = true;
      for (auto& [pid, idx] : a.running) result.running_at_timeout.push_back(a.workers[idx].rank);
      std::sort(result.running_at_timeout.begin(), result.running_at_timeout.end());
      begin_stop(a, SIGTERM, options_.failure_shutdown_timeout);
    }
    if (a.stopping && !a.killed && now >= a.stop_deadline && !a.running.empty()) {
      std::vector<int> ranks;
      for (auto& [pid, idx] : a.running) ranks.push_back(a.workers[idx].rank);
      say(fmt::format("gpurun: rank{} {} still running {} after {}; sending SIGKILL",
                      ranks.size() == 1 ? "" : "s", format_rank_list(ranks),
                      format_duration(a.grace), signal_name(a.stop_signal)));
      kill_all(a);
    }
    if (a.killed && now >= a.kill_deadline && !a.running.empty()) {
      for (auto& [pid, idx] : a.running) result.not_reaped.push_back(a.workers[idx].rank);
      say(
          fmt::format("gpurun: ranks {} did not exit {} after SIGKILL (uninterruptible sleep?); "
                      "giving up on them",
                      format_rank_list(result.not_reaped), format_duration(options_.kill_wait)));
      a.running.clear();
    }
  }
}

}  // namespace gpurun::launcher
