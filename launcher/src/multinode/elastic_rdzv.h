// The c10d-style elastic rendezvous as a state machine over the Store interface (no sockets, no
// processes: unit-tested on a MemoryStore with threads as agents; the agent loop that runs workers
// around it is run_elastic.cc).
//
// Rounds, all keys under "gpurun.rdzv.<run_id>/":
//   r<R>/open      {restart_count, expected, fatal, message, exit_code}: round R may be joined.
//                  Derived deterministically from round R-1's end, written with compare_set by
//                  whoever sees that end first (every writer writes the same bytes).
//   r<R>/joined    ticket counter: add(1) = this node's ticket t (1-based, join order).
//   r<R>/node/<t>  the node's JSON (id, addr, host, nproc, previous group rank).
//   r<R>/assign/<t> [group rank, base global rank, world size], written (with r<R>/rank/<g> =
//                  the node) by the node holding the last ticket: each node reads one key.
//   r<R>/closed    C = how many tickets are in the round, set once by compare_set: at once when
//                  t reaches max (or the expected survivors of a re-form), else when last_call
//                  expires after min is reached. Tickets > C wait for the next round; a late
//                  joiner below max ends the round so that the job re-forms with it.
//   r<R>/end       how the round ended, first writer wins (compare_set; a dead agent's last will
//                  on the store connection writes it too): ok (the last node done), a worker
//                  failure, a lost node, a joiner. Every agent of the round waits on this one key.
//   r<R>/done      counter of nodes whose workers succeeded; the last one writes end = ok.
//   r<R>/done/<g>  set by group rank g when its workers succeeded (names the exit barrier's
//                  missing nodes).
//   r<R>/master    {addr, port} of the worker store that group rank 0 hosts for this round.
//   r<R>/hb/<g>    heartbeat counter of group rank g; node g checks node g+1 (a ring).
// Group ranks: nodes that were in the previous round keep their order; new nodes follow by
// address. Global ranks are node-major prefix sums of nproc, so nproc may differ per node.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gpurun/common/duration.h"
#include "gpurun/common/error.h"
#include "gpurun/rendezvous/store.h"

namespace gpurun::launcher {

struct LaunchConfig;

struct RdzvSettings {
  std::string run_id = "none";
  std::string endpoint;          // "host:port", for messages
  std::string backend = "c10d";  // or "etcd"
  int min_nodes = 1;
  int max_nodes = 1;
  int max_restarts = 0;
  milliseconds join_timeout{600'000};
  milliseconds last_call_timeout{30'000};
  milliseconds close_timeout{30'000};
  milliseconds read_timeout{60'000};
  milliseconds keep_alive_interval{5'000};
  int keep_alive_max_attempt = 3;
  std::optional<bool> is_host;         // unset: inferred (the endpoint is an address of this host)
  milliseconds progress_every{5'000};  // how often a waiting agent says what it waits for
};

// --rdzv-conf (torchrun's keys, seconds or durations) + --nnodes/--max-restarts/--rdzv-id.
// Throws ConfigError for a malformed value or an unknown key.
RdzvSettings rdzv_settings(const LaunchConfig& cfg);

struct RdzvNode {
  std::string id;    // unique per agent process: "<addr>_<pid>_<n>"
  std::string addr;  // how other nodes reach it (MASTER_ADDR when it is group rank 0)
  std::string host;  // hostname, for messages
  int nproc = 1;
  int prev_group_rank = -1;  // its group rank in the round before (-1: new)
  int ticket = 0;

  std::string describe() const;  // "host (addr)"
};

enum class EndKind { kOk, kWorkerFailed, kNodeLost, kNodeJoined };

struct RoundEnd {
  EndKind kind = EndKind::kOk;
  int group_rank = -1;      // the node it is about (-1: a joiner, or none)
  std::string node;         // RdzvNode::describe() of that node
  std::string reason;       // "rank 3 exited with code 1", "agent connection dropped", ...
  int exit_code = 0;        // kWorkerFailed: the worker's code
  std::string detected_by;  // describe() of the agent that wrote it ("" for a will)
  std::string at;           // UTC time it was written, "2026-12-03T23:59:59Z"

  std::string describe() const;  // one line for logs
};
std::string end_to_json(const RoundEnd& e);
RoundEnd end_from_json(const std::string& text);

struct RoundOpen {
  int restart_count = 0;
  int expected = 0;  // nodes expected back (a re-form closes as soon as they are in); 0 = unknown
  bool fatal = false;
  std::string message;  // fatal: why the job ends
  int exit_code = 0;    // fatal: what every agent exits with
};
// The next round after `end` of a round with `closed` nodes and `waiting` nodes that came after
// it closed (spares, late joiners). Pure. Whoever writes r<R+1>/open first decides (compare_set).
RoundOpen derive_next_open(const RoundOpen& prev, int closed, const RoundEnd& end,
                           const RdzvSettings& s, int waiting = 0);

struct Round {
  int number = 0;
  int restart_count = 0;
  int group_rank = 0;
  int group_world_size = 0;
  int base_global_rank = 0;
  int world_size = 0;
};

// The job cannot go on (restarts exhausted, too few nodes): every agent exits with exit_code.
class RdzvFatal : public Error {
 public:
  RdzvFatal(const std::string& what, int exit_code) : Error(what), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// A torchrun agent wrote its c10d rendezvous key (torch.rendezvous.<run_id>) in this job's store:
// the two protocols cannot form one job. what() is the whole message (exit code 3).
class MixedLaunchers : public RdzvFatal {
 public:
  using RdzvFatal::RdzvFatal;
};

class ElasticRendezvous {
 public:
  using Progress = std::function<void(const std::string&)>;
  // on_ticket(end_key): this node may be in round R from now on: the agent registers its last
  // will on that key before anything else can block.
  using OnTicket = std::function<void(const std::string& end_key)>;

  ElasticRendezvous(rendezvous::Store& store, RdzvSettings settings, RdzvNode me,
                    Progress progress = {}, OnTicket on_ticket = {});

  // Joins the open round (the first call) or the one after the current round's end, and returns
  // once this node is a participant of a closed round. Throws RdzvFatal when the job is over,
  // StoreTimeout naming the missing nodes after join_timeout, NetworkError if the store is gone.
  Round next_round();

  // The current round's end, if any (never blocks).
  std::optional<RoundEnd> peek_end();
  // Blocks up to `timeout` for the current round's end.
  std::optional<RoundEnd> wait_end(milliseconds timeout);
  // Ends the current round with `end` unless it ended already; returns the end that holds.
  RoundEnd end_round(RoundEnd end);
  // This node's workers all succeeded; the last node to say so ends the round ok.
  void report_done();
  // The nodes of the current round that have not reported done, as "host (addr) (group rank g)"
  // (for the exit barrier's message; one store read per node).
  std::vector<std::string> not_done();

  // Leaving: counted per round so the store host can stay until every node read the outcome.
  void say_bye();
  // Throws MixedLaunchers if torchrun's rendezvous key is in the store; first overwrites it with
  // a state whose unpickling fails naming the mix-up (torch's agents re-read it within ~1 s and
  // stop with that message instead of waiting join_timeout). One store read.
  void refuse_torchrun();
  // The agent hosting the store, after MixedLaunchers: waits (bounded) until every gpurun node
  // that joined has seen it too, so that they report the mix-up, not a lost store.
  void wait_torchrun_seen(milliseconds timeout);
  // The store host: waits (bounded) until every live node of the last round said bye.
  void wait_byes(milliseconds timeout);

  void publish_master(const std::string& addr, std::uint16_t port);
  std::pair<std::string, std::uint16_t> wait_master();

  void beat();
  // Node g checks node g+1's heartbeat; returns the end to write when it stopped beating.
  std::optional<RoundEnd> check_peer(Clock::time_point now);

  // The node at `group_rank` in the current round (one store read; empty if unknown).
  RdzvNode node_of(int group_rank);

  std::string end_key() const { return key(round_, "end"); }
  std::string key(int round, const std::string& name) const;
  const RdzvNode& me() const { return me_; }
  const Round& current() const { return cur_; }
  const RdzvSettings& settings() const { return s_; }
  RoundEnd make_end(EndKind kind, int group_rank, const std::string& reason, int exit_code = 0);

 private:
  int read_round_pointer();
  RoundOpen open_round(int r);  // waits for r<r>/open (bounded), parses it
  int wait_closed(int r, int ticket, const RoundOpen& open);
  int try_close(int r);
  // Reads every node of round r, sorts them and writes r<r>/rank/<g> (the node) and
  // r<r>/assign/<ticket> ([group rank, base global rank, world size]). Returns 0, or the ticket
  // of a node that never registered (within read_timeout).
  int assign_ranks(int r, int closed);
  void open_next(int r, const RoundOpen& open, int closed);  // r<r+1>/open from r's end
  void say(const std::string& line);

  rendezvous::Store& store_;
  RdzvSettings s_;
  RdzvNode me_;
  Progress progress_;
  OnTicket on_ticket_;
  std::string prefix_;
  int round_ = -1;
  int prev_round_ = -1;  // the last round this node was a participant of
  int closed_ = 0;
  RoundOpen open_;
  Round cur_;
  std::int64_t beats_ = 0;
  std::string peer_last_;
  Clock::time_point peer_changed_{};
};

}  // namespace gpurun::launcher
