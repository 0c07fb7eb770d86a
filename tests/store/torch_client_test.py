"""Interop (a): PyTorch 1.13's own TCPStore client (is_master=False) against gpurun-store.

Every op of the 1.13 Python API (set/get/add/compare_set/wait with and without timeout,
delete_key, num_keys), binary values, wake-ups by other processes, add counters from many
processes, and a torch client sharing keys with gpurun's C++ client.
Run against PyTorch's own server instead with GPURUN_INTEROP_SERVER=torch (reference mode).
"""
import datetime
import json
import os
import random
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import storelib  # noqa: E402
from storelib import V113, i64, keys, s  # noqa: E402

import torch.distributed as dist  # noqa: E402

import torch_worker  # noqa: E402

ms = lambda n: datetime.timedelta(milliseconds=n)  # noqa: E731


def spawn_worker(server, job, *args):
    """Another process (forked, torch already loaded) running one torch_worker job."""
    return storelib.Forked(torch_worker.run, server.host, server.port, job, list(args))


def finish(proc, timeout=60):
    return proc.result(timeout)


class TorchClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = storelib.Server()
        cls.store = storelib.torch_store(cls.server.host, cls.server.port, timeout=30)

    @classmethod
    def tearDownClass(cls):
        del cls.store
        cls.server.stop()

    def tearDown(self):
        self.assertTrue(self.server.alive(), "store server died")

    def test_set_get_binary_values(self):
        rnd = random.Random(1234)
        values = {
            "a/empty": b"",
            "a/text": b"v1",
            "a/all_bytes": bytes(range(256)),
            "a/zeros": b"\x00" * 17,
            "a/one_mib": rnd.randbytes(1 << 20),
            "a/ключ ü": "unicode value ✓".encode(),
        }
        for k, v in values.items():
            self.store.set(k, v)
        for k, v in values.items():
            self.assertEqual(self.store.get(k), v, k)
        self.store.set("a/text", b"overwritten")
        self.assertEqual(self.store.get("a/text"), b"overwritten")
        self.store.set("a/str", "a python str")  # the binding encodes str as utf-8
        self.assertEqual(self.store.get("a/str"), b"a python str")

    def test_add(self):
        self.assertEqual(self.store.add("add/ctr", 5), 5)  # absent counts as 0
        self.assertEqual(self.store.add("add/ctr", -2), 3)
        self.assertEqual(self.store.add("add/ctr", 0), 3)  # read without changing
        self.assertEqual(self.store.get("add/ctr"), b"3")  # stored as ASCII decimal
        self.assertEqual(self.store.add("add/neg", -7), -7)
        self.assertEqual(self.store.get("add/neg"), b"-7")
        self.assertEqual(self.store.add("add/big", 2**62), 2**62)
        self.assertEqual(self.store.add("add/big", 2**62 - 1), 2**63 - 1)
        self.store.set("add/preset", b"41")
        self.assertEqual(self.store.add("add/preset", 1), 42)

    def test_compare_set(self):
        # absent + expected empty -> stores desired, returns desired
        self.assertEqual(self.store.compare_set("cs/k", "", "x"), b"x")
        self.assertEqual(self.store.get("cs/k"), b"x")
        # absent + expected non-empty -> no change, returns expected
        self.assertEqual(self.store.compare_set("cs/absent", "e", "d"), b"e")
        self.assertFalse(self._exists("cs/absent"))
        # present and equal -> stores desired, returns it
        self.assertEqual(self.store.compare_set("cs/k", "x", "y"), b"y")
        # present and different -> no change, returns current
        self.assertEqual(self.store.compare_set("cs/k", "zzz", "q"), b"y")
        self.assertEqual(self.store.get("cs/k"), b"y")
        # binary values compare byte for byte
        self.store.set("cs/bin", b"\x00\x01")
        self.assertEqual(self.store.compare_set("cs/bin", b"\x00\x01", b"\xff"), b"\xff")

    def _exists(self, key):
        # A raw CHECK, not a timed-out wait(): with 1.13 a timed-out WAIT stays registered and a
        # later set sends a stray STOP_WAITING byte into that client's next reply.
        with storelib.RawConn(self.server.host, self.server.port) as raw:
            raw.send(bytes([V113.CHECK]) + keys("/" + key))
            return raw.recv_exact(1) == b"\x00"

    def test_wait_existing_keys_returns(self):
        self.store.set("w/a", b"1")
        self.store.set("w/b", b"2")
        t0 = time.monotonic()
        self.store.wait(["w/a", "w/b"])
        self.store.wait(["w/a", "w/b"], ms(100))
        self.store.wait([])
        self.assertLess(time.monotonic() - t0, 2.0)

    def test_wait_timeout_raises(self):
        # 1.13's client enforces the timeout itself: RuntimeError("Socket Timeout").
        c = storelib.torch_store(self.server.host, self.server.port, timeout=30)
        t0 = time.monotonic()
        with self.assertRaises(RuntimeError) as cm:
            c.wait(["w/never"], ms(300))
        elapsed = time.monotonic() - t0
        self.assertIn("Timeout", str(cm.exception))
        self.assertGreaterEqual(elapsed, 0.28)
        self.assertLess(elapsed, 3.0)

    def test_wait_default_timeout_and_get_timeout(self):
        # Without an explicit timeout, wait() and get() use the store's timeout.
        # (1.13 truncates the connect timeout to whole seconds, so 1 s is the shortest usable.)
        c = storelib.torch_store(self.server.host, self.server.port, timeout=1)
        for op in (lambda: c.wait(["w/never2"]), lambda: c.get("w/never3")):
            t0 = time.monotonic()
            with self.assertRaises(RuntimeError) as cm:
                op()
            elapsed = time.monotonic() - t0
            self.assertIn("Timeout", str(cm.exception))
            self.assertGreaterEqual(elapsed, 0.95)
            self.assertLess(elapsed, 4.0)

    def test_delete_key(self):
        self.store.set("del/k", b"v")
        before = self.store.num_keys()
        self.assertTrue(self.store.delete_key("del/k"))
        self.assertFalse(self.store.delete_key("del/k"))
        self.assertEqual(self.store.num_keys(), before - 1)
        self.assertFalse(self._exists("del/k"))
        self.store.set("del/k", b"again")
        self.assertEqual(self.store.get("del/k"), b"again")

    def test_prefix_store(self):
        p = dist.PrefixStore("job", self.store)
        p.set("k", b"pv")
        self.assertEqual(self.store.get("job/k"), b"pv")
        self.assertEqual(p.add("n", 2), 2)
        self.assertEqual(self.store.get("job/n"), b"2")

    def test_wait_woken_by_other_process(self):
        # Three processes park in wait(["wake/go"]); a fourth process sets it.
        waiters = [spawn_worker(self.server, "wait", "wake/go", "30") for _ in range(3)]
        getter = spawn_worker(self.server, "get", "wake/value", "30")
        for p in waiters + [getter]:
            storelib.wait_blocked_in_syscall(p.pid)
        t0 = time.monotonic()
        setter = spawn_worker(self.server, "set", "wake/go", "1")
        finish(setter)
        setter2 = spawn_worker(self.server, "set", "wake/value", "late value")
        finish(setter2)
        for p in waiters:
            self.assertTrue(finish(p)["woken"])
        self.assertEqual(bytes.fromhex(finish(getter)["value_hex"]), b"late value")
        self.assertLess(time.monotonic() - t0, 20)

    def test_add_counter_from_many_processes(self):
        nproc, nadds = 8, 200
        procs = [spawn_worker(self.server, "adds", "many/ctr", str(nadds)) for _ in range(nproc)]
        results = []
        for p in procs:
            r = finish(p)["results"]
            self.assertEqual(len(r), nadds)
            self.assertEqual(r, sorted(r))  # one client's adds are ordered
            results += r
        # every intermediate value was handed out exactly once: the adds were atomic
        self.assertEqual(sorted(results), list(range(1, nproc * nadds + 1)))
        self.assertEqual(self.store.get("many/ctr"), str(nproc * nadds).encode())

    # ---- raw 1.13 frames from a second "client" interleaved with the torch client -------------

    def test_wait_registration_then_wake_multi_key(self):
        # A WAIT on two keys answers exactly once, after the last one appears; other requests on
        # the same connection are served while the WAIT is outstanding (torch 1.13 does the same).
        with storelib.RawConn(self.server.host, self.server.port) as raw:
            raw.send(bytes([V113.WAIT]) + keys("/mw/x", "/mw/y"))
            raw.send(bytes([V113.CHECK]) + keys("/mw/x"))
            self.assertEqual(raw.recv_exact(1), b"\x01")  # NOT_READY: WAIT is registered
            self.store.set("mw/x", b"xval")
            # torch 1.13's set() sends SET and returns without a reply: read the key back on the
            # same torch connection so the server has applied the SET before our raw GET arrives
            # (else the GET can overtake it and get the empty "missing" reply).
            self.assertEqual(self.store.get("mw/x"), b"xval")
            raw.send(bytes([V113.GET]) + s("/mw/x"))
            self.assertEqual(raw.recv_exact(12), s("xval"))  # no STOP_WAITING yet
            self.assertTrue(raw.nothing_pending(0.05))
            self.store.set("mw/y", b"")
            self.assertEqual(raw.recv_exact(1), b"\x00")  # STOP_WAITING
            self.assertTrue(raw.nothing_pending(0.05))

    def test_wait_woken_by_add(self):
        with storelib.RawConn(self.server.host, self.server.port) as raw:
            raw.send(bytes([V113.WAIT]) + keys("/wa/ctr"))
            raw.send(bytes([V113.CHECK]) + keys("/wa/ctr"))
            self.assertEqual(raw.recv_exact(1), b"\x01")
            self.store.add("wa/ctr", 1)
            self.assertEqual(raw.recv_exact(1), b"\x00")

    def test_raw_add_reply_and_torch_reads_it(self):
        with storelib.RawConn(self.server.host, self.server.port) as raw:
            raw.send(bytes([V113.ADD]) + s("/raw/ctr") + i64(5))
            self.assertEqual(raw.recv_exact(8), i64(5))
            raw.send(bytes([V113.ADD]) + s("/raw/ctr") + i64(-2))
            self.assertEqual(raw.recv_exact(8), i64(3))
        self.assertEqual(self.store.get("raw/ctr"), b"3")


class NumKeysTest(unittest.TestCase):
    """num_keys on a fresh server, including the `init/` key a client given world_size adds."""

    def test_num_keys_counts_init_key(self):
        with storelib.Server() as server:
            c = storelib.torch_store(server.host, server.port)
            self.assertEqual(c.num_keys(), 0)
            c.set("a", b"1")
            c.set("b", b"2")
            self.assertEqual(c.num_keys(), 2)
            # world_size given: the constructor sends ADD "init/" 1 (no leading "/").
            w1 = storelib.torch_store(server.host, server.port, world_size=2)
            self.assertEqual(c.num_keys(), 3)
            w2 = storelib.torch_store(server.host, server.port, world_size=2)
            self.assertEqual(c.num_keys(), 3)
            with storelib.RawConn(server.host, server.port) as raw:
                raw.send(bytes([V113.GET]) + s("init/"))
                self.assertEqual(raw.recv_exact(9), s("2"))
            self.assertTrue(c.delete_key("a"))
            self.assertEqual(c.num_keys(), 2)
            del w1, w2


def ipv6_loopback_available():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


class Ipv6Test(unittest.TestCase):
    @unittest.skipUnless(ipv6_loopback_available(), "no IPv6 loopback here")
    def test_torch_client_over_ipv6(self):
        with storelib.Server(host="::1") as server:
            if not storelib.REFERENCE:
                self.assertIn("[::1]:", server.first_line)
            c = storelib.torch_store(server.host, server.port, world_size=1)
            c.set("k6", b"over ipv6")
            self.assertEqual(c.get("k6"), b"over ipv6")
            self.assertEqual(c.add("n6", 2), 2)
            self.assertEqual(c.num_keys(), 3)  # k6, n6 and init/


class CppClientSharingTest(unittest.TestCase):
    """A torch 1.13 client and gpurun's C++ TcpStore (both dialects) share one key space."""

    def run_share(self, dialect):
        client = storelib.testlib.binary("store_interop_client")
        with storelib.Server() as server:
            store = storelib.torch_store(server.host, server.port)
            store.set("shared/from_py", b"py\x00val")
            store.add("shared/ctr", 5)
            proc = subprocess.Popen(
                [client, "--host", server.host, "--port", str(server.port), "--dialect", dialect,
                 "--torch-prefix", "--scenario", "share"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            lines = []
            try:
                for line in iter(proc.stdout.readline, ""):
                    rec = json.loads(line)
                    lines.append(rec)
                    if rec.get("op") == "wait_begin":
                        store.set("shared/late", b"now")
                proc.wait(30)
            finally:
                if proc.poll() is None:
                    proc.kill()
            err = proc.stderr.read()
            proc.stdout.close()
            proc.stderr.close()
            self.assertEqual(proc.returncode, 0, err)
            by_op = {r["op"]: r for r in lines}
            self.assertEqual(bytes.fromhex(by_op["get"]["value_hex"]), b"py\x00val")
            self.assertEqual(by_op["add"]["result"], 12)
            self.assertTrue(by_op["wait"]["ok"])
            self.assertEqual(store.get("shared/from_cpp"), b"cpp\x01")
            self.assertEqual(store.add("shared/ctr", 0), 12)
            self.assertEqual(by_op["num_keys"]["result"], store.num_keys())

    def test_cpp_client_v2_dialect(self):
        if storelib.REFERENCE:
            self.skipTest("torch 1.13's server has no 2.x dialect")
        self.run_share("v2")

    def test_cpp_client_v113_dialect(self):
        self.run_share("v113")


if __name__ == "__main__":
    storelib.testlib.main()
