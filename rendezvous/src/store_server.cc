// StoreServer, the public face of the store server: raises RLIMIT_NOFILE, makes the ServerCore
// (server_core.h: the key-value state, the acceptor, the connections) bind and start, and
// forwards to it. Also the GPURUN_STORE_* environment.
#include "gpurun/rendezvous/store_server.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>

#include "gpurun/common/duration.h"
#include "gpurun/common/error.h"
#include "gpurun/common/fd_limit.h"
#include "gpurun/common/log.h"
#include "gpurun/rendezvous/job_access.h"
#include "server_core.h"

namespace gpurun::rendezvous {
namespace {

void raise_store_fd_limit() {
  const FdLimitRaise r = raise_fd_limit();
  if (r.raised) {
    GPURUN_LOG_INFO("store", "raised RLIMIT_NOFILE from {} to {} (children get {} back)", r.from,
                    r.to, r.from);
  } else if (!r.error.empty()) {
    GPURUN_LOG_WARN("store", "could not raise RLIMIT_NOFILE from {} to {}: {}", r.from, r.to,
                    r.error);
  }
}

}  // namespace

void apply_store_env(StoreServerOptions& o, const EnvMap& env) {
  if (auto v = env_bool(env, "GPURUN_STORE_CHECK_PEER_UID")) o.check_peer_uid = *v;
  if (auto v = env_get(env, "GPURUN_STORE_ALLOW")) {
    o.allow_hosts.clear();
    o.allow_origin = "GPURUN_STORE_ALLOW";
    for (const auto& h : split(*v, ',')) {
      if (auto t = trim(h); !t.empty()) o.allow_hosts.push_back(t);
    }
  }
  auto positive = [&](std::string_view key, std::size_t& field) {
    if (auto v = env_int(env, key)) {
      if (*v <= 0) {
        throw ConfigError(fmt::format("invalid {}={} (must be a positive number)", key, *v));
      }
      field = static_cast<std::size_t>(*v);
    }
  };
  positive("GPURUN_STORE_MAX_BYTES", o.max_store_bytes);
  positive("GPURUN_STORE_MAX_CONNECTIONS", o.max_connections);
  if (auto v = env_duration(env, "GPURUN_STORE_FRAME_TIMEOUT")) o.frame_timeout = *v;
  if (auto v = env_get(env, kJobSecretEnv); v && !v->empty()) o.job_secret = *v;
}

struct StoreServer::Impl {
  std::shared_ptr<server::ServerCore> core;
};

StoreServer::StoreServer(boost::asio::io_context& io, StoreServerOptions options)
    : impl_(std::make_shared<Impl>()) {
  if (options.raise_fd_limit) raise_store_fd_limit();
  impl_->core = std::make_shared<server::ServerCore>(io, std::move(options));
  impl_->core->bind();
  impl_->core->start();
  GPURUN_LOG_INFO("store", "listening on {}", impl_->core->address());
}

StoreServer::~StoreServer() { stop(); }

std::uint16_t StoreServer::port() const { return impl_->core->port(); }
std::string StoreServer::host() const { return impl_->core->host(); }
std::string StoreServer::address() const { return impl_->core->address(); }
void StoreServer::stop() { impl_->core->stop(); }
void StoreServer::serve_connected(int fd, bool on_probation) {
  impl_->core->serve_connected(fd, on_probation);
}
std::string StoreServer::audit() const { return impl_->core->audit(); }
StoreServerStats StoreServer::stats() const { return impl_->core->stats(); }

}  // namespace gpurun::rendezvous
