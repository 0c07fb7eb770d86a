// StoreServerThread: an io_context, a StoreServer and the thread running them, for the launcher,
// tests and benchmarks that want a server in the background.
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <future>
#include <mutex>
#include <thread>

#include "gpurun/common/log.h"
#include "gpurun/rendezvous/store_server.h"

namespace gpurun::rendezvous {

struct StoreServerThread::Impl {
  boost::asio::io_context io{1};
  std::unique_ptr<StoreServer> server;
  std::thread thread;
  std::mutex mu;
  bool stopped = false;
};

StoreServerThread::StoreServerThread(StoreServerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->server = std::make_unique<StoreServer>(impl_->io, std::move(options));
  impl_->thread = std::thread([impl = impl_.get()] {
    for (;;) {
      try {
        impl->io.run();
        return;
      } catch (const std::exception& e) {
        GPURUN_LOG_ERROR("store", "unexpected error in the store event loop: {}", e.what());
      }
    }
  });
}

StoreServerThread::~StoreServerThread() { stop(); }

std::uint16_t StoreServerThread::port() const { return impl_->server->port(); }
std::string StoreServerThread::address() const { return impl_->server->address(); }

StoreServerStats StoreServerThread::stats() const {
  std::lock_guard lock(impl_->mu);
  if (impl_->stopped) return impl_->server->stats();
  std::promise<StoreServerStats> p;
  auto f = p.get_future();
  boost::asio::post(impl_->io, [&] { p.set_value(impl_->server->stats()); });
  return f.get();
}

void StoreServerThread::stop() {
  std::lock_guard lock(impl_->mu);
  if (impl_->stopped) return;
  impl_->stopped = true;
  // Closing the acceptor and every session leaves the loop without work, so run() returns.
  boost::asio::post(impl_->io, [impl = impl_.get()] { impl->server->stop(); });
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace gpurun::rendezvous
