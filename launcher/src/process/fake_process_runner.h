// FakeProcessRunner: scripted children in virtual time, for Supervisor unit tests.
// "rank 2 exits 1 after 50 ms" is FakeChild{}.exit_after(50ms, ExitStatus::exited(1)).
// Time only moves inside wait(): it jumps to the next scripted event or to the deadline, so
// tests are instant and deterministic. Records every signal sent, with the virtual time.
#pragma once

#include <algorithm>
#include <csignal>
#include <functional>
#include <map>

#include "gpurun/common/error.h"
#include "process/process_runner.h"

namespace gpurun::launcher {

struct FakeChild {
  struct Output {
    milliseconds at;
    Stream stream;
    std::string data;
  };
  std::vector<Output> output;
  std::optional<std::pair<milliseconds, ExitStatus>> exit;  // none: runs until signalled
  bool ignore_term = false;    // ignores SIGTERM/SIGINT/SIGHUP/SIGQUIT (SIGKILL always works)
  milliseconds term_delay{0};  // time it takes to die after a terminating signal
  std::string exec_error;      // exec "fails" with this text: exits 127 at once
  milliseconds reap_delay{0};  // its exit is seen this long after it happened (a zombie meanwhile)

  FakeChild& exit_after(milliseconds at, ExitStatus st) {
    exit = std::make_pair(at, st);
    return *this;
  }
  FakeChild& print(milliseconds at, Stream s, std::string data) {
    output.push_back({at, s, std::move(data)});
    return *this;
  }
};

class FakeProcessRunner final : public ProcessRunner {
 public:
  struct SentSignal {
    milliseconds at;
    int id;
    int sig;
  };
  struct Spawned {
    milliseconds at;
    SpawnRequest request;
    pid_t pid;
  };

  // script(id, nth spawn of that id) -> how that child behaves. Default: exits 0 after 10 ms.
  std::function<FakeChild(int id, int attempt)> script = [](int, int) {
    return FakeChild{}.exit_after(milliseconds(10), ExitStatus::exited(0));
  };
  std::vector<std::pair<milliseconds, int>> incoming_signals;  // signals to gpurun at times
  std::vector<SentSignal> sent;
  std::vector<Spawned> spawned;
  std::vector<int> watched;
  int fail_spawn_of_id = -1;  // spawn() throws SpawnError for this id

  milliseconds elapsed() const { return std::chrono::duration_cast<milliseconds>(now_ - start_); }
  Clock::time_point now() const override { return now_; }

  pid_t spawn(const SpawnRequest& req) override {
    if (req.id == fail_spawn_of_id) throw SpawnError("fake: cannot fork");
    const int attempt = attempts_[req.id]++;
    FakeChild script_for = script(req.id, attempt);
    const pid_t pid = next_pid_++;
    Live live;
    live.id = req.id;
    live.pid = pid;
    const auto t0 = elapsed();
    if (!script_for.exec_error.empty()) {
      live.exit_at = t0;
      live.status = ExitStatus::exited(127);
      live.exec_error = script_for.exec_error;
    } else {
      for (auto& o : script_for.output) live.output.push_back({t0 + o.at, o.stream, o.data});
      if (script_for.exit) {
        live.exit_at = t0 + script_for.exit->first;
        live.status = script_for.exit->second;
      }
    }
    live.ignore_term = script_for.ignore_term;
    live.term_delay = script_for.term_delay;
    live.reap_delay = script_for.reap_delay;
    children_.emplace(pid, std::move(live));
    spawned.push_back({t0, req, pid});
    return pid;
  }

  void signal_group(pid_t pid, int sig) override {
    auto it = children_.find(pid);
    if (it == children_.end()) return;
    Live& c = it->second;
    sent.push_back({elapsed(), c.id, sig});
    const bool terminating =
        sig == SIGKILL ||
        ((sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT) && !c.ignore_term);
    if (!terminating) return;
    const auto die_at = elapsed() + (sig == SIGKILL ? milliseconds(0) : c.term_delay);
    if (!c.exit_at || *c.exit_at > die_at) {
      c.exit_at = die_at;
      c.reap_delay = milliseconds(0);
      c.status = ExitStatus::killed(sig);
    }
  }

  bool exiting(pid_t pid) const override {
    auto it = children_.find(pid);
    return it != children_.end() && it->second.exit_at && *it->second.exit_at <= elapsed();
  }

  void watch_signals(const std::vector<int>& signals) override {
    watched.insert(watched.end(), signals.begin(), signals.end());
  }

  std::vector<RunnerEvent> wait(Clock::time_point deadline) override {
    for (;;) {
      std::vector<RunnerEvent> events = due_events();
      if (!events.empty()) return events;
      auto next = next_event_time();
      if (!next && deadline == Clock::time_point::max()) {
        throw Error("FakeProcessRunner: wait() with no deadline and nothing scripted (a hang)");
      }
      const auto next_tp = next ? start_ + *next : Clock::time_point::max();
      if (next_tp > deadline) {
        now_ = std::max(now_, deadline);
        return {};
      }
      now_ = std::max(now_, next_tp);
    }
  }

 private:
  struct Live {
    int id = 0;
    pid_t pid = 0;
    std::vector<FakeChild::Output> output;
    std::optional<milliseconds> exit_at;
    ExitStatus status;
    std::string exec_error;
    bool ignore_term = false;
    milliseconds term_delay{0};
    milliseconds reap_delay{0};
  };

  std::optional<milliseconds> next_event_time() const {
    std::optional<milliseconds> best;
    auto consider = [&](milliseconds t) {
      if (!best || t < *best) best = t;
    };
    for (const auto& [pid, c] : children_) {
      for (const auto& o : c.output) consider(o.at);
      if (c.exit_at) consider(*c.exit_at + c.reap_delay);
    }
    for (const auto& s : incoming_signals) consider(s.first);
    return best;
  }

  std::vector<RunnerEvent> due_events() {
    std::vector<RunnerEvent> events;
    const auto t = elapsed();
    for (auto it = incoming_signals.begin(); it != incoming_signals.end();) {
      if (it->first <= t) {
        RunnerEvent ev;
        ev.kind = RunnerEvent::Kind::kSignal;
        ev.signo = it->second;
        events.push_back(ev);
        it = incoming_signals.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = children_.begin(); it != children_.end();) {
      Live& c = it->second;
      std::stable_sort(c.output.begin(), c.output.end(),
                       [](const auto& a, const auto& b) { return a.at < b.at; });
      const bool exiting = c.exit_at && *c.exit_at + c.reap_delay <= t;
      while (!c.output.empty() && (c.output.front().at <= t || exiting)) {
        if (exiting && c.output.front().at > *c.exit_at) break;  // never printed: it died first
        RunnerEvent ev;
        ev.kind = RunnerEvent::Kind::kOutput;
        ev.id = c.id;
        ev.pid = c.pid;
        ev.stream = c.output.front().stream;
        ev.data = c.output.front().data;
        events.push_back(std::move(ev));
        c.output.erase(c.output.begin());
      }
      if (exiting) {
        for (Stream s : {Stream::kStdout, Stream::kStderr}) {
          RunnerEvent ev;
          ev.kind = RunnerEvent::Kind::kClosed;
          ev.id = c.id;
          ev.pid = c.pid;
          ev.stream = s;
          events.push_back(ev);
        }
        RunnerEvent ev;
        ev.kind = RunnerEvent::Kind::kExited;
        ev.id = c.id;
        ev.pid = c.pid;
        ev.status = c.status;
        ev.exec_error = c.exec_error;
        events.push_back(std::move(ev));
        it = children_.erase(it);
      } else {
        ++it;
      }
    }
    return events;
  }

  Clock::time_point start_ = Clock::now();
  Clock::time_point now_ = start_;
  pid_t next_pid_ = 1000;
  std::map<int, int> attempts_;
  std::map<pid_t, Live> children_;
};

}  // namespace gpurun::launcher
