"""Helpers for the store interop tests: start gpurun's store or PyTorch's own TCPStore server, and
speak the raw TCPStore wire protocol (1.13 and 2.x dialects) from Python.

Byte layouts follow rendezvous/WIRE_FORMAT.md and rendezvous/PROTOCOL.md: every
integer is little-endian, strings/values are a u64 length followed by the raw bytes.
"""
import json
import os
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "support"))
import testlib  # noqa: E402

PYTHON = testlib.PYTHON
HERE = os.path.dirname(os.path.abspath(__file__))

# Dev/reference mode: GPURUN_INTEROP_SERVER=torch runs the tests that make sense against PyTorch
# 1.13's own server instead of gpurun-store (proves the tests themselves are right). Tests of
# behaviour that only gpurun promises are skipped in that mode.
REFERENCE = os.environ.get("GPURUN_INTEROP_SERVER", "gpurun") == "torch"


def ours_only(fn):
    return unittest.skipIf(REFERENCE, "gpurun-only behaviour (reference server is torch)")(fn)


# ---- wire encoding ----------------------------------------------------------------------------

class V113:
    SET, COMPARE_SET, GET, ADD, CHECK, WAIT, GETNUMKEYS, WATCH_KEY, DELETE_KEY = range(9)


class V2:
    (VALIDATE, SET, COMPARE_SET, GET, ADD, CHECK, WAIT, GETNUMKEYS, DELETE_KEY, APPEND, MULTI_GET,
     MULTI_SET, CANCEL_WAIT, PING, QUEUE_PUSH, QUEUE_POP, QUEUE_LEN) = range(17)


MAGIC = 0x3C85F7CE
MAGIC_BYTES = struct.pack("<I", MAGIC)  # CE F7 85 3C
assert MAGIC_BYTES == bytes([0xCE, 0xF7, 0x85, 0x3C])
READY, NOT_READY = b"\x00", b"\x01"
STOP_WAITING, WAIT_CANCELED = b"\x00", b"\x01"


def u8(v):
    return struct.pack("<B", v)


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def i64(v):
    return struct.pack("<q", v)


def s(x):
    """A `str`/`bytes` field: u64 length + raw bytes."""
    if isinstance(x, str):
        x = x.encode()
    return u64(len(x)) + x


def keys(*ks):
    return u64(len(ks)) + b"".join(s(k) for k in ks)


def validate():
    return u8(V2.VALIDATE) + MAGIC_BYTES


class RawConn:
    """A blocking TCP connection with exact-length reads under a deadline."""

    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n, timeout=None):
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes "
                                      f"(got {buf.hex()})")
            buf += chunk
        return buf

    def nothing_pending(self, wait=0.05):
        """True if no byte arrives within `wait` seconds (the connection stays open)."""
        self.sock.settimeout(wait)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except socket.timeout:
            return True
        return False  # a byte arrived, or the peer closed

    def closed_by_peer(self, timeout=5.0):
        """True if the server closes the connection (EOF or RST) within `timeout`."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                data = self.sock.recv(4096)
                if not data:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return False

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- servers ----------------------------------------------------------------------------------

_LISTEN_RE = re.compile(r"listening on (\S+):(\d+)\s*$")


def _read_first_line(proc, timeout, what):
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    line = b""
    fd = proc.stdout.fileno()
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not sel.select(left):
            proc.kill()
            raise AssertionError(f"{what} printed no address within {timeout}s")
        ch = os.read(fd, 1)  # unbuffered: never read past the first line
        if ch == b"":
            raise AssertionError(f"{what} exited {proc.wait()} before printing its address; "
                                 f"stderr: {proc.stderr.read().decode(errors='replace')}")
        line += ch
    sel.close()
    return line.decode(errors="replace")


class Server:
    """A store server process. `kind` is "gpurun" (gpurun-store --port 0) or "torch" (PyTorch
    1.13's TCPStore(is_master=True) hosted by /usr/bin/python3)."""

    TORCH_HOST = (
        "import datetime, sys, torch.distributed as d\n"
        "s = d.TCPStore(sys.argv[1], 0, None, True, datetime.timedelta(seconds=300),"
        " wait_for_workers=False)\n"
        "print(f'torch store listening on {sys.argv[1]}:{s.port}', flush=True)\n"
        "sys.stdin.read()\n")

    def __init__(self, kind=None, host="127.0.0.1", extra_args=()):
        self.kind = kind or ("torch" if REFERENCE else "gpurun")
        if self.kind == "gpurun":
            cmd = [testlib.binary("gpurun-store"), "--host", host, "--port", "0", *extra_args]
            stdin = subprocess.DEVNULL
        else:
            cmd = [PYTHON, "-c", self.TORCH_HOST, host]
            stdin = subprocess.PIPE
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=stdin, start_new_session=True)
        line = _read_first_line(self.proc, 30, " ".join(cmd))
        m = _LISTEN_RE.search(line)
        if not m:
            self.stop()
            raise AssertionError(f"unexpected first line from {cmd[0]}: {line!r}")
        self.host = m.group(1).strip("[]")
        self.port = int(m.group(2))
        self.first_line = line

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for f in (self.proc.stdout, self.proc.stderr, self.proc.stdin):
            if f:
                f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def torch_store(host, port, world_size=None, timeout=30.0):
    """A PyTorch 1.13 TCPStore client (is_master=False)."""
    import datetime
    import torch.distributed as dist
    return dist.TCPStore(host, port, world_size, False, datetime.timedelta(seconds=timeout))


def wait_blocked_in_syscall(pid, timeout=20.0):
    """Waits until process `pid`'s main thread sleeps in a socket read/poll (a torch client parked
    in wait()/get()). A condition, not a sleep: /proc/<pid>/syscall names the blocking call."""
    blocking = {"0", "7", "45", "232", "271", "281"}  # read poll recvfrom epoll_wait ppoll epoll_pwait

    def parked():
        try:
            with open(f"/proc/{pid}/syscall") as f:
                nr = f.read().split()[0]
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError, ProcessLookupError):
            return False
        return state == "S" and nr in blocking

    testlib.wait_until(parked, timeout=timeout, interval=0.01, what=f"pid {pid} to block in recv")


class Forked:
    """A child forked from the test process (torch already imported: no 5 s re-import per child)
    running torch_worker.run(); its result comes back as JSON through a pipe."""

    def __init__(self, fn, *args):
        r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # child
            code = 0
            try:
                os.close(r)
                payload = json.dumps(fn(*args)).encode()
            except BaseException:  # noqa: B902 - report anything to the parent
                payload = json.dumps({"error": traceback.format_exc()}).encode()
                code = 1
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(w, view):]
            finally:
                os._exit(code)
        os.close(w)
        self.fd = r

    def result(self, timeout=60.0):
        deadline = time.monotonic() + timeout
        data = b""
        sel = selectors.DefaultSelector()
        sel.register(self.fd, selectors.EVENT_READ)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
                    raise AssertionError(f"child {self.pid} gave no result within {timeout}s")
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                data += chunk
        finally:
            sel.close()
            os.close(self.fd)
        _, status = os.waitpid(self.pid, 0)
        out = json.loads(data) if data else {}
        if os.waitstatus_to_exitcode(status) != 0 or "error" in out:
            raise AssertionError(f"child {self.pid} failed ({status}): {out.get('error')}")
        return out
