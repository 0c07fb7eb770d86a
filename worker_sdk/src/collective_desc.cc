#include "collective_desc.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

namespace gpurun::worker::detail {
namespace {

// FNV-1a over the counts: equal vectors give equal hashes; a collision would need two different
// counts vectors with the same total on different ranks, and only hides the counts' difference.
std::uint64_t hash_counts(const std::vector<std::size_t>& counts) {
  std::uint64_t h = 1469598103934665603ULL;
  for (std::size_t c : counts) {
    for (int i = 0; i < 8; ++i) {
      h ^= (static_cast<std::uint64_t>(c) >> (8 * i)) & 0xff;
      h *= 1099511628211ULL;
    }
  }
  return h ^ counts.size();
}

std::string type_name(std::uint8_t t) {
  if (t > static_cast<std::uint8_t>(DataType::kUInt64)) return fmt::format("type#{}", t);
  return to_string(static_cast<DataType>(t));
}

std::string reduce_name(std::uint8_t r) {
  if (r > static_cast<std::uint8_t>(ReduceOp::kAvg)) return fmt::format("op#{}", r);
  return to_string(static_cast<ReduceOp>(r));
}

}  // namespace

const char* to_string(CollOp op) {
  switch (op) {
    case CollOp::kNone:
      return "nothing";
    case CollOp::kAllReduce:
      return "all_reduce";
    case CollOp::kBroadcast:
      return "broadcast";
    case CollOp::kAllGather:
      return "all_gather";
    case CollOp::kGather:
      return "gather";
    case CollOp::kReduceScatter:
      return "reduce_scatter";
    case CollOp::kBarrier:
      return "barrier";
  }
  return "unknown collective";
}

CollectiveDesc CollectiveDesc::make(CollOp op, std::size_t count, std::optional<DataType> t,
                                    std::optional<ReduceOp> reduce, int root) {
  CollectiveDesc d;
  d.op = op;
  d.count = count;
  if (t) d.type = static_cast<std::uint8_t>(*t);
  if (reduce) d.reduce = static_cast<std::uint8_t>(*reduce);
  d.root = root;
  return d;
}

CollectiveDesc CollectiveDesc::all_reduce(std::size_t count, DataType t, ReduceOp op) {
  return make(CollOp::kAllReduce, count, t, op, -1);
}

CollectiveDesc CollectiveDesc::broadcast(std::size_t count, DataType t, int root) {
  return make(CollOp::kBroadcast, count, t, std::nullopt, root);
}

CollectiveDesc CollectiveDesc::all_gather(std::size_t count, DataType t) {
  return make(CollOp::kAllGather, count, t, std::nullopt, -1);
}

CollectiveDesc CollectiveDesc::gather(const std::vector<std::size_t>& counts, DataType t,
                                      int root) {
  std::size_t total = 0;
  for (std::size_t c : counts) total += c;
  CollectiveDesc d = make(CollOp::kGather, total, t, std::nullopt, root);
  d.counts_hash = hash_counts(counts);
  return d;
}

CollectiveDesc CollectiveDesc::reduce_scatter(std::size_t count, DataType t, ReduceOp op) {
  return make(CollOp::kReduceScatter, count, t, op, -1);
}

CollectiveDesc CollectiveDesc::barrier() {
  return make(CollOp::kBarrier, 0, std::nullopt, std::nullopt, -1);
}

std::string describe_args(const CollectiveDesc& d) {
  const std::string t = type_name(d.type);
  switch (d.op) {
    case CollOp::kAllReduce:
      return fmt::format("{} x {}, {}", d.count, t, reduce_name(d.reduce));
    case CollOp::kBroadcast:
      return fmt::format("{} x {}, root {}", d.count, t, d.root);
    case CollOp::kAllGather:
      return fmt::format("{} x {} per rank", d.count, t);
    case CollOp::kGather:
      return fmt::format("{} x {} in all, root {}, counts {:08x}", d.count, t, d.root,
                         static_cast<std::uint32_t>(d.counts_hash));
    case CollOp::kReduceScatter:
      return fmt::format("{} x {} per rank, {}", d.count, t, reduce_name(d.reduce));
    case CollOp::kBarrier:
    case CollOp::kNone:
      break;
  }
  return "";
}

std::string describe(const CollectiveDesc& d) {
  return fmt::format("{}({})", to_string(d.op), describe_args(d));
}

CollectiveMismatch::CollectiveMismatch(std::vector<NumberedDesc> all)
    : std::runtime_error("collective mismatch"), all_(std::move(all)) {}

bool all_match(const std::vector<NumberedDesc>& all) {
  for (const auto& x : all) {
    if (x.seq != all.front().seq || !(x.desc == all.front().desc)) return false;
  }
  return true;
}

std::string mismatch_message(const char* backend, int rank, int size,
                             const std::vector<NumberedDesc>& all) {
  const auto me = static_cast<std::size_t>(rank);
  const NumberedDesc& mine = all.at(me);
  // Group the ranks that called the same thing, in order of their lowest rank.
  struct Group {
    NumberedDesc what;
    std::vector<int> ranks;
  };
  std::vector<Group> groups;
  for (std::size_t r = 0; r < all.size(); ++r) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const Group& g) {
      return g.what.seq == all[r].seq && g.what.desc == all[r].desc;
    });
    if (it == groups.end()) {
      groups.push_back({all[r], {static_cast<int>(r)}});
    } else {
      it->ranks.push_back(static_cast<int>(r));
    }
  }
  std::vector<std::string> parts;
  bool seq_differs = false;
  for (const auto& g : groups) seq_differs = seq_differs || g.what.seq != mine.seq;
  for (const auto& g : groups) {
    std::string who =
        fmt::format("rank{} {}", g.ranks.size() == 1 ? "" : "s", fmt::join(g.ranks, ","));
    std::string as = seq_differs ? fmt::format(" as #{}", g.what.seq) : "";
    parts.push_back(fmt::format("{} called {}{}", who, describe(g.what.desc), as));
  }
  std::string extra;
  for (const auto& g : groups) {
    if (g.what.desc.op == CollOp::kGather && mine.desc.op == CollOp::kGather &&
        g.what.desc.counts_hash != mine.desc.counts_hash && g.what.desc.count == mine.desc.count) {
      extra =
          " (the same total, but different counts vectors: every rank must pass the same "
          "counts)";
    }
  }
  return fmt::format(
      "{} {} #{} mismatch on rank {}/{}: {}{}; every rank must call the same collectives in the "
      "same order with the same counts, types, roots and reduce ops (nothing was exchanged and "
      "the buffers are unchanged; this communicator cannot be used again)",
      backend, to_string(mine.desc.op), mine.seq, rank, size, fmt::join(parts, ", "), extra);
}

}  // namespace gpurun::worker::detail
