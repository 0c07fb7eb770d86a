#pragma once

namespace gpurun::worker {

template <typename T>
std::vector<std::vector<T>> Communicator::gather_host(std::span<const T> data, int root) {
  std::int64_t mine = static_cast<std::int64_t>(data.size());
  std::vector<std::int64_t> lens(static_cast<std::size_t>(size()));
  all_gather(&mine, lens.data(), 1, DataType::kInt64);
  std::vector<std::size_t> counts(lens.begin(), lens.end());
  std::size_t total = 0;
  for (auto c : counts) total += c;
  std::vector<T> flat(rank() == root ? total : 0);
  gather(data.data(), flat.data(), counts, data_type_of<T>(), root);
  std::vector<std::vector<T>> out;
  if (rank() != root) return out;
  out.reserve(counts.size());
  std::size_t off = 0;
  for (auto c : counts) {
    out.emplace_back(flat.begin() + static_cast<std::ptrdiff_t>(off),
                     flat.begin() + static_cast<std::ptrdiff_t>(off + c));
    off += c;
  }
  return out;
}

}  // namespace gpurun::worker
