// Lets Gloo rendezvous through our Store: implements gloo::rendezvous::Store on top of a
// gpurun::rendezvous::Store, applying the run timeout to every wait. Owns nothing but a shared
// reference to the store. Thread-safe if the store is.
#pragma once

#include <gloo/rendezvous/store.h>

#include <chrono>
#include <memory>

#include "gpurun/rendezvous/store.h"

namespace gpurun::worker::detail {

class GlooStoreAdapter final : public ::gloo::rendezvous::Store {
 public:
  GlooStoreAdapter(std::shared_ptr<rendezvous::Store> store, std::chrono::milliseconds timeout)
      : store_(std::move(store)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override;
  // Waits up to the timeout for `key`, then returns it (StoreTimeout names the key).
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

 private:
  std::shared_ptr<rendezvous::Store> store_;
  std::chrono::milliseconds timeout_;
};

}  // namespace gpurun::worker::detail
