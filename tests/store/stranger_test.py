"""Issue 16, section 2: only the job may use its store. A real 2-rank PyTorch job runs under gpurun
(peer uid check on by default); another local user (`nobody`, through runuser/setpriv) attacks
its store the ways that hung or crashed such jobs before: an ADD to the store-based barrier key
and SETs over the gloo rendezvous keys. The stranger's connections must be refused before any
byte is read (no reply ever arrives), gpurun must log the refusal naming the uid, and the job
must finish correctly. As a control the same probe run as the job's own uid is answered.
Needs root (to switch uid); skips otherwise."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import storelib  # noqa: E402
import testlib  # noqa: E402
from testlib import binary, start, wait_until  # noqa: E402

JOB = os.path.join(storelib.HERE, "stranger_job.py")

# Runs as the stranger: raw sockets only, so it needs nothing but python3. Prints one JSON object:
# attack name -> "refused" (EOF/RST without a reply byte) or "answered".
ATTACKER = r"""
import json, socket, struct, sys
port = int(sys.argv[1])
def s(x): return struct.pack("<Q", len(x)) + x
def attempt(payload, want):
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        return "refused"
    try:
        c.settimeout(10)
        try:
            c.sendall(payload)
        except OSError:
            return "refused"
        got = b""
        while len(got) < want:
            b = c.recv(want - len(got))
            if not b:
                return "refused"
            got += b
        return "answered"
    except (ConnectionResetError, BrokenPipeError):
        return "refused"
    except socket.timeout:
        return "timeout"
    finally:
        c.close()
V2 = b"\x00\xce\xf7\x85\x3c"
res = {}
if sys.argv[2] == "probe":
    res["probe"] = attempt(b"\x06", 8)
    print(json.dumps(res))
    sys.exit(0)
# 1.13 ADD (type 3) to the barrier key: reply is an i64.
res["add_barrier_key"] = attempt(b"\x03" + s(b"/default_pg/0//store_based_barrier_key:1")
                                 + struct.pack("<q", 1), 8)
# 2.x SETs over the gloo rendezvous keys, then PING (4-byte reply) to see if anything was read.
sets = b"".join(b"\x01" + s(f"/default_pg/0/0/{r}".encode()) + s(b"garbage") for r in (0, 1))
res["set_gloo_keys"] = attempt(V2 + sets + b"\x0d" + struct.pack("<I", 7), 4)
# A harmless GETNUMKEYS (1.13 type 6, i64 reply): the control.
res["probe"] = attempt(b"\x06", 8)
print(json.dumps(res))
"""


def as_nobody(cmd):
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--", *cmd]
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]


class StrangerTest(unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to run the attacker as another uid")
        if not (shutil.which("runuser") or shutil.which("setpriv")):
            raise unittest.SkipTest("neither runuser nor setpriv is installed")
        self.dir = tempfile.mkdtemp(prefix="gpurun_stranger_")
        os.chmod(self.dir, 0o755)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def attack(self, port, stranger):
        cmd = [storelib.PYTHON, "-c", ATTACKER, str(port), "attack" if stranger else "probe"]
        p = testlib.run(as_nobody(cmd) if stranger else cmd, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout.strip().splitlines()[-1])

    def test_stranger_is_refused_and_the_job_finishes(self):
        gpurun = binary("gpurun")
        job = start([gpurun, "--nproc-per-node", "2", storelib.PYTHON, JOB],
                    env={"STRANGER_DIR": self.dir, "OMP_NUM_THREADS": "1"})
        try:
            port_file = os.path.join(self.dir, "port")
            wait_until(lambda: os.path.exists(port_file), timeout=60, what="the job's port file")
            with open(port_file) as f:
                port = int(f.read())
            stranger = self.attack(port, stranger=True)
            self.assertEqual(stranger, {"add_barrier_key": "refused", "set_gloo_keys": "refused",
                                        "probe": "refused"})
            own = self.attack(port, stranger=False)  # control: the probe as the job's uid
            self.assertEqual(own["probe"], "answered")
            open(os.path.join(self.dir, "go"), "w").close()
            out, err = job.communicate(timeout=120)
        finally:
            if job.poll() is None:
                os.killpg(job.pid, 9)
                job.wait()
        self.assertEqual(job.returncode, 0, err[-4000:])
        ok = sorted(line[line.index("job ok"):] for line in out.splitlines() if "job ok" in line)
        self.assertEqual(ok, ["job ok rank=0 sum=3", "job ok rank=1 sum=3"])
        self.assertIn("refusing connection from 127.0.0.1", err)
        self.assertIn("it belongs to uid 65534", err)


if __name__ == "__main__":
    testlib.main()
