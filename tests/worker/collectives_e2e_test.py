"""The worker SDK under the real gpurun: every collective checked numerically with 1, 2 and 4
ranks on CPU; a rank that never arrives is named by the others; hybrid mode with fake GPUs on
some ranks; GPURUN_BACKEND=nccl without GPUs fails with the fix."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sdklib
import testlib

CLEAN = {"RANK": None, "WORLD_SIZE": None, "MASTER_ADDR": None, "MASTER_PORT": None,
         "GPURUN_FAKE_GPU_RANKS": None, "GPURUN_BACKEND": None, "CUDA_VISIBLE_DEVICES": ""}


def run_gpurun(nproc, args, env=None, timeout=60):
    gpurun = testlib.binary("gpurun")
    worker = sdklib.sdk_binary("collectives_worker")
    full = dict(os.environ)
    for k, v in {**CLEAN, **(env or {})}.items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    cmd = [gpurun, "--nproc-per-node", str(nproc), "--master-port", "0", "--no-python", worker,
           *args]
    import subprocess
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full)


class CollectivesUnderGpurun(unittest.TestCase):
    def check_ok(self, proc, what):
        self.assertEqual(proc.returncode, 0,
                         f"{what}: exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")

    def test_every_collective_1_2_4_ranks(self):
        for n in (1, 2, 4):
            with self.subTest(nproc=n):
                p = run_gpurun(n, [])
                self.check_ok(p, f"{n} ranks")
                self.assertIn(f"collectives ok: world {n} backend gloo", p.stdout)
                for r in range(n):
                    self.assertIn(f"rank {r}/{n} backend=gloo device=cpu launcher=gpurun", p.stdout)

    def test_missing_rank_is_named(self):
        p = run_gpurun(3, ["--hang-rank", "1"], env={"GPURUN_COMM_TIMEOUT": "3s"}, timeout=60)
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        out = p.stdout + p.stderr
        self.assertIn("CommError on rank", out)
        self.assertIn("rank 1 has not arrived at all_reduce #2", out)
        self.assertIn("last seen in barrier #1", out)

    def test_rank_that_exits_is_named_quickly(self):
        # Rank 1 leaves after the first barrier. Through shared memory the others notice that its
        # process is gone (within ~20 ms, long before the 60 s timeout); over TCP, Gloo sees the
        # connection close. Either way: a CommError, not a hang.
        import time
        for shm in ("1", "0"):
            with self.subTest(GPURUN_SHM=shm):
                t0 = time.monotonic()
                p = run_gpurun(2, ["--exit-rank", "1"],
                               env={"GPURUN_COMM_TIMEOUT": "60s", "GPURUN_SHM": shm}, timeout=50)
                took = time.monotonic() - t0
                out = p.stdout + p.stderr
                self.assertNotEqual(p.returncode, 0, out)
                self.assertIn("CommError on rank 0", out)
                self.assertLess(took, 30, out)
                if shm == "1":
                    self.assertRegex(out, r"rank 1 \(pid \d+\) exited while this rank waited for it in "
                                          r"the shared-memory all_reduce")

    def test_hybrid_fake_gpus(self):
        p = run_gpurun(4, [], env={"GPURUN_FAKE_GPU_RANKS": "0,1"})
        self.check_ok(p, "hybrid")
        self.assertIn("rank 0/4 backend=gloo device=cuda:0", p.stdout)
        self.assertIn("rank 1/4 backend=gloo device=cuda:1", p.stdout)
        self.assertIn("rank 2/4 backend=gloo device=cpu", p.stdout)
        self.assertIn("collectives ok: world 4 backend gloo", p.stdout)

    def test_nccl_without_gpus_is_a_clear_error(self):
        p = run_gpurun(2, ["--allreduce"], env={"GPURUN_BACKEND": "nccl"})
        self.assertNotEqual(p.returncode, 0)
        out = p.stdout + p.stderr
        self.assertRegex(out, r"GPURUN_BACKEND=nccl but (ranks 0,1 have no GPU|the worker SDK was "
                              r"built without NCCL)")


if __name__ == "__main__":
    unittest.main()
