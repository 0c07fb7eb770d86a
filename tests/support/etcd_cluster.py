"""A real etcd cluster (Debian's etcd-server 3.4) of 1 or 3 members on 127.0.0.1 for tests and
benches: free ports, a temporary data dir, each member the caller's own child process (its own
process group), ready when every member's log says it serves clients and a leader is known;
stop() kills only those members and removes the data. Skips the test when etcd is not installed.
"""
import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.request

from testlib import free_port


def _die_with_parent():
    # PR_SET_PDEATHSIG = 1: a member never outlives a test process that was killed.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def etcd_binary():
    return shutil.which("etcd")


class EtcdCluster:
    def __init__(self, members=1, timeout=60):
        exe = etcd_binary()
        if not exe:
            raise unittest.SkipTest("etcd not installed (apt-get install etcd-server)")
        self.dir = tempfile.mkdtemp(prefix="gpurun_etcd_")
        self.members = []
        for i in range(members):
            self.members.append({"name": f"m{i}", "client": free_port(), "peer": free_port()})
        cluster = ",".join(f"{m['name']}=http://127.0.0.1:{m['peer']}" for m in self.members)
        for m in self.members:
            client = f"http://127.0.0.1:{m['client']}"
            peer = f"http://127.0.0.1:{m['peer']}"
            m["log"] = os.path.join(self.dir, f"{m['name']}.log")
            with open(m["log"], "w") as log:
                m["proc"] = subprocess.Popen(
                    [exe, "--name", m["name"], "--data-dir", os.path.join(self.dir, m["name"]),
                     "--listen-client-urls", client, "--advertise-client-urls", client,
                     "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                     "--initial-cluster", cluster, "--initial-cluster-state", "new"],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        for m in self.members:
            while "ready to serve client requests" not in self.log(m):
                if m["proc"].poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"etcd member {m['name']} did not start:\n" + self.log(m))
                time.sleep(0.02)
        self.leader(timeout=max(1.0, deadline - time.monotonic()))

    def log(self, m):
        with open(m["log"]) as f:
            return f.read()

    def endpoints(self, first=None):
        """HOST:PORT list, comma-separated; `first` (a member) leads the list."""
        ms = sorted(self.members, key=lambda m: m is not first)
        return ",".join(f"127.0.0.1:{m['client']}" for m in ms)

    def status(self, m, timeout=2):
        req = urllib.request.Request(f"http://127.0.0.1:{m['client']}/v3/maintenance/status",
                                     data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.load(r)

    def leader(self, timeout=30, alive_only=True):
        """The member that is the raft leader (waits, bounded, for an election)."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.members:
                if alive_only and m["proc"].poll() is not None:
                    continue
                try:
                    st = self.status(m)
                except OSError:
                    continue
                if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                    return m
            if time.monotonic() > deadline:
                raise AssertionError("etcd cluster has no leader")
            time.sleep(0.05)

    def kill(self, m):
        if m["proc"].poll() is None:
            os.killpg(m["proc"].pid, signal.SIGKILL)
            m["proc"].wait(timeout=10)

    def stop(self):
        for m in self.members:
            if "proc" in m:
                self.kill(m)
        shutil.rmtree(self.dir, ignore_errors=True)
