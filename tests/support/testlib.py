"""Shared helpers for gpurun's process-level tests (run with /usr/bin/python3, unittest).

Binaries come from environment variables that tests/CMakeLists.txt sets, e.g. GPURUN_BIN_GPURUN,
GPURUN_BIN_GPURUN_STORE, GPURUN_BIN_WINDOWED_IMAGE; `binary("gpurun")` reads them.
"""
import os
import signal
import socket
import subprocess
import sys
import time
import unittest

BUILD_DIR = os.environ.get("GPURUN_BUILD_DIR", "")
SOURCE_DIR = os.environ.get("GPURUN_SOURCE_DIR", os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
PYTHON = "/usr/bin/python3"  # the interpreter that has torch 1.13


def binary(name):
    """Path of a built target, e.g. binary("gpurun"); skips the test if it was not built."""
    var = "GPURUN_BIN_" + name.upper().replace("-", "_")
    path = os.environ.get(var)
    if not path or not os.path.exists(path):
        raise unittest.SkipTest(f"{name} not built ({var} unset)")
    return path


def run(cmd, timeout=60, env=None, input=None, check=False, **kw):
    """Runs cmd, returns CompletedProcess with text stdout/stderr. Never hangs past timeout."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env,
                          input=input, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                             f"stderr:\n{proc.stderr}")
    return proc


def start(cmd, env=None, **kw):
    """Starts cmd in its own session (so a test can signal the whole tree), pipes captured."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full_env, start_new_session=True, **kw)


def free_port():
    """A port that was free a moment ago (only for tests that need a *busy* or fixed port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still "exists"; treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def main():
    unittest.main(verbosity=2)
