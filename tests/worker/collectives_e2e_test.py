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
        # While they wait, the others print progress lines (GPURUN_WAIT_PROGRESS: the first after
        # 1 s) naming the collective, the missing rank and the time left; then the timeout.
        p = run_gpurun(3, ["--hang-rank", "1"],
                       env={"GPURUN_COMM_TIMEOUT": "8s", "GPURUN_WAIT_PROGRESS": "1s"}, timeout=60)
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        out = p.stdout + p.stderr
        self.assertIn("CommError on rank", out)
        self.assertIn("rank 1 has not arrived at all_reduce #2", out)
        self.assertIn("last seen in barrier #1", out)
        self.assertRegex(out, r"rank [02]/3 still waiting in gloo all_reduce\(10 x float32, sum\) #2 "
                              r"after \d+s: rank 1 has not arrived at all_reduce #2 \(last seen in "
                              r"barrier #1\); the timeout ends the wait in \d+s "
                              r"\(GPURUN_COMM_TIMEOUT=8s\)")

    def test_mismatched_collective_is_an_error_on_every_rank(self):
        # Shared memory and TCP, 2 and 3 ranks: every rank reports the mismatch naming both sides,
        # with its buffer unchanged; none returns normally, nothing aborts.
        expected = {
            "count": r"all_reduce #2 mismatch on rank {r}/{w}: ranks? 0(,2)? called all_reduce\(1000 x "
                     r"float32, sum\), rank 1 called all_reduce\(500 x float32, sum\)",
            "skipped": r"all_reduce #2 mismatch on rank {r}/{w}: ranks? 0(,2)? called all_reduce\(1000 x "
                       r"float32, sum\), rank 1 called all_reduce\(1 x int32, max\)",
        }
        for shm in ("1", "0"):
            for w in (2, 3):
                for kind, pattern in expected.items():
                    with self.subTest(GPURUN_SHM=shm, world=w, kind=kind):
                        p = run_gpurun(w, ["--mismatch", kind],
                                       env={"GPURUN_COMM_TIMEOUT": "60s", "GPURUN_SHM": shm})
                        out = p.stdout + p.stderr
                        self.assertEqual(p.returncode, 0, out)
                        self.assertNotIn("returned normally", out)
                        self.assertNotIn("terminate called", out)
                        for r in range(w):
                            self.assertRegex(out, r"CommError on rank %d: gloo " % r
                                             + pattern.format(r=r, w=w))
                            self.assertIn(f"rank {r} buffer unchanged", out)

    def test_mismatch_reaches_the_error_file(self):
        # Not caught: run_main writes the torchrun error file, and gpurun's summary shows it.
        p = run_gpurun(2, ["--mismatch", "count", "--raise"], env={"GPURUN_SHM": "0"})
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 1, out)
        self.assertNotIn("terminate called", out)
        self.assertRegex(out, r"error_file: /\S+")
        self.assertRegex(out, r"traceback : .*all_reduce #2 mismatch on rank [01]/2")

    def test_unreachable_store_prints_progress_then_names_the_address(self):
        # No store at MASTER_PORT (as with a wrong port under mpirun): progress lines while it
        # retries, then an error naming the address and where it came from.
        import socket
        import subprocess
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        worker = sdklib.sdk_binary("collectives_worker")
        env = dict(os.environ)
        for k, v in CLEAN.items():
            env.pop(k, None) if v is None else env.__setitem__(k, v)
        env.update({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                    "GPURUN_COMM_TIMEOUT": "4s", "GPURUN_WAIT_PROGRESS": "1s"})
        p = subprocess.run([worker, "--allreduce"], capture_output=True, text=True, timeout=60,
                           env=env)
        out = p.stdout + p.stderr
        self.assertNotEqual(p.returncode, 0, out)
        self.assertRegex(out, r"still trying to reach the store at 127\.0\.0\.1:%d after \d+s \(\d+ "
                              r"attempts, last: Connection refused\); giving up in \d+s "
                              r"\(GPURUN_COMM_TIMEOUT=4s\)" % port)
        self.assertIn(f"cannot connect after", out)
        self.assertIn(f"check MASTER_ADDR=127.0.0.1 and MASTER_PORT={port}", out)

    def test_no_timeout_and_shm_off_are_said_plainly(self):
        # GPURUN_COMM_TIMEOUT=0 is no limit (not an instant failure); GPURUN_SHM=0 is logged as
        # such on every rank, not as another rank's failure.
        p = run_gpurun(2, ["--allreduce"], env={"GPURUN_COMM_TIMEOUT": "0", "GPURUN_SHM": "0",
                                                "GPURUN_LOG_LEVEL": "info",
                                                "GPURUN_LOG_SUBSYS": "comm,init"})
        out = p.stdout + p.stderr
        self.check_ok(p, "GPURUN_COMM_TIMEOUT=0")
        self.assertIn("allreduce ok: world 2", out)
        self.assertEqual(out.count("shared memory not used: disabled by GPURUN_SHM=0"), 2, out)
        self.assertNotIn("another rank could not map it", out)

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
                # It exited: raising the timeout would not help, so that is not the advice.
                self.assertNotIn("raise GPURUN_COMM_TIMEOUT", out)
                self.assertIn("a peer exited or closed its connection", out)
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
