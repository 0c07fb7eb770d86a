#include "gpurun/common/hostlist.h"

#include <fmt/format.h>

#include "gpurun/common/env.h"
#include "gpurun/common/error.h"

namespace gpurun {
namespace {

// At most this many names from one list: a typo such as n[1-999999999] must not exhaust memory.
constexpr std::size_t kMaxHosts = 1 << 20;

[[noreturn]] void bad(std::string_view what, std::string_view list, const std::string& why) {
  throw ConfigError(
      fmt::format("{}='{}' is not a Slurm hostlist ({}); expected names such as "
                  "'gpu[01-04,07],login1' (see `scontrol show hostnames`)",
                  what, list, why));
}

// "01-04,07" -> 01 02 03 04 07 (zero padding as written on the range's start).
std::vector<std::string> expand_ranges(std::string_view ranges, std::string_view what,
                                       std::string_view list) {
  std::vector<std::string> out;
  for (const auto& part : split(ranges, ',')) {
    const auto dash = part.find('-');
    const std::string lo_text = part.substr(0, dash);
    const std::string hi_text = dash == std::string::npos ? lo_text : part.substr(dash + 1);
    if (!all_digits(lo_text) || !all_digits(hi_text)) {
      bad(what, list, fmt::format("'{}' in brackets is not a number or a range", part));
    }
    const long long lo = parse_int(lo_text, what);
    const long long hi = parse_int(hi_text, what);
    if (hi < lo) bad(what, list, fmt::format("the range {} runs backwards", part));
    if (static_cast<std::size_t>(hi - lo) >= kMaxHosts) {
      bad(what, list, fmt::format("the range {} has more than {} names", part, kMaxHosts));
    }
    const std::size_t width = lo_text.size();
    for (long long v = lo; v <= hi; ++v) out.push_back(fmt::format("{:0{}}", v, width));
  }
  return out;
}

// One name, possibly with several bracket groups: every combination, in order.
void expand_name(std::string_view name, std::string_view what, std::string_view list,
                 std::vector<std::string>& out) {
  std::vector<std::string> partial{""};
  std::size_t i = 0;
  while (i < name.size()) {
    const auto open = name.find('[', i);
    const std::string_view literal =
        name.substr(i, open == std::string_view::npos ? name.npos : open - i);
    if (literal.find(']') != std::string_view::npos) bad(what, list, "a ']' without '['");
    for (auto& p : partial) p += literal;
    if (open == std::string_view::npos) break;
    const auto close = name.find(']', open);
    if (close == std::string_view::npos) bad(what, list, "a '[' without ']'");
    const auto values = expand_ranges(name.substr(open + 1, close - open - 1), what, list);
    std::vector<std::string> next;
    if (partial.size() * values.size() > kMaxHosts) {
      bad(what, list, fmt::format("more than {} names", kMaxHosts));
    }
    for (const auto& p : partial) {
      for (const auto& v : values) next.push_back(p + v);
    }
    partial = std::move(next);
    i = close + 1;
  }
  for (auto& p : partial) out.push_back(std::move(p));
}

}  // namespace

std::vector<std::string> expand_hostlist(std::string_view list, std::string_view what) {
  std::vector<std::string> out;
  std::size_t start = 0;
  int depth = 0;
  for (std::size_t i = 0; i <= list.size(); ++i) {
    const char c = i < list.size() ? list[i] : ',';
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (depth < 0) bad(what, list, "a ']' without '['");
    if (c == ',' && depth == 0) {
      const std::string name = trim(list.substr(start, i - start));
      if (name.empty()) {
        if (i < list.size() || !out.empty() || start != 0) bad(what, list, "an empty name");
      } else {
        expand_name(name, what, list, out);
      }
      start = i + 1;
    }
  }
  if (depth != 0) bad(what, list, "a '[' without ']'");
  if (out.empty()) bad(what, list, "no names");
  return out;
}

}  // namespace gpurun
