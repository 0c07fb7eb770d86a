#include "gloo_store_adapter.h"

#include <algorithm>

namespace gpurun::worker::detail {

void GlooStoreAdapter::set(const std::string& key, const std::vector<char>& data) {
  store_->set(key, rendezvous::Bytes(data.begin(), data.end()));
}

std::vector<char> GlooStoreAdapter::get(const std::string& key) {
  store_->wait({key}, timeout_);
  auto v = store_->get(key);
  return std::vector<char>(v.begin(), v.end());
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys) { store_->wait(keys, timeout_); }

void GlooStoreAdapter::wait(const std::vector<std::string>& keys,
                            const std::chrono::milliseconds& timeout) {
  // Gloo passes its context timeout; never wait longer than ours.
  store_->wait(keys, std::min(timeout, timeout_));
}

}  // namespace gpurun::worker::detail
