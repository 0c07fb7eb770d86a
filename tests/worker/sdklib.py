"""Helpers for the worker SDK's process-level tests: paths of this folder's binaries."""
import os
import unittest

import testlib


def sdk_binary(name):
    """A binary built by tests/worker/CMakeLists.txt (or bench/allreduce), found via
    GPURUN_BIN_<NAME> or under GPURUN_BUILD_DIR; skips the test if it was not built."""
    var = "GPURUN_BIN_" + name.upper().replace("-", "_")
    path = os.environ.get(var)
    if not path:
        for sub in ("tests/worker", "bench/allreduce", "launcher", "rendezvous"):
            cand = os.path.join(testlib.BUILD_DIR, sub, name)
            if os.path.exists(cand):
                path = cand
                break
    if not path or not os.path.exists(path):
        raise unittest.SkipTest(f"{name} not built")
    return path
