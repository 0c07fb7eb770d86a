// The elastic rendezvous state machine (see elastic_rdzv.h for the key layout and the rules).
// Over 500 lines on purpose: the rounds, their keys and their derivation rules read as one unit.
#include "multinode/elastic_rdzv.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "cli/config.h"

namespace gpurun::launcher {

using nlohmann::json;
using rendezvous::to_bytes;
using rendezvous::to_string;

namespace {

// How long a participant waits for the assigner before computing the assignment itself.
constexpr milliseconds kAssignGrace{3000};
// How often an agent waiting for nodes looks for a torchrun agent's key.
constexpr milliseconds kTorchrunCheck{1000};

int to_int(const rendezvous::Bytes& b) {
  try {
    return std::stoi(to_string(b));
  } catch (const std::exception&) {
    throw ProtocolError(fmt::format("rendezvous: expected a number, got '{}'", to_string(b)));
  }
}

std::string utc_now() {
  return fmt::format(
      "{:%Y-%m-%dT%H:%M:%SZ}",
      fmt::gmtime(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now())));
}

const char* kind_name(EndKind k) {
  switch (k) {
    case EndKind::kOk:
      return "ok";
    case EndKind::kWorkerFailed:
      return "worker_failed";
    case EndKind::kNodeLost:
      return "node_lost";
    case EndKind::kNodeJoined:
      return "node_joined";
  }
  return "ok";
}

EndKind kind_from(const std::string& s) {
  for (EndKind k :
       {EndKind::kOk, EndKind::kWorkerFailed, EndKind::kNodeLost, EndKind::kNodeJoined}) {
    if (s == kind_name(k)) return k;
  }
  throw ProtocolError("rendezvous: unknown round end '" + s + "'");
}

std::string open_json(const RoundOpen& o) {
  return json{{"restart_count", o.restart_count},
              {"expected", o.expected},
              {"fatal", o.fatal},
              {"message", o.message},
              {"exit_code", o.exit_code}}
      .dump();
}

RoundOpen open_from(const std::string& text) {
  auto j = json::parse(text);
  RoundOpen o;
  o.restart_count = j.at("restart_count").get<int>();
  o.expected = j.at("expected").get<int>();
  o.fatal = j.at("fatal").get<bool>();
  o.message = j.at("message").get<std::string>();
  o.exit_code = j.at("exit_code").get<int>();
  return o;
}

std::string node_json(const RdzvNode& n, int round) {
  return json{{"id", n.id},       {"addr", n.addr},     {"host", n.host},
              {"nproc", n.nproc}, {"ticket", n.ticket}, {"prev_group_rank", n.prev_group_rank},
              {"round", round}}
      .dump();
}

// prev_group_rank counts only when it is from the round just before `round`.
RdzvNode node_from(const std::string& text, int round) {
  auto j = json::parse(text);
  RdzvNode n;
  n.id = j.at("id").get<std::string>();
  n.addr = j.at("addr").get<std::string>();
  n.host = j.at("host").get<std::string>();
  n.nproc = j.at("nproc").get<int>();
  n.ticket = j.at("ticket").get<int>();
  n.prev_group_rank = j.at("prev_group_rank").get<int>();
  if (j.value("round", -1) != round) n.prev_group_rank = -1;
  return n;
}

milliseconds conf_duration(const std::map<std::string, std::string>& conf, const char* key,
                           milliseconds dflt) {
  auto it = conf.find(key);
  if (it == conf.end()) return dflt;
  return parse_duration(it->second, fmt::format("--rdzv-conf {}", key));
}

}  // namespace

// ---- settings ----

RdzvSettings rdzv_settings(const LaunchConfig& cfg) {
  static const std::set<std::string> kKnown = {
      "join_timeout",        "last_call_timeout",      "close_timeout", "read_timeout",
      "keep_alive_interval", "keep_alive_max_attempt", "is_host",       "timeout"};
  RdzvSettings s;
  s.run_id = cfg.rdzv_id;
  s.endpoint = cfg.rdzv_endpoint;
  s.backend = cfg.rdzv_backend;
  s.min_nodes = cfg.nnodes_min;
  s.max_nodes = cfg.nnodes_max;
  s.max_restarts = cfg.max_restarts;
  const auto& c = cfg.rdzv_conf;
  for (const auto& [k, v] : c) {
    if (!kKnown.count(k)) {
      throw ConfigError(
          fmt::format("unknown --rdzv-conf key '{}' for the {} backend; known keys: join_timeout, "
                      "last_call_timeout, close_timeout, read_timeout, keep_alive_interval, "
                      "keep_alive_max_attempt, is_host, timeout",
                      k, cfg.rdzv_backend == "static" ? "c10d" : cfg.rdzv_backend));
    }
  }
  s.join_timeout = conf_duration(c, "join_timeout", conf_duration(c, "timeout", s.join_timeout));
  s.last_call_timeout = conf_duration(c, "last_call_timeout", s.last_call_timeout);
  s.close_timeout = conf_duration(c, "close_timeout", s.close_timeout);
  s.read_timeout = conf_duration(c, "read_timeout", s.read_timeout);
  s.keep_alive_interval = conf_duration(c, "keep_alive_interval", s.keep_alive_interval);
  if (s.keep_alive_interval <= milliseconds::zero()) {
    throw ConfigError("--rdzv-conf keep_alive_interval must be positive");
  }
  if (auto it = c.find("keep_alive_max_attempt"); it != c.end()) {
    try {
      s.keep_alive_max_attempt = std::stoi(it->second);
    } catch (const std::exception&) {
      s.keep_alive_max_attempt = 0;
    }
    if (s.keep_alive_max_attempt < 1) {
      throw ConfigError(
          fmt::format("--rdzv-conf keep_alive_max_attempt={} is not a positive integer; use e.g. 3",
                      it->second));
    }
  }
  if (auto it = c.find("is_host"); it != c.end()) {
    std::string v = it->second;
    std::transform(v.begin(), v.end(), v.begin(),
                   [](unsigned char ch) { return std::tolower(ch); });
    if (v == "1" || v == "true" || v == "yes") {
      s.is_host = true;
    } else if (v == "0" || v == "false" || v == "no") {
      s.is_host = false;
    } else {
      throw ConfigError(
          fmt::format("--rdzv-conf is_host={} is not a boolean; use true or false", it->second));
    }
  }
  return s;
}

// ---- values ----

std::string RdzvNode::describe() const {
  return host == addr || host.empty() ? addr : fmt::format("{} ({})", host, addr);
}

std::string RoundEnd::describe() const {
  switch (kind) {
    case EndKind::kOk:
      return "every node's workers succeeded";
    case EndKind::kWorkerFailed:
      return fmt::format("node {} (group rank {}): {}", node, group_rank, reason);
    case EndKind::kNodeLost:
      return fmt::format("node {} (group rank {}) lost: {}{}{}", node, group_rank, reason,
                         detected_by.empty() ? "" : ", noticed by " + detected_by,
                         at.empty() ? "" : ", at " + at);
    case EndKind::kNodeJoined:
      return fmt::format("node {} joined", node);
  }
  return reason;
}

std::string end_to_json(const RoundEnd& e) {
  return json{{"kind", kind_name(e.kind)},
              {"group_rank", e.group_rank},
              {"node", e.node},
              {"reason", e.reason},
              {"exit_code", e.exit_code},
              {"detected_by", e.detected_by},
              {"at", e.at}}
      .dump();
}

RoundEnd end_from_json(const std::string& text) {
  auto j = json::parse(text);
  RoundEnd e;
  e.kind = kind_from(j.at("kind").get<std::string>());
  e.group_rank = j.value("group_rank", -1);
  e.node = j.value("node", "");
  e.reason = j.value("reason", "");
  e.exit_code = j.value("exit_code", 0);
  e.detected_by = j.value("detected_by", "");
  e.at = j.value("at", "");
  return e;
}

RoundOpen derive_next_open(const RoundOpen& prev, int closed, const RoundEnd& end,
                           const RdzvSettings& s, int waiting) {
  RoundOpen n;
  n.restart_count = prev.restart_count;
  n.expected = std::min(closed + waiting, s.max_nodes);
  auto no_restarts = [&] {
    return fmt::format("no restarts left (--max-restarts {}, counted job-wide)", s.max_restarts);
  };
  switch (end.kind) {
    case EndKind::kOk:
      n.fatal = true;
      n.message = "the job has already finished (every node's workers succeeded)";
      n.exit_code = static_cast<int>(ExitCode::kRendezvousFailed);
      break;
    case EndKind::kNodeJoined:
      n.expected = std::min(closed + std::max(waiting, 1), s.max_nodes);
      break;
    case EndKind::kWorkerFailed:
      n.restart_count = prev.restart_count + 1;
      if (n.restart_count > s.max_restarts) {
        n.fatal = true;
        n.message = fmt::format("worker failure on {}; {}", end.describe(), no_restarts());
        n.exit_code = end.exit_code != 0 ? end.exit_code : 1;
      }
      break;
    case EndKind::kNodeLost:
      n.restart_count = prev.restart_count + 1;
      const int left = closed - 1 + waiting;
      n.expected = std::min(left, s.max_nodes);
      if (left < s.min_nodes) {
        n.fatal = true;
        n.message = fmt::format("{}; {} node{} left, fewer than the minimum of --nnodes ({})",
                                end.describe(), left, left == 1 ? "" : "s", s.min_nodes);
      } else if (n.restart_count > s.max_restarts) {
        n.fatal = true;
        n.message = fmt::format("{}; {}", end.describe(), no_restarts());
      }
      if (n.fatal) n.exit_code = static_cast<int>(ExitCode::kRendezvousFailed);
      break;
  }
  return n;
}

// ---- the state machine ----

ElasticRendezvous::ElasticRendezvous(rendezvous::Store& store, RdzvSettings settings, RdzvNode me,
                                     Progress progress, OnTicket on_ticket)
    : store_(store),
      s_(std::move(settings)),
      me_(std::move(me)),
      progress_(std::move(progress)),
      on_ticket_(std::move(on_ticket)),
      prefix_(fmt::format("gpurun.rdzv.{}/", s_.run_id)) {}

std::string ElasticRendezvous::key(int round, const std::string& name) const {
  return fmt::format("{}r{}/{}", prefix_, round, name);
}

void ElasticRendezvous::say(const std::string& line) {
  if (progress_) progress_(line);
}

namespace {

std::string base64(const std::string& in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const unsigned v = (static_cast<unsigned char>(in[i]) << 16) |
                       (static_cast<unsigned char>(in[i + 1]) << 8) |
                       static_cast<unsigned char>(in[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out += kAlphabet[(v >> k) & 63];
  }
  if (i < in.size()) {
    unsigned v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

}  // namespace

void ElasticRendezvous::refuse_torchrun() {
  // torch 1.13+'s C10dRendezvousBackend: base64(pickle(state)) under torch.rendezvous.<run_id>,
  // created at once (compare_set with a sentinel) by every torchrun agent pointed at the store.
  // A torch client puts "/" before every key; gpurun's agents talk to the store without it.
  const std::string k = "/torch.rendezvous." + s_.run_id;
  if (!store_.check({k})) return;
  auto clean = [](std::string t) {  // a protocol-0 pickle string ends at a newline
    std::replace(t.begin(), t.end(), '\n', ' ');
    std::replace(t.begin(), t.end(), '\\', '/');
    return t;
  };
  // Unpickling this calls int("gpurun: error: ..."): torch's agents stop with a ValueError that
  // carries the message (the same pickle call any torch state makes to rebuild its objects).
  const std::string poison = base64(
      "cbuiltins\nint\n(V" +
      clean(fmt::format("gpurun: error: this torchrun agent joined rendezvous {} at {}, where "
                        "gpurun agents run; gpurun and torchrun agents cannot be mixed in one job; "
                        "run the same launcher on every node",
                        s_.run_id, s_.endpoint)) +
      "\ntR.");
  store_.set(k, poison);
  store_.add(prefix_ + "torchrun_seen", 1);
  throw MixedLaunchers(
      fmt::format("a torchrun agent joined rendezvous {} at {}; gpurun and torchrun agents cannot "
                  "be mixed in one job; run the same launcher on every node",
                  s_.run_id, s_.endpoint),
      static_cast<int>(ExitCode::kRendezvousFailed));
}

void ElasticRendezvous::wait_torchrun_seen(milliseconds timeout) {
  const int r = round_ >= 0 ? round_ : read_round_pointer();
  const std::int64_t want = store_.add(key(r, "joined"), 0);
  const auto deadline = deadline_after(timeout);
  while (store_.add(prefix_ + "torchrun_seen", 0) < want &&
         remaining(deadline) > milliseconds::zero()) {
    std::this_thread::sleep_for(milliseconds(20));
  }
}

int ElasticRendezvous::read_round_pointer() {
  const std::string k = prefix_ + "round";
  int r = store_.check({k}) ? to_int(store_.get(k)) : 0;
  if (r == 0) store_.compare_set(key(0, "open"), {}, to_bytes(open_json(RoundOpen{})));
  while (store_.check({key(r + 1, "open")})) ++r;  // the pointer may lag
  return r;
}

RoundOpen ElasticRendezvous::open_round(int r) {
  return open_from(to_string(store_.get(key(r, "open"))));
}

int ElasticRendezvous::try_close(int r) {
  const int joined = static_cast<int>(store_.add(key(r, "joined"), 0));
  const int want = std::min(joined, s_.max_nodes);
  return to_int(store_.compare_set(key(r, "closed"), {}, to_bytes(std::to_string(want))));
}

int ElasticRendezvous::wait_closed(int r, int ticket, const RoundOpen& open) {
  const std::string closed = key(r, "closed");
  if (ticket >= s_.max_nodes ||
      (open.expected > 0 && ticket >= open.expected && ticket >= s_.min_nodes)) {
    return try_close(r);
  }
  if (ticket >= s_.min_nodes) {
    // A re-form expects the previous round's nodes back: they get the heartbeat grace to rejoin
    // (the expected-th closes the round at once); a fresh round waits the last call only.
    milliseconds last_call = s_.last_call_timeout;
    if (open.expected > ticket) {
      last_call = std::max(last_call, s_.keep_alive_interval * s_.keep_alive_max_attempt);
    }
    try {
      store_.wait({closed}, last_call);
      return to_int(store_.get(closed));
    } catch (const StoreTimeout&) {
      return try_close(r);
    }
  }
  const auto start = Clock::now();
  const auto deadline = deadline_after(s_.join_timeout);
  auto next_progress = start + s_.progress_every;
  for (;;) {
    try {
      // Each second: has a torchrun agent come instead of a gpurun one? (one read)
      store_.wait({closed}, std::min({remaining(deadline), s_.progress_every, kTorchrunCheck}));
      return to_int(store_.get(closed));
    } catch (const StoreTimeout&) {
    }
    refuse_torchrun();
    if (Clock::now() < next_progress && remaining(deadline) > milliseconds::zero()) continue;
    next_progress = Clock::now() + s_.progress_every;
    const int joined = static_cast<int>(store_.add(key(r, "joined"), 0));
    const auto waited = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
    if (remaining(deadline) == milliseconds::zero()) {
      std::vector<std::string> names;
      for (int t = 1; t <= joined; ++t) {
        const std::string k = key(r, fmt::format("node/{}", t));
        if (store_.check({k})) names.push_back(node_from(to_string(store_.get(k)), r).describe());
      }
      throw StoreTimeout(fmt::format(
          "timed out after {} (join_timeout) waiting for nodes to join the rendezvous '{}' at {}: "
          "{} of at least {} node{} joined ({}); start gpurun on {} more node{} with the same "
          "--rdzv-endpoint, --rdzv-id and --nnodes, or raise --rdzv-conf join_timeout",
          format_duration(waited), s_.run_id, s_.endpoint, joined, s_.min_nodes,
          s_.min_nodes == 1 ? "" : "s", fmt::join(names, ", "), s_.min_nodes - joined,
          s_.min_nodes - joined == 1 ? "" : "s"));
    }
    say(fmt::format(
        "gpurun: waiting for nodes to join the rendezvous '{}' at {}: {} of at least {} so far "
        "({} waited, join_timeout {})",
        s_.run_id, s_.endpoint, joined, s_.min_nodes, format_duration(waited),
        format_duration(s_.join_timeout)));
  }
}

Round ElasticRendezvous::next_round() {
  int r = 0;
  RoundOpen open;
  if (round_ < 0) {
    r = read_round_pointer();
  } else {
    auto e = peek_end();
    if (!e) throw Error("internal error: next_round() before the round ended");
    open_next(round_, open_, closed_);
    r = round_ + 1;
    store_.compare_set(prefix_ + "round",
                       round_ == 0 ? rendezvous::Bytes{} : to_bytes(std::to_string(round_)),
                       to_bytes(std::to_string(r)));
  }
  for (;;) {
    open = open_round(r);
    if (store_.check({key(r + 1, "open")})) {  // round r is over already
      ++r;
      continue;
    }
    if (open.fatal) throw RdzvFatal(open.message, open.exit_code);
    refuse_torchrun();
    const int ticket = static_cast<int>(store_.add(key(r, "joined"), 1));
    RdzvNode mine = me_;
    mine.ticket = ticket;
    if (ticket <= s_.max_nodes && on_ticket_) on_ticket_(key(r, "end"));
    store_.set(key(r, fmt::format("node/{}", ticket)), node_json(mine, prev_round_));
    const int closed = ticket > s_.max_nodes ? s_.max_nodes : wait_closed(r, ticket, open);

    auto move_on = [&](const RoundEnd& why) {
      round_ = r;
      closed_ = closed;
      open_ = open;
      const RoundEnd held = end_round(why);
      (void)held;
    };

    if (ticket > closed) {
      if (closed < s_.max_nodes) {
        say(fmt::format(
            "gpurun: round {} of '{}' already runs with {} node{} (maximum {}); asking every node "
            "to restart its workers so that the job re-forms with this node",
            r, s_.run_id, closed, closed == 1 ? "" : "s", s_.max_nodes));
        round_ = r;
        RoundEnd e = make_end(EndKind::kNodeJoined, -1, "joined a running job");
        e.node = me_.describe();
        move_on(e);
      } else {
        say(fmt::format(
            "gpurun: round {} of '{}' is full ({} nodes); waiting as a spare for the next round", r,
            s_.run_id, closed));
        round_ = r;
        closed_ = closed;
        open_ = open;
        while (!wait_end(s_.progress_every)) {
        }
      }
      open_next(r, open, closed);
      ++r;
      continue;
    }

    // A participant. The node with the last ticket assigns the ranks (one read of every node,
    // one multi_set); the others read only their own assignment, so a round costs O(N) bytes,
    // not O(N^2). If the assigner is slow or gone, anyone computes the same assignment.
    const std::string assign_key = key(r, fmt::format("assign/{}", ticket));
    int missing = ticket == closed ? assign_ranks(r, closed) : 0;
    if (missing == 0 && ticket != closed) {
      try {
        store_.wait({assign_key}, std::min(s_.read_timeout, kAssignGrace));
      } catch (const StoreTimeout&) {
        missing = assign_ranks(r, closed);
      }
    }
    if (missing > 0) {
      round_ = r;
      RoundEnd e = make_end(EndKind::kNodeLost, -1,
                            fmt::format("the node with join ticket {} never registered", missing));
      e.node = fmt::format("ticket {}", missing);
      move_on(e);
      open_next(r, open, closed);
      ++r;
      continue;
    }
    const auto a = json::parse(to_string(store_.get(assign_key)));
    Round round;
    round.number = r;
    round.restart_count = open.restart_count;
    round.group_world_size = closed;
    round.group_rank = a.at(0).get<int>();
    round.base_global_rank = a.at(1).get<int>();
    round.world_size = a.at(2).get<int>();
    round_ = r;
    closed_ = closed;
    open_ = open;
    cur_ = round;
    me_.prev_group_rank = round.group_rank;
    prev_round_ = r;
    beats_ = 0;
    peer_last_.clear();
    peer_changed_ = Clock::now();
    beat();
    return cur_;
  }
}

int ElasticRendezvous::assign_ranks(int r, int closed) {
  std::vector<std::string> keys;
  for (int t = 1; t <= closed; ++t) keys.push_back(key(r, fmt::format("node/{}", t)));
  try {
    store_.wait(keys, s_.read_timeout);
  } catch (const StoreTimeout&) {
    int missing = 1;
    for (int t = 1; t <= closed; ++t) {
      if (!store_.check({keys[static_cast<std::size_t>(t - 1)]})) missing = t;
    }
    return missing;
  }
  std::vector<RdzvNode> nodes;
  std::vector<std::string> raw;
  for (const auto& v : store_.multi_get(keys)) {
    raw.push_back(to_string(v));
    nodes.push_back(node_from(raw.back(), r - 1));
  }
  std::vector<std::size_t> order(nodes.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) {
    const RdzvNode& a = nodes[x];
    const RdzvNode& b = nodes[y];
    const bool an = a.prev_group_rank < 0, bn = b.prev_group_rank < 0;
    if (an != bn) return bn;  // previous members first
    if (!an && a.prev_group_rank != b.prev_group_rank) return a.prev_group_rank < b.prev_group_rank;
    if (a.addr != b.addr) return a.addr < b.addr;
    return a.ticket < b.ticket;
  });
  int world = 0;
  for (const auto& n : nodes) world += n.nproc;
  std::vector<std::string> ks;
  std::vector<rendezvous::Bytes> vs;
  int base = 0;
  for (std::size_t g = 0; g < order.size(); ++g) {
    const RdzvNode& n = nodes[order[g]];
    ks.push_back(key(r, fmt::format("rank/{}", g)));
    vs.push_back(to_bytes(raw[order[g]]));
    ks.push_back(key(r, fmt::format("assign/{}", n.ticket)));
    vs.push_back(to_bytes(json::array({static_cast<int>(g), base, world}).dump()));
    base += n.nproc;
  }
  store_.multi_set(ks, vs);
  return 0;
}

RdzvNode ElasticRendezvous::node_of(int group_rank) {
  const std::string k = key(round_, fmt::format("rank/{}", group_rank));
  if (group_rank < 0 || !store_.check({k})) return {};
  return node_from(to_string(store_.get(k)), -2);
}

void ElasticRendezvous::open_next(int r, const RoundOpen& open, int closed) {
  const RoundEnd end = end_from_json(to_string(store_.get(key(r, "end"))));
  const int joined = static_cast<int>(store_.add(key(r, "joined"), 0));
  const RoundOpen next = derive_next_open(open, closed, end, s_, std::max(0, joined - closed));
  store_.compare_set(key(r + 1, "open"), {}, to_bytes(open_json(next)));
}

RoundEnd ElasticRendezvous::make_end(EndKind kind, int group_rank, const std::string& reason,
                                     int exit_code) {
  RoundEnd e;
  e.kind = kind;
  e.group_rank = group_rank;
  if (group_rank >= 0) {
    try {
      e.node = node_of(group_rank).describe();
    } catch (const Error&) {
      e.node = fmt::format("group rank {}", group_rank);  // the store is gone: say what we know
    }
  }
  e.reason = reason;
  e.exit_code = exit_code;
  e.detected_by = me_.describe();
  e.at = utc_now();
  return e;
}

std::optional<RoundEnd> ElasticRendezvous::peek_end() {
  const std::string k = end_key();
  if (!store_.check({k})) return std::nullopt;
  return end_from_json(to_string(store_.get(k)));
}

std::optional<RoundEnd> ElasticRendezvous::wait_end(milliseconds timeout) {
  try {
    store_.wait({end_key()}, timeout);
  } catch (const StoreTimeout&) {
    return std::nullopt;
  }
  return end_from_json(to_string(store_.get(end_key())));
}

RoundEnd ElasticRendezvous::end_round(RoundEnd end) {
  const std::string mine = end_to_json(end);
  return end_from_json(to_string(store_.compare_set(end_key(), {}, to_bytes(mine))));
}

void ElasticRendezvous::report_done() {
  store_.set(key(round_, fmt::format("done/{}", cur_.group_rank)), "1");
  const int done = static_cast<int>(store_.add(key(round_, "done"), 1));
  if (done >= closed_) end_round(make_end(EndKind::kOk, -1, ""));
}

std::vector<std::string> ElasticRendezvous::not_done() {
  std::vector<std::string> out;
  for (int g = 0; g < cur_.group_world_size; ++g) {
    if (store_.check({key(round_, fmt::format("done/{}", g))})) continue;
    out.push_back(fmt::format("{} (group rank {})", node_of(g).describe(), g));
  }
  return out;
}

void ElasticRendezvous::say_bye() {
  if (round_ >= 0) store_.add(key(round_, "bye"), 1);
}

void ElasticRendezvous::wait_byes(milliseconds timeout) {
  if (round_ < 0) return;
  int want = closed_;
  if (auto e = peek_end(); e && e->kind == EndKind::kNodeLost) --want;
  const auto deadline = deadline_after(timeout);
  while (store_.add(key(round_, "bye"), 0) < want && remaining(deadline) > milliseconds::zero()) {
    std::this_thread::sleep_for(milliseconds(20));
  }
}

void ElasticRendezvous::publish_master(const std::string& addr, std::uint16_t port) {
  store_.set(key(round_, "master"), json{{"addr", addr}, {"port", port}}.dump());
}

std::pair<std::string, std::uint16_t> ElasticRendezvous::wait_master() {
  const std::string k = key(round_, "master");
  try {
    store_.wait({k}, s_.read_timeout);
  } catch (const StoreTimeout&) {
    throw StoreTimeout(fmt::format(
        "timed out after {} (read_timeout) waiting for node {} (group rank 0) to publish the "
        "workers' store of round {} on the rendezvous store at {}",
        format_duration(s_.read_timeout), node_of(0).describe(), round_, s_.endpoint));
  }
  auto j = json::parse(to_string(store_.get(k)));
  return {j.at("addr").get<std::string>(), j.at("port").get<std::uint16_t>()};
}

void ElasticRendezvous::beat() {
  store_.set(key(round_, fmt::format("hb/{}", cur_.group_rank)), std::to_string(++beats_));
}

std::optional<RoundEnd> ElasticRendezvous::check_peer(Clock::time_point now) {
  if (cur_.group_world_size < 2) return std::nullopt;
  const int peer = (cur_.group_rank + 1) % cur_.group_world_size;
  const std::string k = key(round_, fmt::format("hb/{}", peer));
  const std::string v = store_.check({k}) ? to_string(store_.get(k)) : "";
  if (v != peer_last_) {
    peer_last_ = v;
    peer_changed_ = now;
    return std::nullopt;
  }
  const auto limit = s_.keep_alive_interval * s_.keep_alive_max_attempt;
  if (now - peer_changed_ < limit) return std::nullopt;
  // A node whose workers succeeded may leave after its exit barrier timed out: not lost.
  if (store_.check({key(round_, fmt::format("done/{}", peer))})) return std::nullopt;
  return make_end(
      EndKind::kNodeLost, peer,
      fmt::format("no heartbeat for {} (keep_alive_interval {} x "
                  "keep_alive_max_attempt {})",
                  format_duration(std::chrono::duration_cast<milliseconds>(now - peer_changed_)),
                  format_duration(s_.keep_alive_interval), s_.keep_alive_max_attempt));
}

}  // namespace gpurun::launcher
