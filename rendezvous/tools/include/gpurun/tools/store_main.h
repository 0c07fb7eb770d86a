// The store's command-line front end (target gpurun_store_tool, apart from the store library):
// the gpurun-store binary and `gpurun store` both run it.
#pragma once

namespace gpurun::rendezvous {

// `gpurun store [--host H] [--port P]` / the gpurun-store binary: runs a server in the foreground,
// prints "gpurun store listening on <addr>" on stdout, stops on SIGINT/SIGTERM. Returns exit code.
int store_main(int argc, char** argv);

}  // namespace gpurun::rendezvous
