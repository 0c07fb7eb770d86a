#include "gpurun/rendezvous/prefix_store.h"

#include <fmt/format.h>

#include "gpurun/common/error.h"

namespace gpurun::rendezvous {

PrefixStore::PrefixStore(std::string prefix, std::shared_ptr<Store> base)
    : Store(base ? base->timeout() : kDefaultTimeout),
      prefix_(std::move(prefix)),
      base_(std::move(base)) {
  if (!base_) throw Error("PrefixStore needs a base store (got null)");
}

std::vector<std::string> PrefixStore::ks(const std::vector<std::string>& keys) const {
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (const auto& key : keys) out.push_back(k(key));
  return out;
}

// The base store's timeout applies to get/multi_get; keep it in step with ours.
void PrefixStore::set(const std::string& key, const Bytes& value) { base_->set(k(key), value); }
Bytes PrefixStore::get(const std::string& key) {
  base_->wait({k(key)}, timeout());
  return base_->get(k(key));
}
std::int64_t PrefixStore::add(const std::string& key, std::int64_t delta) {
  return base_->add(k(key), delta);
}
Bytes PrefixStore::compare_set(const std::string& key, const Bytes& expected,
                               const Bytes& desired) {
  return base_->compare_set(k(key), expected, desired);
}
bool PrefixStore::check(const std::vector<std::string>& keys) { return base_->check(ks(keys)); }
void PrefixStore::wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
  base_->wait(ks(keys), timeout);
}
bool PrefixStore::delete_key(const std::string& key) { return base_->delete_key(k(key)); }
std::int64_t PrefixStore::num_keys() { return base_->num_keys(); }
std::vector<Bytes> PrefixStore::multi_get(const std::vector<std::string>& keys) {
  auto full = ks(keys);
  base_->wait(full, timeout());
  return base_->multi_get(full);
}
void PrefixStore::multi_set(const std::vector<std::string>& keys,
                            const std::vector<Bytes>& values) {
  base_->multi_set(ks(keys), values);
}
void PrefixStore::append(const std::string& key, const Bytes& value) {
  base_->append(k(key), value);
}
std::string PrefixStore::describe() const {
  return fmt::format("{} (prefix '{}')", base_->describe(), prefix_);
}

}  // namespace gpurun::rendezvous
