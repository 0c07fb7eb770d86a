#!/usr/bin/env python3
"""Bounded, loopback-only attacks on a gpurun-store binary (issue 16), printing one JSON object of
figures: the store's RSS and fds, what the attacker achieved, and the worst round-trip time a
well-behaved client saw meanwhile. Used for the README's before/after table:

    python3 bench/store/hardening_probe.py --store build/rendezvous/gpurun-store [--old]

--old: the binary predates issue 16 (no --frame-timeout flag). Every probe has a timeout; the
store runs on 127.0.0.1 with a fresh process per probe. Peak RSS is about 1 GiB for the old one.
"""
import argparse
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

V2 = b"\x00\xce\xf7\x85\x3c"


def s(x):
    return struct.pack("<Q", len(x)) + x


def set2(k, v):
    return b"\x01" + s(k) + s(v)


def get2(k):
    return b"\x03" + s(k)


def ping2(n):
    return b"\x0d" + struct.pack("<I", n)


def append2(k, v):
    return b"\x09" + s(k) + s(v)


def multi_get2(keys):
    return b"\x0a" + struct.pack("<Q", len(keys)) + b"".join(s(k) for k in keys)


class Store:
    def __init__(self, binary, args=(), preexec=None):
        self.p = subprocess.Popen([binary, "--port", "0", *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
        line = self.p.stdout.readline()
        m = re.search(r":(\d+)\s*$", line)
        if not m:
            raise SystemExit(f"store did not start: {line!r} {self.p.stderr.read()}")
        self.port = int(m.group(1))
        self.err = []
        threading.Thread(target=lambda: self.err.extend(self.p.stderr), daemon=True).start()

    def rss_mib(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
        return 0

    def fds(self):
        return len(os.listdir(f"/proc/{self.p.pid}/fd"))

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def conn(port, v2=True):
    c = socket.create_connection(("127.0.0.1", port), timeout=30)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if v2:
        c.sendall(V2)
    return c


def recv_exact(c, n):
    out = bytearray()
    while len(out) < n:
        b = c.recv(min(n - len(out), 1 << 20))
        if not b:
            raise ConnectionError("closed")
        out += b
    return bytes(out)


def closed(c, timeout):
    c.settimeout(timeout)
    try:
        while True:
            b = c.recv(65536)
            if not b:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


GOOD_CLIENT = r"""
import select, socket, struct, sys, time
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
c.sendall(b"\x00\xce\xf7\x85\x3c")
worst, n = 0.0, 0
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0)[0]:
    t0 = time.perf_counter()
    c.sendall(b"\x0d" + struct.pack("<I", n & 0xffffffff))
    got = b""
    while len(got) < 4:
        got += c.recv(4 - len(got))
    worst = max(worst, (time.perf_counter() - t0) * 1000)
    n += 1
    time.sleep(0.001)
print(f"{worst:.1f} {n}", flush=True)
"""


class GoodClient:
    """Pings in a loop from its own process (no GIL shared with the attacker); records the worst
    round trip (ms)."""

    def __init__(self, port):
        self.p = subprocess.Popen([sys.executable, "-c", GOOD_CLIENT, str(port)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.p.stdout.readline().strip() == "ready"
        self.n = 0

    def finish(self):
        out, _ = self.p.communicate("stop\n", timeout=60)
        worst, n = out.split()
        self.n = int(n)
        return float(worst)


def settle_rss(store, secs=3.0):
    peak = 0
    end = time.monotonic() + secs
    while time.monotonic() < end:
        peak = max(peak, store.rss_mib())
        time.sleep(0.05)
    return peak


def probe_multi_get(binary):
    st = Store(binary)
    try:
        w = conn(st.port)
        val = b"x" * (10 << 20)
        for i in range(10):
            w.sendall(set2(f"big/{i}".encode(), val))
        w.sendall(ping2(1))
        recv_exact(w, 4)
        base = st.rss_mib()
        good = GoodClient(st.port)
        a = conn(st.port)
        a.sendall(multi_get2([f"big/{i % 10}".encode() for i in range(100)]))  # 1 GB reply
        peak = settle_rss(st)
        a_closed = closed(a, 2)
        return {"rss_before_mib": base, "rss_peak_mib": peak, "attacker_closed": a_closed,
                "good_worst_ms": good.finish()}
    finally:
        st.stop()


def probe_pipelined_gets(binary):
    st = Store(binary)
    try:
        w = conn(st.port)
        w.sendall(set2(b"v", b"y" * (1 << 20)))
        w.sendall(ping2(1))
        recv_exact(w, 4)
        base = st.rss_mib()
        a = conn(st.port)
        a.sendall(b"".join(get2(b"v") for _ in range(300)))  # 300 MiB of replies, never read
        peak = settle_rss(st)
        return {"rss_before_mib": base, "rss_peak_mib": peak}
    finally:
        st.stop()


def probe_append(binary):
    st = Store(binary, ["--max-value-bytes", str(1 << 20)])
    try:
        a = conn(st.port)
        chunk = b"z" * (512 << 10)
        sent = 0
        try:
            for _ in range(100):
                a.sendall(append2(b"k", chunk))
                sent += 1
        except OSError:
            pass
        g = conn(st.port)
        g.sendall(get2(b"k"))
        n = struct.unpack("<Q", recv_exact(g, 8))[0]
        return {"value_mib_under_1mib_limit": round(n / (1 << 20), 2)}
    finally:
        st.stop()


def probe_fds(binary, old):
    def low_nofile():
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    st = Store(binary, ["--no-raise-fd-limit"], preexec=low_nofile)
    conns = []
    try:
        for _ in range(1100):
            try:
                conns.append(socket.create_connection(("127.0.0.1", st.port), timeout=5))
            except OSError:
                break
        time.sleep(1.0)  # let the store accept (or refuse) the backlog
        fds = st.fds()
        return {"nofile": 1024, "store_fds_after_1100_conns": fds, "fds_left": 1024 - fds}
    finally:
        for c in conns:
            c.close()
        st.stop()


def probe_slowloris(binary, old):
    st = Store(binary, [] if old else ["--frame-timeout", "2s"])
    try:
        a = conn(st.port)
        t0 = time.monotonic()
        a.sendall(b"\x01")  # SET, then one byte per second
        c = False
        for _ in range(6):
            a.sendall(b"\x05")
            if closed(a, 1.0):
                c = True
                break
        return {"closed": c, "after_s": round(time.monotonic() - t0, 1) if c else None}
    finally:
        st.stop()


def probe_log_flood(binary):
    st = Store(binary)
    try:
        for _ in range(2000):
            c = socket.create_connection(("127.0.0.1", st.port), timeout=5)
            c.sendall(b"\x42")
            closed(c, 5)
            c.close()
        time.sleep(0.5)
        return {"bad_connections": 2000,
                "warn_lines": sum(1 for line in st.err if "WARN" in line)}
    finally:
        st.stop()


def probe_big_set(binary):
    st = Store(binary)
    try:
        a = conn(st.port)
        frame = set2(b"huge", b"h" * (100 * 1000 * 1000))
        good = GoodClient(st.port)
        time.sleep(0.3)
        t0 = time.perf_counter()
        a.sendall(frame)
        a.sendall(ping2(9))
        recv_exact(a, 4)
        took = (time.perf_counter() - t0) * 1000
        time.sleep(0.1)
        worst = good.finish()
        return {"set_100mb_ms": round(took), "good_worst_ms": worst, "good_pings": good.n}
    finally:
        st.stop()


def probe_big_get(binary):
    st = Store(binary)
    try:
        a = conn(st.port)
        a.sendall(set2(b"huge", b"h" * (100 * 1000 * 1000)))
        a.sendall(ping2(1))
        recv_exact(a, 4)
        good = GoodClient(st.port)
        time.sleep(0.3)
        t0 = time.perf_counter()
        a.sendall(get2(b"huge"))
        n = struct.unpack("<Q", recv_exact(a, 8))[0]
        recv_exact(a, n)
        took = (time.perf_counter() - t0) * 1000
        time.sleep(0.1)
        worst = good.finish()
        return {"get_100mb_ms": round(took), "good_worst_ms": worst, "good_pings": good.n}
    finally:
        st.stop()


def probe_stranger(binary):
    st = Store(binary)
    try:
        who = ["runuser", "-u", "nobody", "--"] if shutil.which("runuser") else None
        if os.geteuid() != 0 or not who:
            return {"skipped": "needs root and runuser"}
        code = ("import socket,struct,sys\n"
                "c=socket.create_connection(('127.0.0.1',int(sys.argv[1])),timeout=5)\n"
                "k=b'/default_pg/0//store_based_barrier_key:1'\n"
                "c.sendall(b'\\x03'+struct.pack('<Q',len(k))+k+struct.pack('<q',1))\n"
                "try:\n  print('answered' if c.recv(8) else 'refused')\n"
                "except OSError:\n  print('refused')\n")
        p = subprocess.run([*who, "/usr/bin/python3", "-c", code, str(st.port)], capture_output=True,
                           text=True, timeout=30)
        return {"stranger_add": p.stdout.strip() or p.stderr.strip()[-200:]}
    finally:
        st.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--old", action="store_true")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    probes = {
        "multi_get_100x10MiB_unread": lambda: probe_multi_get(a.store),
        "pipelined_300x1MiB_gets_unread": lambda: probe_pipelined_gets(a.store),
        "append_100x512KiB": lambda: probe_append(a.store),
        "1100_connections_nofile_1024": lambda: probe_fds(a.store, a.old),
        "slowloris_1_byte_per_s": lambda: probe_slowloris(a.store, a.old),
        "log_flood_2000_bad_conns": lambda: probe_log_flood(a.store),
        "set_100MB_vs_pinging_client": lambda: probe_big_set(a.store),
        "get_100MB_vs_pinging_client": lambda: probe_big_get(a.store),
        "stranger_uid_add": lambda: probe_stranger(a.store),
    }
    out = {}
    for name, fn in probes.items():
        if a.only and a.only not in name:
            continue
        out[name] = fn()
        print(name, json.dumps(out[name]), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
