// The Gloo TCP device this process shares per address, and the LoopKicker that keeps its event
// loop from adding 10 ms waits to connecting a mesh and closing pairs.
#pragma once

#include <gloo/transport/device.h>
#include <gloo/transport/tcp/device.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <mutex>

#include "gpurun/common/unique_fd.h"

namespace gpurun::worker::detail {

// Gloo's TCP pairs unregister a socket from the device's epoll loop (closing a pair; or, while
// connecting, the lower rank dropping its listening socket) and then wait for the loop's next
// tick, which comes on an event or on the loop's 10 ms timeout. So connecting a mesh and
// destroying a context each waited up to 10 ms per peer, on every worker's start and exit. The
// kicker is an eventfd registered with the loop (level-triggered, a handler that does nothing):
// while a Kick is held it is readable and keeps the loop ticking; drained, it costs nothing. It
// stays registered for the device's lifetime (unregistering would itself wait for a tick).
class LoopKicker {
 public:
  static std::shared_ptr<LoopKicker> attach(
      const std::shared_ptr<::gloo::transport::Device>& device) {
    auto* tcp = dynamic_cast<::gloo::transport::tcp::Device*>(device.get());
    if (tcp == nullptr) return nullptr;
    UniqueFd fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!fd) return nullptr;
    auto k = std::shared_ptr<LoopKicker>(new LoopKicker(std::move(fd)));
    tcp->registerDescriptor(k->fd_.get(), EPOLLIN, &k->handler_);
    return k;
  }

  // Keeps the loop ticking for its lifetime (nests: the loop idles again after the last one).
  class Kick {
   public:
    explicit Kick(LoopKicker* k) : k_(k) {
      if (k_ != nullptr) k_->start();
    }
    ~Kick() {
      if (k_ != nullptr) k_->stop();
    }
    Kick(const Kick&) = delete;
    Kick& operator=(const Kick&) = delete;

   private:
    LoopKicker* k_;
  };

 private:
  struct Noop final : ::gloo::transport::tcp::Handler {
    void handleEvents(int /*events*/) override {}
  };
  explicit LoopKicker(UniqueFd fd) : fd_(std::move(fd)) {}
  void start() {
    const std::lock_guard<std::mutex> lock(mu_);
    if (active_++ == 0) {
      const std::uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(fd_.get(), &one, sizeof one);
    }
  }
  void stop() {
    const std::lock_guard<std::mutex> lock(mu_);
    if (--active_ == 0) {
      std::uint64_t v = 0;
      [[maybe_unused]] auto n = ::read(fd_.get(), &v, sizeof v);
    }
  }
  UniqueFd fd_;
  Noop handler_;
  std::mutex mu_;
  int active_ = 0;
};

struct SharedDevice {
  std::shared_ptr<::gloo::transport::Device> device;
  std::shared_ptr<LoopKicker> kicker;  // null if the device is not Gloo's TCP one
};

// One Gloo TCP device per (hostname, interface) for the whole process, as torch's
// ProcessGroupGloo shares its devices (see gloo_device.cc for why it is never destroyed).
// Throws what Gloo throws for an address it cannot bind.
SharedDevice shared_device(const ::gloo::transport::tcp::attr& attr);

}  // namespace gpurun::worker::detail
