// Compact lists of integers for messages and kernel interfaces, written once: rank lists in the
// launcher's messages ("ranks 2,3" / "4-7" / "0,2-5") and CPU lists in the kernel's cpulist
// format ("0-3,8,10-11", as /sys/devices/system/node/node0/cpulist).
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

namespace gpurun {

// Sorted, duplicates dropped; a run of at least `min_run` consecutive values is written "a-b",
// shorter runs value by value. min_run 2 is the kernel's cpulist ("10-11"), 3 the rank lists'
// ("2,3" but "4-6").
inline std::string format_int_ranges(std::vector<int> values, std::size_t min_run) {
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  std::string out;
  for (std::size_t i = 0; i < values.size();) {
    std::size_t j = i;
    while (j + 1 < values.size() && values[j + 1] == values[j] + 1) ++j;
    if (j - i + 1 >= std::max<std::size_t>(min_run, 2)) {
      out += fmt::format("{}{}-{}", out.empty() ? "" : ",", values[i], values[j]);
    } else {
      for (std::size_t k = i; k <= j; ++k)
        out += fmt::format("{}{}", out.empty() ? "" : ",", values[k]);
    }
    i = j + 1;
  }
  return out;
}

// "2,3" / "4-7" / "0,2-5": ranks (or node ranks) in the launcher's messages.
inline std::string format_rank_list(const std::vector<int>& ranks) {
  return format_int_ranges(ranks, 3);
}

}  // namespace gpurun
