"""Interop (b): gpurun's C++ TcpStore (Dialect::kV113, torch_key_prefix) against PyTorch 1.13's own
TCPStore server, hosted here with is_master=True. store_interop_client prints one JSON line per
op; we check what it printed and what the Python side reads back from the same server.
"""
import datetime
import json
import os
import selectors
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import storelib  # noqa: E402
from storelib import V113, keys, s  # noqa: E402

import torch.distributed as dist  # noqa: E402


def hexb(h):
    return bytes.fromhex(h)


class CppClientAgainstTorchServer(unittest.TestCase):
    def setUp(self):
        self.client = storelib.testlib.binary("store_interop_client")
        self.master = dist.TCPStore("127.0.0.1", 0, None, True, datetime.timedelta(seconds=30),
                                    wait_for_workers=False)
        self.port = self.master.port

    def tearDown(self):
        del self.master

    def raw_check(self, key):
        with storelib.RawConn("127.0.0.1", self.port) as raw:
            raw.send(bytes([V113.CHECK]) + keys(key))
            return raw.recv_exact(1) == b"\x00"

    def run_client(self, *args, actions=None, timeout=60):
        """Runs the client; `actions` maps an op name to a callback run when that line arrives."""
        cmd = [self.client, "--host", "127.0.0.1", "--port", str(self.port), "--dialect", "v113",
               "--torch-prefix", *args]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        records, buf = [], b""
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise AssertionError(f"client stalled; lines so far: {records}")
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    rec = json.loads(line)
                    records.append(rec)
                    if actions and rec["op"] in actions:
                        actions[rec["op"]]()
            proc.wait(10)
        finally:
            sel.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            err = proc.stderr.read().decode(errors="replace")
            proc.stdout.close()
            proc.stderr.close()
        self.assertEqual(proc.returncode, 0, f"client failed: {err}\n{records}")
        self.assertEqual(records[-1]["op"], "done", records)
        return records, err

    def test_every_op(self):
        m = self.master
        m.set("py/bin", bytes(range(256)))
        m.add("py/ctr", 10)
        recs, _ = self.run_client("--scenario", "all", actions={
            "wait_begin": lambda: m.set("c/late", b"go"),
            "get_begin": lambda: m.set("c/late2", b"\x00late2"),
        })
        by = {}
        for r in recs:
            self.assertNotIn(r["op"], by, f"duplicate op line {r}")
            by[r["op"]] = r
        ok = lambda op: self.assertTrue(by[op]["ok"], by[op])  # noqa: E731
        for op in ("connect", "set", "get", "set_binary", "get_binary", "set_empty", "get_empty",
                   "get_py", "add", "compare_set", "check", "wait_present", "num_keys",
                   "delete_key", "wait_begin", "wait", "get_begin", "get_blocking", "set_keep",
                   "final_num_keys"):
            ok(op)
        # what the client saw
        self.assertEqual(hexb(by["get"]["value_hex"]), b"v1")
        self.assertEqual(hexb(by["get_binary"]["value_hex"]), bytes(range(255, -1, -1)))
        self.assertEqual(by["get_empty"]["value_hex"], "")
        self.assertEqual(hexb(by["get_py"]["value_hex"]), bytes(range(256)))
        self.assertEqual((by["add"]["first"], by["add"]["second"], by["add"]["py_ctr"]), (5, 3, 11))
        cs = by["compare_set"]
        self.assertEqual((cs["absent_empty"], cs["absent_nonempty"], cs["equal"], cs["mismatch"]),
                         ("x", "e", "y", "y"))
        self.assertEqual((by["check"]["present"], by["check"]["missing"], by["check"]["none"]),
                         (True, False, True))
        # /py/bin /py/ctr /c/k1 /c/bin /c/empty /c/ctr /c/cs (c/cs2 was never created)
        self.assertEqual(by["num_keys"]["result"], 7)
        self.assertEqual((by["delete_key"]["first"], by["delete_key"]["second"]), (True, False))
        self.assertEqual(hexb(by["get_blocking"]["value_hex"]), b"\x00late2")
        # the wait timeout: a StoreTimeout after ~300 ms that names the key and the server
        wt = by["wait_timeout"]
        self.assertFalse(wt["ok"], wt)
        self.assertEqual(wt["error_type"], "StoreTimeout", wt)
        self.assertIn("c/never", wt["error"])
        self.assertIn(str(self.port), wt["error"])
        self.assertGreaterEqual(wt["ms"], 290)
        self.assertLess(wt["ms"], 3000)
        # ops the 1.13 wire protocol lacks: emulated, or refused locally with a clear error; either
        # way the connection stays usable (every later op above succeeded).
        for op, check in (("append", lambda r: r["value"] == "abcd"),
                          ("multi_get", lambda r: [hexb(h) for h in r["values_hex"]] ==
                           [b"two", b"one"])):
            r = by[op]
            if r["ok"]:
                self.assertTrue(check(r), r)
            else:
                self.assertTrue(r["error"], r)
        if by["multi_set"]["ok"] and by["multi_get"]["ok"]:
            self.assertEqual(m.get("c/m1"), b"one")
        # what the server holds, read by torch's own client
        self.assertEqual(m.get("c/bin"), bytes(range(255, -1, -1)))
        self.assertEqual(m.get("c/empty"), b"")
        self.assertEqual(m.get("c/ctr"), b"3")
        self.assertEqual(m.get("py/ctr"), b"11")
        self.assertEqual(m.get("c/cs"), b"y")
        self.assertEqual(m.get("c/keep"), b"cpp")
        self.assertFalse(self.raw_check("/c/cs2"))
        self.assertFalse(self.raw_check("/c/k1"))  # deleted by the client
        self.assertTrue(self.raw_check("/c/late"))
        self.assertEqual(by["final_num_keys"]["result"], m.num_keys())

    def test_world_size_sends_init_add(self):
        # With world_size the client announces itself like a PyTorch worker: ADD "init/" 1.
        self.run_client("--scenario", "connect", "--world-size", "2")
        self.run_client("--scenario", "connect", "--world-size", "2")
        with storelib.RawConn("127.0.0.1", self.port) as raw:
            raw.send(bytes([V113.GET]) + s("init/"))
            self.assertEqual(raw.recv_exact(9), s("2"))

    def test_auto_dialect_finds_1_13(self):
        # Dialect::kAuto (what the SDK uses under torchrun): torch 1.13's server drops the 2.x
        # handshake, so the client speaks 1.13 on a new connection; its ADD lands on the key.
        self.run_client("--dialect", "auto", "--scenario", "connect", "--world-size", "2")
        with storelib.RawConn("127.0.0.1", self.port) as raw:
            raw.send(bytes([V113.GET]) + s("init/"))
            self.assertEqual(raw.recv_exact(9), s("1"))

    def test_connect_retries_until_server_appears(self):
        # The client retries connect() with backoff, so it may start before the server.
        port = storelib.testlib.free_port()
        proc = subprocess.Popen([self.client, "--host", "127.0.0.1", "--port", str(port),
                                 "--dialect", "v113", "--torch-prefix", "--scenario", "connect"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            late = dist.TCPStore("127.0.0.1", port, None, True, datetime.timedelta(seconds=30),
                                 wait_for_workers=False)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(proc.returncode, 0, err)
        recs = [json.loads(x) for x in out.splitlines()]
        self.assertTrue(recs[0]["ok"], recs)
        del late

    def test_unreachable_server_error_names_address(self):
        port = storelib.testlib.free_port()
        t0 = time.monotonic()
        proc = subprocess.run([self.client, "--host", "127.0.0.1", "--port", str(port),
                               "--dialect", "v113", "--scenario", "connect",
                               "--connect-timeout-ms", "500"], capture_output=True, text=True, timeout=30)
        self.assertLess(time.monotonic() - t0, 25)
        self.assertNotEqual(proc.returncode, 0)
        rec = json.loads(proc.stdout.splitlines()[0])
        self.assertFalse(rec["ok"])
        self.assertIn(f"127.0.0.1:{port}", rec["error"])


if __name__ == "__main__":
    storelib.testlib.main()
