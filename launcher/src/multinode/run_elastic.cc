// The elastic agent: --rdzv-backend c10d with --nnodes N or MIN:MAX (torchrun §3.2, §3.6).
//   1. The agent whose address is the endpoint's (or is_host=true) hosts the rendezvous store on
//      it; every agent connects (with retry and a progress line until join_timeout).
//   2. Per round (elastic_rdzv.h): join, get a group rank; group rank 0 hosts the workers' store
//      of the round on port 0 (MASTER_ADDR/PORT, TORCHELASTIC_USE_AGENT_STORE=True, so PyTorch's
//      env:// forms its process group there, fresh each round); run the workers (run_node) while
//      a monitor thread beats, checks the next node's heartbeat and waits on the round's end.
//   3. The round ends (one key, first writer wins): every node done (exit 0 everywhere), a worker
//      failure, a lost node (its last will on the store connection fires at once on kill -9;
//      heartbeats catch a hung agent), a joiner. Workers are stopped on every node and the next
//      round derives whether the job re-forms or ends (same message and exit code on all nodes).
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "cli/config.h"
#include "gpurun/common/error.h"
#include "gpurun/common/unique_fd.h"
#include "gpurun/rendezvous/bind_error.h"
#include "gpurun/rendezvous/job_access.h"
#include "gpurun/rendezvous/store_server.h"
#include "gpurun/rendezvous/tcp_store.h"
#include "multinode/elastic_rdzv.h"
#include "multinode/rdzv_backend.h"
#include "run/run_internal.h"

namespace gpurun::launcher {

namespace {

constexpr milliseconds kMonitorTick{200};       // how often the monitor can be told to quit
constexpr milliseconds kEtcdMonitorTick{1000};  // the same with --rdzv-backend etcd

void say(const std::string& text) { write_stderr(text); }

struct Endpoint {
  std::string host;
  int port = 29400;
  std::string str() const {
    return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port)
                                               : fmt::format("{}:{}", host, port);
  }
};

Endpoint parse_endpoint(const std::string& text) {
  Endpoint ep;
  std::string rest = text;
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    ep.host = rest.substr(1, close - 1);
    rest = close == std::string::npos ? "" : rest.substr(close + 1);
    if (!rest.empty() && rest.front() == ':') ep.port = std::stoi(rest.substr(1));
    return ep;
  }
  const auto colon = rest.rfind(':');
  if (colon != std::string::npos && rest.find(':') == colon) {
    ep.host = rest.substr(0, colon);
    ep.port = std::stoi(rest.substr(colon + 1));
  } else {
    ep.host = rest;
  }
  if (ep.host.empty()) ep.host = "localhost";
  return ep;
}

std::string local_hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

// The local address this host uses to reach `host` (a UDP connect sends nothing).
std::string source_address_to(const Endpoint& ep) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(ep.host.c_str(), std::to_string(ep.port).c_str(), &hints, &res) != 0) {
    return "";
  }
  std::string out;
  for (addrinfo* a = res; a && out.empty(); a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd || ::connect(fd.get(), a->ai_addr, a->ai_addrlen) != 0) continue;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) continue;
    char buf[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET) {
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr, buf, sizeof buf);
    } else {
      ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr, buf, sizeof buf);
    }
    out = buf;
  }
  ::freeaddrinfo(res);
  return out;
}

std::unique_ptr<rendezvous::TcpStore> connect_store(const Endpoint& ep, const RdzvSettings& s,
                                                    bool hosting) {
  const auto start = Clock::now();
  const auto deadline = deadline_after(s.join_timeout);
  for (;;) {
    rendezvous::TcpStoreOptions o;
    o.host = ep.host;
    o.port = static_cast<std::uint16_t>(ep.port);
    o.timeout = s.read_timeout;
    o.connect_timeout = std::max(milliseconds(1), std::min(remaining(deadline), s.progress_every));
    try {
      return std::make_unique<rendezvous::TcpStore>(o);
    } catch (const NetworkError& e) {
      const auto waited = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
      if (remaining(deadline) == milliseconds::zero() || hosting) {
        throw NetworkError(fmt::format(
            "cannot reach the rendezvous store at {} after {} (join_timeout {}): {}; start gpurun "
            "on the endpoint's host first (it hosts the store), or pass --rdzv-conf is_host=true "
            "to the agent that should",
            ep.str(), format_duration(waited), format_duration(s.join_timeout), e.what()));
      }
      say(fmt::format(
          "gpurun: waiting for the rendezvous store at {} (the agent on that host hosts it; "
          "{} waited, join_timeout {})",
          ep.str(), format_duration(waited), format_duration(s.join_timeout)));
    }
  }
}

// What this node's last will says when its store connection drops (c10d) or its lease ends (etcd).
RoundEnd will_end(const ElasticRendezvous& r, int group_rank) {
  const bool etcd = r.settings().backend == "etcd";
  RoundEnd e;
  e.kind = EndKind::kNodeLost;
  e.group_rank = group_rank;
  e.node = r.me().describe();
  e.reason =
      etcd ? fmt::format(
                 "its agent's etcd lease ended (agent killed or exited, or etcd not "
                 "reached for keep_alive_interval x keep_alive_max_attempt = {})",
                 format_duration(r.settings().keep_alive_interval *
                                 r.settings().keep_alive_max_attempt))
           : "its agent's connection to the rendezvous store dropped (agent killed or exited)";
  e.detected_by = etcd ? "etcd" : "the rendezvous store";
  return e;
}

// Runs beside the workers: heartbeats, the ring check, and the wait on the round's end.
class Monitor {
 public:
  explicit Monitor(ElasticRendezvous& rdzv) : rdzv_(rdzv), thread_([this] { loop(); }) {}
  ~Monitor() {
    quit_ = true;
    if (thread_.joinable()) thread_.join();
  }
  bool ended() const { return done_.load(); }
  // Waits for the end up to `timeout`; false if it did not come.
  bool wait(milliseconds timeout) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [this] { return done_.load(); });
  }
  std::optional<RoundEnd> end() {
    std::lock_guard lk(mu_);
    return end_;
  }
  std::string store_error() {
    std::lock_guard lk(mu_);
    return error_;
  }

 private:
  void loop() {
    auto next_beat = Clock::now() + rdzv_.settings().keep_alive_interval;
    try {
      while (!quit_) {
        // etcd: every wait is a watch request, so wait longer per turn (quitting is rarer).
        const milliseconds tick =
            rdzv_.settings().backend == "etcd" ? kEtcdMonitorTick : kMonitorTick;
        if (auto e = rdzv_.wait_end(std::min(tick, rdzv_.settings().keep_alive_interval))) {
          finish(e, "");
          return;
        }
        const auto now = Clock::now();
        if (now >= next_beat) {
          rdzv_.beat();
          next_beat = now + rdzv_.settings().keep_alive_interval;
          if (auto lost = rdzv_.check_peer(now)) rdzv_.end_round(*lost);
        }
      }
    } catch (const Error& e) {
      finish(std::nullopt, e.what());
      return;
    }
    finish(std::nullopt, "");
  }
  void finish(std::optional<RoundEnd> e, std::string error) {
    {
      std::lock_guard lk(mu_);
      end_ = std::move(e);
      error_ = std::move(error);
      done_ = true;
    }
    cv_.notify_all();
  }

  ElasticRendezvous& rdzv_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<RoundEnd> end_;
  std::string error_;
  std::atomic<bool> done_{false};
  std::atomic<bool> quit_{false};
  std::thread thread_;  // last: started after the members it uses
};

std::string describe_failure(const SupervisorResult& r) {
  if (!r.spawn_error.empty()) return r.spawn_error;
  if (!r.first_failure) return fmt::format("workers failed (exit code {})", r.exit_code);
  const WorkerRecord& w = *r.first_failure;
  return fmt::format("rank {} (local rank {}, pid {}) {}", w.rank, w.local_rank, w.pid,
                     !w.exec_error.empty() ? "could not be started: " + w.exec_error
                     : w.status            ? w.status->describe()
                                           : "failed");
}

// --rdzv-backend c10d: the store hosted by the agent on the endpoint; wills on a second connection.
class C10dBackend final : public RdzvBackend {
 public:
  C10dBackend(std::unique_ptr<rendezvous::StoreServerThread> server,
              std::unique_ptr<rendezvous::TcpStore> store,
              std::unique_ptr<rendezvous::TcpStore> will, milliseconds close_timeout)
      : server_(std::move(server)),
        store_(std::move(store)),
        will_(std::move(will)),
        close_timeout_(close_timeout) {}
  rendezvous::Store& store() override { return *store_; }
  void set_will(const std::string& target, const std::string& value) override {
    will_->set(std::string(rendezvous::kWillKeyPrefix) + target, value);
  }
  void cancel_will(const std::string& target) override {
    will_->delete_key(std::string(rendezvous::kWillKeyPrefix) + target);
  }
  bool hosts_store() const override { return server_ != nullptr; }
  void leave(ElasticRendezvous& rdzv, bool wait_for_others) override {
    // The store host stays until every node has read how the job ended (bounded).
    try {
      rdzv.say_bye();
      if (server_ && wait_for_others)
        rdzv.wait_byes(std::min(close_timeout_, milliseconds(10'000)));
    } catch (const Error&) {
    }
  }

 private:
  std::unique_ptr<rendezvous::StoreServerThread> server_;
  std::unique_ptr<rendezvous::TcpStore> store_, will_;
  milliseconds close_timeout_;
};

std::unique_ptr<RdzvBackend> make_c10d_backend(const LaunchConfig& cfg, const EnvMap& env,
                                               const Endpoint& ep, const RdzvSettings& s) {
  // The rendezvous store: hosted by the agent on the endpoint's address.
  std::unique_ptr<rendezvous::StoreServerThread> server;
  const bool inferred = !s.is_host.has_value();
  const bool try_host = s.is_host.value_or(!cfg.local_addr || *cfg.local_addr == ep.host);
  if (try_host) {
    rendezvous::StoreServerOptions so;
    rendezvous::apply_store_env(so, env);
    rendezvous::apply_job_allow(so, env, cfg.rdzv_allow);  // --rdzv-allow, else Slurm's nodes
    so.host = ep.host;
    so.port = static_cast<std::uint16_t>(ep.port);
    try {
      server = std::make_unique<rendezvous::StoreServerThread>(so);
      say(fmt::format("gpurun: hosting the rendezvous store of '{}' on {}", s.run_id, ep.str()));
    } catch (const BindError& e) {
      if (!inferred) {
        throw NetworkError(rendezvous::bind_failure_message(
            e, {.other = "is_host=true needs the endpoint to be a free address:port of this "
                         "host"}));
      }
      // Not this host's address, or another agent here hosts it: be a client.
    }
  }
  auto store = connect_store(ep, s, server != nullptr);
  auto will = connect_store(ep, s, true);
  return std::make_unique<C10dBackend>(std::move(server), std::move(store), std::move(will),
                                       s.close_timeout);
}

}  // namespace

int run_elastic(const LaunchConfig& cfg_in, const EnvMap& env, const NodeTools& tools) {
  LaunchConfig cfg = cfg_in;
  RdzvSettings s = rdzv_settings(cfg);
  const bool etcd = cfg.rdzv_backend == "etcd";
  Endpoint ep;
  if (etcd) {
    s.endpoint = cfg.rdzv_endpoint;  // HOST:2379[,HOST:2379...], checked by the etcd client
    std::string first = cfg.rdzv_endpoint.substr(0, cfg.rdzv_endpoint.find(','));
    if (first.rfind("http://", 0) == 0) first.erase(0, 7);
    try {
      ep = parse_endpoint(first);  // only to pick this node's address towards etcd
    } catch (const std::exception&) {
      ep.host = first;
    }
  } else {
    try {
      ep = parse_endpoint(cfg.rdzv_endpoint);
    } catch (const std::exception&) {
      throw ConfigError(fmt::format("--rdzv-endpoint '{}' is not HOST[:PORT]", cfg.rdzv_endpoint));
    }
    s.endpoint = ep.str();
  }

  auto lost = [&](const std::string& why) {
    return etcd ? fmt::format(
                      "lost etcd at {} ({}); a majority of the etcd members must be up and "
                      "reachable from this node",
                      s.endpoint, why)
                : fmt::format(
                      "lost the rendezvous store at {} ({}); the agent hosting it stopped or its "
                      "host is unreachable",
                      ep.str(), why);
  };

  const int nproc = resolve_nproc(cfg, tools.gpus, cpu_count());  // GPUs probed once, by run()

  RdzvNode me;
  me.addr = cfg.local_addr.value_or(source_address_to(ep));
  if (me.addr.empty()) me.addr = local_hostname();
  me.host = local_hostname();
  me.id = fmt::format("{}_{}_0", me.addr, ::getpid());
  me.nproc = nproc;

  // 1. The rendezvous state: the c10d store (hosted by the endpoint's agent) or etcd.
  std::unique_ptr<RdzvBackend> backend;
  try {
    backend =
        etcd ? make_etcd_backend(s, me, cfg.rdzv_endpoint) : make_c10d_backend(cfg, env, ep, s);
  } catch (const NetworkError& e) {
    say(fmt::format("gpurun: error: {}", e.what()));
    return static_cast<int>(ExitCode::kRendezvousFailed);
  }

  ElasticRendezvous* rdzv_ptr = nullptr;
  std::string will_key;  // the round end this node's will is registered on
  ElasticRendezvous rdzv(backend->store(), s, me, say, [&](const std::string& end_key) {
    will_key = end_key;
    backend->set_will(will_key, end_to_json(will_end(*rdzv_ptr, -1)));
  });
  rdzv_ptr = &rdzv;

  int code = 0;
  std::string own_summary;
  bool notes_printed = false;
  bool barrier_timed_out = false;  // then leave without waiting for the others' byes
  for (;;) {
    Round rd;
    try {
      rd = rdzv.next_round();
    } catch (const MixedLaunchers& m) {
      say(fmt::format("gpurun: error: {}", m.what()));
      try {
        if (backend->hosts_store()) {
          rdzv.wait_torchrun_seen(milliseconds(3000));
          // torchrun's agents re-read their state once a second: the store stays up long enough
          // for them to read the refusal (a grace for a foreign poller, not a synchronisation).
          std::this_thread::sleep_for(milliseconds(2500));
        }
      } catch (const Error&) {
      }
      return m.exit_code();
    } catch (const RdzvFatal& f) {
      if (!own_summary.empty()) say(own_summary);
      say(fmt::format("gpurun: error: the job stops on every node: {}", f.what()));
      code = f.exit_code();
      break;
    } catch (const StoreTimeout& e) {
      if (!will_key.empty()) backend->cancel_will(will_key);
      say(fmt::format("gpurun: error: {}", e.what()));
      code = static_cast<int>(ExitCode::kRendezvousFailed);
      break;
    } catch (const NetworkError& e) {
      say(fmt::format("gpurun: error: {}, so the job cannot re-form", lost(e.what())));
      return static_cast<int>(ExitCode::kRendezvousFailed);
    }
    backend->set_will(rdzv.end_key(), end_to_json(will_end(rdzv, rd.group_rank)));
    say(fmt::format(
        "gpurun: rendezvous '{}' round {}: this node ({}) is group rank {} of {}, global ranks "
        "{}..{} of {} (restart count {})",
        s.run_id, rd.number, me.describe(), rd.group_rank, rd.group_world_size, rd.base_global_rank,
        rd.base_global_rank + nproc - 1, rd.world_size, rd.restart_count));

    // 2. The workers' store of this round (fresh, so /worker/attempt_<k> keys never collide).
    std::unique_ptr<rendezvous::StoreServerThread> worker_store;
    std::string master_addr;
    std::uint16_t master_port = 0;
    try {
      if (rd.group_rank == 0) {
        rendezvous::StoreServerOptions so;
        rendezvous::apply_store_env(so, env);
        rendezvous::apply_job_allow(so, env, cfg.rdzv_allow);
        // The round's nodes are known: the workers' store accepts them (and that list) only.
        std::vector<std::string> members;
        for (int g = 0; g < rd.group_world_size; ++g) members.push_back(rdzv.node_of(g).addr);
        rendezvous::allow_members(so, members, fmt::format("the nodes of round {}", rd.number));
        so.host = me.addr;
        so.port = 0;
        worker_store = std::make_unique<rendezvous::StoreServerThread>(so);
        master_addr = me.addr;
        master_port = worker_store->port();
        rdzv.publish_master(master_addr, master_port);
      } else {
        std::tie(master_addr, master_port) = rdzv.wait_master();
      }
    } catch (const Error& e) {
      say(fmt::format("gpurun: error: round {}: {}", rd.number, e.what()));
      rdzv.end_round(rdzv.make_end(EndKind::kNodeLost, 0, e.what()));
      continue;
    }

    // 3. Workers, with the monitor beside them.
    SupervisorResult result;
    std::string summary;
    int rc = 0;
    {
      Monitor monitor(rdzv);
      NodeFacts nf;
      nf.group_rank = rd.group_rank;
      nf.group_world_size = rd.group_world_size;
      nf.base_global_rank = rd.base_global_rank;
      nf.world_size = rd.world_size;
      nf.external_store = true;
      nf.master_addr = master_addr;
      nf.master_port = master_port;
      nf.restart_count = rd.restart_count;
      nf.stop_requested = [&monitor] { return monitor.ended(); };
      nf.result_out = &result;
      nf.summary_out = &summary;
      nf.print_notes = !notes_printed;  // the OMP banner and other notes: once per agent
      notes_printed = true;
      rc = run_node(cfg, env, nf, tools);

      if (result.outcome == Outcome::kSucceeded) {
        rdzv.report_done();
        if (!monitor.ended()) {
          say(fmt::format(
              "gpurun: this node's workers are done; waiting for the other nodes (exit barrier, "
              "up to {}, --exit-barrier-timeout)",
              format_duration(cfg.exit_barrier_timeout)));
        }
      } else if (result.stopped_by_request) {
        // Another node's event: its end says what happened.
      } else if (result.outcome == Outcome::kInterrupted || result.outcome == Outcome::kTimedOut) {
        // A signal or --timeout on this node: leave; the will tells the others we are gone.
        if (!summary.empty()) say(summary);
        return rc;
      } else {
        own_summary = summary;
        const RoundEnd held = rdzv.end_round(rdzv.make_end(
            EndKind::kWorkerFailed, rd.group_rank, describe_failure(result), rc != 0 ? rc : 1));
        (void)held;
      }
      if (!monitor.wait(cfg.exit_barrier_timeout)) {
        std::vector<std::string> missing;
        try {
          missing = rdzv.not_done();
        } catch (const Error& e) {
          missing.push_back(fmt::format("unknown ({})", e.what()));
        }
        say(fmt::format(
            "gpurun: warning: exit barrier: timed out after {} (--exit-barrier-timeout) waiting "
            "for {} node{} of round {} to finish: {}; this node's workers succeeded, so it exits "
            "with {}{}; raise --exit-barrier-timeout if those nodes are just slower",
            format_duration(cfg.exit_barrier_timeout), missing.size(),
            missing.size() == 1 ? "" : "s", rd.number, fmt::join(missing, ", "), rc,
            backend->hosts_store() ? " (it hosts the rendezvous store: those nodes lose it)" : ""));
        // This node leaves having succeeded: its will must not end the others' round.
        backend->cancel_will(rdzv.end_key());
        code = rc;
        barrier_timed_out = true;
        break;
      }
      if (const std::string err = monitor.store_error(); !err.empty()) {
        say(fmt::format("gpurun: error: {}; stopping this node's workers", lost(err)));
        // The workers' own failure keeps its code; workers we stopped are not the cause.
        return result.first_failure && rc != 0 ? rc : static_cast<int>(ExitCode::kRendezvousFailed);
      }
      const RoundEnd end = *monitor.end();
      if (end.kind == EndKind::kOk) {
        code = rc;
        break;
      }
      say(fmt::format("gpurun: round {} ended: {}; {}", rd.number, end.describe(),
                      result.stopped_by_request ? "this node's workers were stopped; next round"
                                                : "next round"));
    }
  }
  backend->leave(rdzv, !barrier_timed_out);
  return code;
}

}  // namespace gpurun::launcher
