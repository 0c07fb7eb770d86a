"""examples/slurm on a real two-node Slurm cluster on this machine (tests/support/nshosts.py): a
controller (host "ctl", 10.77.0.1) and compute nodes n1 (10.77.0.11) and n2 (10.77.0.12), each a
network + UTS namespace with its own hostname, address and slurmd, plus a stranger host x
(10.77.0.99) on the same bridge that is not part of the cluster. One cluster serves every case
(it starts in ~1-2 s; the jobs dominate). Each case submits an example script with `sbatch
--wait` across both nodes, nothing set by hand:
  - torch_gpurun.sbatch: `srun gpurun` (one per node) of an unmodified PyTorch 1.13 gloo job,
    4 ranks on 2 nodes, every rank's all-reduced value checked;
  - train_gpurun.sbatch and train_direct.sbatch (`srun gpurun train` and zero-setup `srun train`)
    on 2 nodes, a 1-node run for the baseline, and speedup.py's report over their metrics;
  - the store accepts only the job's nodes: while a job holds, x connects to the job's store
    (gpurun's, and the one rank 0 of `srun ./app` hosts) and is refused with a log line naming
    10.77.0.99; the job then finishes on n1 and n2."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
sys.path.insert(0, os.path.join(HERE, "..", "worker"))

import nshosts
import sdklib
import testlib

SCRIPTS = os.path.join(testlib.SOURCE_DIR, "examples", "slurm")
TORCH_JOB = os.path.join(testlib.SOURCE_DIR, "tests", "launcher", "torch_allreduce.py")


def have_torch():
    return subprocess.run([testlib.PYTHON, "-c", "import torch.distributed"],
                          capture_output=True, timeout=60).returncode == 0


# A stranger's attack from issue 16: ADD to a key of the job's store through torch's own client.
STRANGER = r"""
import sys, datetime
from torch.distributed import TCPStore
host, port = sys.argv[1], int(sys.argv[2])
try:
    s = TCPStore(host, port, None, False, datetime.timedelta(seconds=10))
    s.add("stranger_probe", 1)
    print("ACCEPTED")
except Exception as e:
    print("REFUSED", type(e).__name__, e)
"""
# torch 1.13's client sometimes aborts on the reset instead of raising (terminate called after
# throwing std::system_error "Connection reset by peer"): refused all the same.
def refused(verdict):
    return "ACCEPTED" not in verdict and ("REFUSED" in verdict or
                                          "Connection reset by peer" in verdict)



class TwoNodeCluster(unittest.TestCase):
    cluster = None

    @classmethod
    def setUpClass(cls):
        cls.t0 = time.monotonic()
        cls.cluster = nshosts.SlurmCluster(nodes=2, extra=("x",))
        cls.cluster.__enter__()
        print(f"two-node cluster up in {cls.cluster.start_seconds:.2f} s", flush=True)

    @classmethod
    def tearDownClass(cls):
        if cls.cluster:
            cls.cluster.run(["scancel", "--full", "--quiet", "--user=root"], timeout=30)
            cls.cluster.__exit__()
        print(f"cluster tests took {time.monotonic() - cls.t0:.1f} s", flush=True)

    def setUp(self):
        testlib.binary("gpurun")
        self.d = tempfile.mkdtemp(prefix="gpurun_sbatch_")

    def submit(self, script, args=(), nodes=2, extra=(), wait=True, **env):
        """sbatch [--wait] on the controller host; returns (job output path, CompletedProcess)."""
        out = os.path.join(self.d, f"{script}-{len(os.listdir(self.d))}.out")
        export = ",".join(["ALL", f"GPURUN_BUILD={testlib.BUILD_DIR}", "GPURUN_COMM_TIMEOUT=60s"] +
                          [f"{k}={v}" for k, v in env.items()])
        argv = ["sbatch", f"--nodes={nodes}", f"--output={out}", f"--export={export}",
                f"--chdir={self.d}", *extra]
        argv += ["--wait"] if wait else ["--parsable"]
        p = self.cluster.run(argv + [os.path.join(SCRIPTS, script), *args], timeout=240)
        return out, p

    def tearDown(self):
        shutil.rmtree(self.d, ignore_errors=True)

    def job_output(self, out):
        if not os.path.exists(out):
            return ""
        with open(out) as f:
            return f.read()

    def check_ok(self, out, p):
        text = self.job_output(out)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr + text + self.cluster.logs())
        return text

    def test_srun_gpurun_pytorch_gloo_on_two_nodes(self):
        if not have_torch():
            raise unittest.SkipTest("torch 1.13 not importable by /usr/bin/python3")
        text = self.check_ok(*self.submit("torch_gpurun.sbatch", [TORCH_JOB], NPROC=2,
                                          PYTHON_EXEC=testlib.PYTHON))
        self.assertRegex(text, r"gpurun: from Slurm: 2 nodes \(SLURM_STEP_NUM_NODES\), node rank "
                               r"0 \(SLURM_NODEID\), rendezvous host n1 \(the first node of "
                               r"SLURM_STEP_NODELIST\)")
        self.assertIn("node rank 1 (SLURM_NODEID)", text)
        ranks = {int(m.group(1)) for m in
                 re.finditer(r"allreduce ok rank=(\d+) world=4 sum=10 attempt=0", text)}
        self.assertEqual(ranks, {0, 1, 2, 3}, text)

    def test_cpp_examples_on_two_nodes_and_the_speedup_report(self):
        testlib.binary("train")
        m1 = os.path.join(self.d, "one.jsonl")
        text = self.check_ok(*self.submit("train_direct.sbatch", nodes=1,
                                          extra=["--ntasks-per-node=1"], EPOCHS=2, METRICS=m1))
        self.assertIn("WORLD_SIZE: 1 ranks on 1 node(s)", text)

        m2 = os.path.join(self.d, "gpurun2.jsonl")
        text = self.check_ok(*self.submit("train_gpurun.sbatch", NPROC=1, EPOCHS=2, METRICS=m2))
        self.assertIn("gpurun: from Slurm: 2 nodes (SLURM_STEP_NUM_NODES)", text)
        self.assertIn("WORLD_SIZE: 2 ranks on 2 node(s)", text)
        self.assertIn("Effective batch size: 32 x 2 x 4 = 256", text)
        self.assertRegex(text, r"Final: test accuracy \d+\.\d+%")

        # Zero setup: srun of the app itself, rank 0 hosts the store on n1.
        m4 = os.path.join(self.d, "direct4.jsonl")
        text = self.check_ok(*self.submit("train_direct.sbatch", extra=["--ntasks-per-node=2"],
                                          EPOCHS=2, METRICS=m4))
        self.assertIn("WORLD_SIZE: 4 ranks on 2 node(s)", text)
        self.assertIn("Effective batch size: 32 x 4 x 2 = 256", text)
        self.assertRegex(text, r"Final: test accuracy \d+\.\d+%")

        r = subprocess.run([testlib.PYTHON, os.path.join(SCRIPTS, "speedup.py"), m1, m2, m4],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("SPEEDUP ANALYSIS", r.stdout)
        self.assertRegex(r.stdout, r"\n\s+1\s+\d+\.\d+s\s+\d+\s+1\.00x\s+100\.0%")
        self.assertRegex(r.stdout, r"\n\s+2\s+\d+\.\d+s\s+\d+\s+\d+\.\d+x\s+\d+\.\d+%")
        self.assertRegex(r.stdout, r"\n\s+4\s+\d+\.\d+s\s+\d+\s+\d+\.\d+x\s+\d+\.\d+%")
        print(r.stdout, flush=True)

    def held_job(self, argv, hold):
        """Runs `sbatch --wait ARGV` in the background; once rank 0 holds (HOLD/ready), a client
        on the stranger host x attacks the job's store; then the job is let go. Returns (job
        output, the stranger's verdict)."""
        out = os.path.join(self.d, f"held-{len(os.listdir(self.d))}.out")
        export = ",".join(["ALL", f"GPURUN_BUILD={testlib.BUILD_DIR}", "GPURUN_COMM_TIMEOUT=60s",
                           f"HOLD_DIR={hold}", f"PYTHON_EXEC={testlib.PYTHON}", "NPROC=1"])
        job = self.cluster.hosts.popen(
            "ctl", ["sbatch", "--wait", "--nodes=2", f"--output={out}", f"--export={export}",
                    f"--chdir={self.d}", *argv], env=self.cluster.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            testlib.wait_until(lambda: os.path.exists(os.path.join(hold, "ready")) or
                               job.poll() is not None, timeout=180, interval=0.05,
                               what="rank 0 to hold the job (HOLD_DIR/ready)")
            self.assertIsNone(job.poll(), self.job_output(out) + self.cluster.logs())
            with open(os.path.join(hold, "ready")) as f:
                addr, port = f.read().split()
            r = self.cluster.hosts.run("x", [testlib.PYTHON, "-c", STRANGER, addr, port],
                                       timeout=90, env=self.cluster.env)
            verdict = r.stdout + r.stderr
            open(os.path.join(hold, "go"), "w").close()
            rc = job.wait(timeout=180)
        finally:
            self.cluster.hosts.stop(job)
        text = self.job_output(out)
        self.assertEqual(rc, 0, job.stdout.read() + text + self.cluster.logs())
        return text, verdict

    REFUSED_LOG = (r"refusing connection from 10\.77\.0\.99:\d+: not one of the job's hosts, which "
                   r"are 10\.77\.0\.11, 10\.77\.0\.12 \(from the Slurm job's nodes, "
                   r"SLURM_JOB_NODELIST=n\[1-2\]\) and loopback")

    def test_only_the_jobs_nodes_reach_gpuruns_store(self):
        if not have_torch():
            raise unittest.SkipTest("torch 1.13 not importable by /usr/bin/python3")
        hold = tempfile.mkdtemp(dir=self.d)
        text, verdict = self.held_job(
            [os.path.join(SCRIPTS, "torch_gpurun.sbatch"), TORCH_JOB], hold)
        self.assertTrue(refused(verdict), verdict)
        self.assertRegex(text, self.REFUSED_LOG)
        ranks = {int(m.group(1)) for m in
                 re.finditer(r"allreduce ok rank=(\d+) world=2 sum=3 attempt=0", text)}
        self.assertEqual(ranks, {0, 1}, text)  # the job's own nodes were let in

    def test_only_the_jobs_nodes_reach_the_sdks_store(self):
        # srun ./app with nothing set: rank 0 hosts the store on n1, bound to n1's address.
        worker = sdklib.sdk_binary("collectives_worker")
        hold = tempfile.mkdtemp(dir=self.d)
        text, verdict = self.held_job(
            ["--ntasks-per-node=1", f"--wrap=srun {worker} --allreduce {hold}"], hold)
        self.assertTrue(refused(verdict), verdict)
        self.assertRegex(text, self.REFUSED_LOG)
        self.assertIn("allreduce ok: world 2 sum 3", text)
        with open(os.path.join(hold, "ready")) as f:
            self.assertEqual(f.read().split()[0], "n1")


if __name__ == "__main__":
    testlib.main()
