#pragma once

namespace gpurun::worker {

template <typename T>
Gathered<T> Communicator::gather_host_flat(std::span<const T> data, int root) {
  std::int64_t mine = static_cast<std::int64_t>(data.size());
  std::vector<std::int64_t> lens(static_cast<std::size_t>(size()));
  host_all_gather(&mine, lens.data(), 1, DataType::kInt64);
  std::vector<std::size_t> counts(lens.begin(), lens.end());
  Gathered<T> out;
  if (rank() == root) {
    out.offsets.reserve(counts.size() + 1);
    out.offsets.push_back(0);
    for (auto c : counts) out.offsets.push_back(out.offsets.back() + c);
    out.data.resize(out.offsets.back());
  }
  host_gather(data.data(), out.data.data(), counts, data_type_of<T>(), root);
  return out;
}

template <typename T>
std::vector<std::vector<T>> Communicator::gather_host(std::span<const T> data, int root) {
  const Gathered<T> flat = gather_host_flat(data, root);
  std::vector<std::vector<T>> out;
  out.reserve(static_cast<std::size_t>(flat.ranks()));
  for (int r = 0; r < flat.ranks(); ++r) {
    const auto s = flat.from(r);
    out.emplace_back(s.begin(), s.end());
  }
  return out;
}

}  // namespace gpurun::worker
