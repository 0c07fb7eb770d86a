#include "output/failure_summary.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gpurun/common/duration.h"
#include "gpurun/common/error.h"
#include "gpurun/common/int_ranges.h"

namespace gpurun::launcher {

namespace {

constexpr const char* kNoTraceback =
    "To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html";

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = s.find('\n', start);
    out.push_back(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  std::size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
  return s;
}

std::string format_one(std::size_t idx, const FailureEntry& f, const std::string& host) {
  const int exitcode = f.worker.status ? f.worker.status->torchrun_exitcode() : -1;
  return fmt::format(
      "[{}]:\n"
      "  time      : {}\n"
      "  host      : {}\n"
      "  rank      : {} (local_rank: {})\n"
      "  exitcode  : {} (pid: {})\n"
      "  error_file: {}\n"
      "  traceback : {}",
      idx, torchrun_time(failure_epoch(f)), host, f.worker.rank, f.worker.local_rank, exitcode,
      f.worker.pid, f.error_file.present ? f.error_file.path : "<N/A>", torchrun_message(f));
}

}  // namespace

// The `traceback :` value torchrun shows for one failure.
std::string torchrun_message(const FailureEntry& f) {
  const ErrorFile& ef = f.error_file;
  if (ef.present && ef.problem.empty()) {
    std::string msg = !ef.traceback.empty() ? ef.traceback
                      : !ef.message.empty() ? ef.message
                                            : "<N/A>";
    return replace_all(msg, "\n", "\n  ");
  }
  const auto& st = f.worker.status;
  if (st && st->signaled) {
    return fmt::format("Signal {} ({}) received by PID {}", st->signal, signal_name(st->signal),
                       f.worker.pid);
  }
  return kNoTraceback;
}

long long failure_epoch(const FailureEntry& f) {
  if (f.error_file.present && f.error_file.timestamp) return *f.error_file.timestamp;
  const auto t = f.worker.ended.time_since_epoch().count() != 0 ? f.worker.ended : f.worker.started;
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

bool has_traceback(const FailureEntry& f) {
  return f.error_file.present && f.error_file.problem.empty() && !f.error_file.traceback.empty();
}

std::string torchrun_time(long long epoch_seconds) {
  const std::time_t t = static_cast<std::time_t>(epoch_seconds);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d_%H:%M:%S", &tm);
  return buf;
}

std::string torchrun_time(std::chrono::system_clock::time_point t) {
  return torchrun_time(
      std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count());
}

std::string format_torchrun_block(const FailureReport& report) {
  if (!report.root) return "";
  std::vector<const FailureEntry*> all;
  all.push_back(&*report.root);
  for (const auto& o : report.others) all.push_back(&o);
  std::sort(all.begin(), all.end(), [](const FailureEntry* a, const FailureEntry* b) {
    return a->worker.rank < b->worker.rank;
  });
  const std::string title = report.entrypoint + " FAILED";
  std::size_t width = title.size();
  std::string root_fmt;
  std::vector<std::string> others;
  for (std::size_t i = 0; i < all.size(); ++i) {
    std::string one = format_one(i, *all[i], report.host);
    for (const auto& line : split_lines(one)) width = std::max(width, line.size());
    if (all[i] == &*report.root) {
      root_fmt = std::move(one);
    } else {
      others.push_back(std::move(one));
    }
  }
  width = std::min<std::size_t>(width, 60);
  const std::string border(width, '=');
  const std::string section(width, '-');
  std::string other_fmt;
  if (others.empty()) {
    other_fmt = "  <NO_OTHER_FAILURES>";
  } else {
    for (std::size_t i = 0; i < others.size(); ++i) other_fmt += (i ? "\n" : "") + others[i];
  }
  return fmt::format(
      "{}\n{}\n{}\nFailures:\n{}\n{}\nRoot Cause (first observed failure):\n{}\n{}\n", border,
      title, section, other_fmt, section, root_fmt, border);
}

std::string explain_failure(const FailureEntry& f, bool has_last_lines) {
  const WorkerRecord& w = f.worker;
  if (!w.exec_error.empty()) {
    if (w.exec_error.find("Argument list too long") != std::string::npos) {  // E2BIG
      return fmt::format(
          "cannot run '{}': {}: its arguments and environment together pass the kernel's limit "
          "(getconf ARG_MAX; one string at most 128 KiB); pass large data in a file instead",
          w.argv0, w.exec_error);
    }
    if (!f.python_program.empty()) {
      return fmt::format(
          "cannot run the Python interpreter '{}' for '{}': {}; install Python or point "
          "PYTHON_EXEC at one (if '{}' is not a Python program, pass --no-python)",
          w.argv0, f.python_program, w.exec_error, f.python_program);
    }
    std::string hint = "check the path";
    std::error_code ec;
    if (std::filesystem::is_directory(w.argv0, ec)) {
      hint = "it is a directory, not a program";
    } else if (w.exec_error.find("Permission denied") != std::string::npos) {
      hint = "check that it is executable (chmod +x) and not a directory";
    } else if (w.exec_error.find("Exec format error") != std::string::npos) {
      hint = "it is not a program for this machine (another architecture?)";
    }
    return fmt::format("cannot run '{}': {}; {}", w.argv0, w.exec_error, hint);
  }
  std::string what;
  if (!w.status) {
    what = "did not exit";
  } else if (w.status->signaled) {
    what = fmt::format("killed by {} (exit {})", signal_name(w.status->signal),
                       w.status->as_exit_code());
  } else {
    what = w.status->describe();
  }
  const char* where = has_traceback(f) ? "its traceback (from its error file) is below"
                      : has_last_lines ? "see its last output below"
                                       : "its output (if any) is above";
  return fmt::format("rank {} (pid {}) {}; {}", w.rank, w.pid, what, where);
}

int torchrun_exit_code(int gpurun_code) {
  if (gpurun_code == 0 || gpurun_code == static_cast<int>(ExitCode::kUsage)) return gpurun_code;
  return 1;
}

ExitOrigin exit_origin(const FailureReport& report) {
  const SupervisorResult& r = report.result;
  ExitOrigin o;
  o.gpurun_code = r.exit_code;
  switch (r.outcome) {
    case Outcome::kSucceeded:
      break;
    case Outcome::kSpawnFailed:
      o.origin = "gpurun";
      o.reason = "it could not start a worker";
      break;
    case Outcome::kInterrupted:
      o.origin = "gpurun";
      o.reason = fmt::format("it was stopped by {} (128+{})", signal_name(r.interrupt_signal),
                             r.interrupt_signal);
      break;
    case Outcome::kTimedOut:
      o.origin = "gpurun";
      o.reason = "--timeout expired";
      break;
    case Outcome::kWorkerFailed: {
      const WorkerRecord* w = report.root       ? &report.root->worker
                              : r.first_failure ? &*r.first_failure
                                                : nullptr;
      if (w == nullptr || !w->status) {
        o.origin = "gpurun";
        o.reason = "a worker failed without an exit status";
      } else if (!w->exec_error.empty()) {
        o.origin = "gpurun";
        o.reason = fmt::format("rank {} could not be executed", w->rank);
      } else if (w->status->signaled) {
        o.origin = "worker";
        o.reason = fmt::format("rank {} was killed by {} (128+{})", w->rank,
                               signal_name(w->status->signal), w->status->signal);
      } else {
        o.origin = "worker";
        o.reason = fmt::format("rank {}'s own exit code", w->rank);
      }
      break;
    }
  }
  o.exit_code = report.torchrun_exit_codes ? torchrun_exit_code(o.gpurun_code) : o.gpurun_code;
  return o;
}

namespace {

// The last line of a summary: the code and where it comes from.
std::string exit_line(const FailureReport& report) {
  const ExitOrigin o = exit_origin(report);
  if (o.origin.empty()) return "";
  const char* from = o.origin == "worker" ? "the worker" : "gpurun";
  if (o.exit_code != o.gpurun_code) {
    return fmt::format("gpurun: exit code {} (--exit-code-mode torchrun; {} from {}: {})\n",
                       o.exit_code, o.gpurun_code, from, o.reason);
  }
  return fmt::format("gpurun: exit code {}, from {}: {}\n", o.exit_code, from, o.reason);
}

}  // namespace

std::string format_failure_summary(const FailureReport& report) {
  const std::string body = format_failure_body(report);
  return body.empty() ? body : body + exit_line(report);
}

std::string format_failure_body(const FailureReport& report) {
  const SupervisorResult& r = report.result;
  std::string out;
  switch (r.outcome) {
    case Outcome::kSucceeded:
      return "";
    case Outcome::kSpawnFailed:
      return fmt::format("gpurun: error: {}\n", r.spawn_error);
    case Outcome::kInterrupted:
      out = fmt::format("gpurun: interrupted by {}; all {} workers stopped (exit {})\n",
                        signal_name(r.interrupt_signal), r.workers.size(),
                        exit_origin(report).exit_code);
      break;
    case Outcome::kTimedOut:
      out = fmt::format(
          "gpurun: error: the run timed out (--timeout) with rank{} {} still running; they were "
          "stopped. Raise --timeout, or look for a hang (a collective waiting for a rank that "
          "died?)\n",
          r.running_at_timeout.size() == 1 ? "" : "s", format_rank_list(r.running_at_timeout));
      break;
    case Outcome::kWorkerFailed:
      break;
  }
  if (report.root) {
    const FailureEntry& f = *report.root;
    if (!f.worker.exec_error.empty()) {
      // All ranks fail the same way: one line says it all.
      return out + "gpurun: error: " + explain_failure(f, false) + "\n";
    }
    out += "gpurun: error: " + explain_failure(f, !f.last_lines.empty()) + "\n";
    // An @record traceback is in torchrun's block below: quoting the same lines again here
    // would print it a third time (the worker printed it too).
    if (!f.last_lines.empty() && !has_traceback(f)) {
      out += fmt::format("gpurun: last {} line{} of rank {}'s {}:\n", f.last_lines.size(),
                         f.last_lines.size() == 1 ? "" : "s", f.worker.rank, f.last_lines_from);
      for (const auto& l : f.last_lines) out += "  | " + l + "\n";
    }
    if (!f.error_file.problem.empty()) {
      out += fmt::format("gpurun: warning: error file {} is {}\n", f.error_file.path,
                         f.error_file.problem);
    }
    std::vector<int> stopped;
    for (const auto& w : r.workers) {
      if (w.stopped_by_gpurun) stopped.push_back(w.rank);
    }
    if (!stopped.empty()) {
      std::sort(stopped.begin(), stopped.end());
      out += fmt::format("gpurun: stopped the other rank{} {} after the failure\n",
                         stopped.size() == 1 ? "" : "s", format_rank_list(stopped));
    }
    if (!report.others.empty()) {
      std::vector<int> also;
      for (const auto& o : report.others) also.push_back(o.worker.rank);
      std::sort(also.begin(), also.end());
      out += fmt::format(
          "gpurun: rank{} {} failed on {} own too, before gpurun stopped anything (listed under "
          "Failures below)\n",
          also.size() == 1 ? "" : "s", format_rank_list(also), also.size() == 1 ? "its" : "their");
    }
    if (r.restarts > 0) {
      out += fmt::format("gpurun: gave up after {} restart{} (--max-restarts {})\n", r.restarts,
                         r.restarts == 1 ? "" : "s", r.restarts);
    }
    out += format_torchrun_block(report);
  }
  if (!r.not_reaped.empty()) {
    out += fmt::format("gpurun: warning: rank(s) {} did not exit after SIGKILL\n",
                       format_rank_list(r.not_reaped));
  }
  return out;
}

}  // namespace gpurun::launcher
