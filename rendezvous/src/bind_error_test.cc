#include "gpurun/rendezvous/bind_error.h"

#include <catch2/catch.hpp>
#include <system_error>

using gpurun::BindError;
using gpurun::rendezvous::bind_failure_message;
using gpurun::rendezvous::BindFixes;

namespace {

BindError bind_error(std::errc e, const std::string& host, int port) {
  return BindError("cannot bind store on ...", std::make_error_code(e), host, port);
}

const BindFixes kFixes{"free it", "use a local address", "not below 1024", "check the flags"};

}  // namespace

TEST_CASE("bind_failure_message: address in use names the holder and the in-use fix") {
  CHECK(bind_failure_message(bind_error(std::errc::address_in_use, "127.0.0.1", 29500), kFixes,
                             "pid 4711 (python3 x.py)") ==
        "cannot bind store on 127.0.0.1:29500 (address already in use by pid 4711 (python3 "
        "x.py)); free it");
  CHECK(bind_failure_message(bind_error(std::errc::address_in_use, "127.0.0.1", 29500), kFixes) ==
        "cannot bind store on 127.0.0.1:29500 (address already in use); free it");
}

TEST_CASE("bind_failure_message: each errno gets its own fix, an empty one falls back") {
  CHECK(bind_failure_message(bind_error(std::errc::address_not_available, "10.9.9.9", 1), kFixes) ==
        "cannot bind store on 10.9.9.9:1 (cannot assign requested address); use a local address");
  CHECK(bind_failure_message(bind_error(std::errc::permission_denied, "0.0.0.0", 80), kFixes) ==
        "cannot bind store on 0.0.0.0:80 (permission denied); not below 1024");
  CHECK(bind_failure_message(bind_error(std::errc::permission_denied, "0.0.0.0", 80),
                             BindFixes{"", "", "", "one fix"}) ==
        "cannot bind store on 0.0.0.0:80 (permission denied); one fix");
  // The holder is only said for a busy port.
  CHECK(bind_failure_message(bind_error(std::errc::permission_denied, "0.0.0.0", 80), kFixes,
                             "pid 1 (init)")
            .find("pid 1") == std::string::npos);
}
