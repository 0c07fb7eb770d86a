"""gpurun side by side with torchrun 1.13 (`python3 -m torch.distributed.run`), where torchrun's
behaviour is the spec (issue 14): the -t console header, the failure table with three failing
ranks, and the signal dispositions workers get when the launcher was started in the background.

torch 1.13 on Python 3.11 crashes on the default -r 0 / -t 0 and on 3 (Std.from_str returns
None, pytorch#92319), so torchrun is always given -r 1 -t 1 here; gpurun gets the same flags."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from testlib import PYTHON, binary, run, start, wait_until

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_launcher import read_pids  # noqa: E402


def have_torchrun():
    return run([PYTHON, "-c", "import torch.distributed.run"], timeout=60).returncode == 0


def torchrun(*args, timeout=120, env=None):
    return run([PYTHON, "-m", "torch.distributed.run", *args], timeout=timeout, env=env)


def gpurun(*args, timeout=120, env=None):
    full = {"PYTHON_EXEC": PYTHON}
    full.update(env or {})
    return run([binary("gpurun"), *args], timeout=timeout, env=full)


def torchrun_block(stderr):
    """The ChildFailedError block, with times and pids masked."""
    m = re.search(r"^=+\n.*?^=+\n", stderr, re.M | re.S)
    assert m, stderr
    block = re.sub(r"time      : \S+", "time      : T", m.group(0))
    return re.sub(r"\(pid: \d+\)", "(pid: P)", block)


@unittest.skipUnless(have_torchrun(), "torch.distributed.run not importable by " + PYTHON)
class TorchrunParity(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="gpurun_trparity_")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_tee_header_is_torchruns(self):
        script = self.write("w.py", "import os\nprint('hi from', os.environ['RANK'])\n"
                                    "print('line two', os.environ['RANK'])\n")
        args = ["--nproc_per_node", "2", "-r", "1", "-t", "1", "--role", "trainer",
                "--log_dir", os.path.join(self.dir, "logs"), script]
        t = torchrun(*args)
        self.assertEqual(t.returncode, 0, t.stderr)
        g = gpurun(*args)
        self.assertEqual(g.returncode, 0, g.stderr)
        self.assertEqual(sorted(g.stdout.splitlines()), sorted(t.stdout.splitlines()))
        self.assertIn("[trainer1]:line two", g.stdout)

    def test_three_failing_ranks_give_torchruns_table(self):
        go = os.path.join(self.dir, "go")
        pid_dir = os.path.join(self.dir, "pids")
        os.mkdir(pid_dir)
        script = self.write("f.py", f"""import os, sys, time
r = os.environ["RANK"]
with open("{pid_dir}/" + r + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename("{pid_dir}/" + r + ".tmp", "{pid_dir}/" + r + ".pid")
if r == "0":
    time.sleep(120)
while not os.path.exists("{go}"):
    time.sleep(0.01)
sys.exit(3)
""")
        args = ["--nproc_per_node", "4", "-r", "1", "-t", "1", script]
        # torchrun: its 5 s monitor interval sees all three failures at once.
        open(go, "w").close()
        t = torchrun(*args)
        self.assertEqual(t.returncode, 1, t.stderr)
        os.remove(go)
        for f in os.listdir(pid_dir):
            os.remove(os.path.join(pid_dir, f))
        # gpurun sees exits at once: it is stopped while the three exit, so that they exit
        # "at once" for it too (a real machine's version of the same race).
        proc = start([binary("gpurun"), *args], env={"PYTHON_EXEC": PYTHON})
        try:
            pids = read_pids(pid_dir, 4, timeout=60)
            os.kill(proc.pid, signal.SIGSTOP)
            open(go, "w").close()

            def zombie(pid):
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().rsplit(")", 1)[1].split()[0] == "Z"
            wait_until(lambda: all(zombie(p) for p in pids[1:]), timeout=30,
                       what="ranks 1-3 to exit")
            os.kill(proc.pid, signal.SIGCONT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
        self.assertEqual(proc.returncode, 3, err)
        gb, tb = torchrun_block(err), torchrun_block(t.stderr)
        # Which of the three is the root cause depends on reaping order: compare the entries.
        entries = lambda b: sorted(re.findall(r"^  rank      : .*\n  exitcode  : .*$", b, re.M))
        self.assertEqual(entries(gb), entries(tb))
        self.assertEqual(len(entries(gb)), 3)
        norm = lambda b: re.sub(r"^\[\d\]:\n(  .*\n)+", "[i]:\n", b, flags=re.M)
        self.assertEqual(norm(gb), norm(tb))  # the layout, title, host and separators
        self.assertEqual(re.findall(r"host      : (\S+)", gb), re.findall(r"host      : (\S+)", tb))

    def test_background_launch_dispositions_match_torchrun(self):
        """Started with `&` from a script (SIGINT/SIGQUIT ignored), workers get what
        torchrun's workers get."""
        out = os.path.join(self.dir, "status")
        probe = ["--no_python", "/bin/sh", "-c", f"grep -E '^Sig(Ign|Blk)' /proc/self/status "
                                                  f"> {out}.$RANK"]
        masks = {}
        for name, cmd in (("torchrun", [PYTHON, "-m", "torch.distributed.run", "-r", "1", "-t",
                                        "1", *probe]),
                          ("gpurun", [binary("gpurun"), *probe])):
            p = subprocess.run(["/bin/sh", "-c", '"$@" & wait "$!"', "sh", *cmd],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(out + ".0") as f:
                masks[name] = f.read()
            os.remove(out + ".0")
        self.assertEqual(masks["gpurun"], masks["torchrun"])
        ign = int(re.search(r"SigIgn:\s*(\w+)", masks["gpurun"]).group(1), 16)
        self.assertFalse(ign & (1 << (signal.SIGINT - 1)))


if __name__ == "__main__":
    unittest.main(verbosity=2)
