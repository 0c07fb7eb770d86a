"""train under the real gpurun: a run stopped (or killed) after epoch k and resumed ends with the
same parameters, bit for bit, as an uninterrupted run; accuracy on 2 and 4 ranks at the same
global batch is within 1 point of 1 rank; bad batch arithmetic is refused with the numbers."""
import json
import os
import re
import shutil
import signal
import tempfile
import unittest

import testlib

# Small enough for seconds per run on 2 cores, large enough that accuracy is meaningful.
DATA = ["--dataset", "blobs", "--samples", "4000", "--test-samples", "2000", "--features", "16",
        "--classes", "8", "--hidden", "64,64", "--no-progress", "--cpu"]
CHECKSUM = re.compile(r"Parameters identical on all (\d+) ranks: checksum ([0-9a-f]{16})")
FINAL = re.compile(r"Final: test accuracy ([0-9.]+)%")


def children(pid):
    """Direct children of pid (the workers of a gpurun process)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.gpurun = testlib.binary("gpurun")
        cls.train = testlib.binary("train")
        cls.tmp = tempfile.mkdtemp(prefix="train_e2e_")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def cmd(self, n, *args):
        return [self.gpurun, f"--nproc_per_node={n}", self.train, *DATA, *args]

    def job(self, n, *args, ok=True, timeout=120):
        proc = testlib.run(self.cmd(n, *args), timeout=timeout)
        text = proc.stdout + proc.stderr
        if ok:
            self.assertEqual(proc.returncode, 0, f"{n} ranks failed:\n{text}")
        return proc.returncode, text

    def accuracy_by_world_size(self, cmd, args, expect=None):
        """Final test accuracy of 1, 2 and 4 ranks at global batch 64 (batch 16 per rank), each
        run checked for identical parameters and the accumulation it needed."""
        acc = {}
        for n in (1, 2, 4):
            proc = testlib.run(cmd(n, *args), timeout=120)
            text = proc.stdout + proc.stderr
            self.assertEqual(proc.returncode, 0, f"{n} ranks failed:\n{text}")
            self.checksum(text, n)
            accum = 64 // (16 * n)
            self.assertIn(f"Effective batch size: 16 x {n} x {accum} = 64", text)
            self.assertIn(f"Gradient accumulation steps: {accum}", text)
            if expect:
                self.assertIn(expect, text)
            m = FINAL.search(text)
            self.assertIsNotNone(m, text)
            acc[n] = float(m.group(1))
        return acc

    def checksum(self, text, n):
        m = CHECKSUM.search(text)
        self.assertIsNotNone(m, text)
        self.assertEqual(int(m.group(1)), n)
        return m.group(2)


class TrainResume(Base):
    ARGS = ["--epochs", "4", "--global-batch-size", "64", "--batch-size", "16", "--lr", "0.05",
            "--warmup-epochs", "1", "--seed", "3"]

    def test_stop_and_resume_matches_uninterrupted_run(self):
        for opt in ("sgd", "adam"):
            with self.subTest(optimizer=opt):
                lr = ["--optimizer", opt] + (["--lr", "0.002"] if opt == "adam" else [])
                full = os.path.join(self.tmp, f"full_{opt}")
                part = os.path.join(self.tmp, f"part_{opt}")
                _, text = self.job(2, *self.ARGS, *lr, "--save-dir", full,
                                   "--metrics", os.path.join(full, "metrics.jsonl"))
                want = self.checksum(text, 2)
                _, text = self.job(2, *self.ARGS, *lr, "--save-dir", part, "--stop-after-epoch", "2")
                self.assertIn("Stopping after epoch 2", text)
                self.assertNotIn("Final:", text)
                _, text = self.job(2, *self.ARGS, *lr, "--save-dir", part, "--resume")
                self.assertIn("Resumed from", text)
                self.assertIn("epoch 2 done", text)
                self.assertNotIn("Epoch 1/4", text)
                self.assertIn("Epoch 3/4", text)
                self.assertEqual(self.checksum(text, 2), want)
                with open(os.path.join(full, "checkpoint.bin"), "rb") as a, \
                        open(os.path.join(part, "checkpoint.bin"), "rb") as b:
                    self.assertEqual(a.read(), b.read(), "final checkpoints differ")
                with open(os.path.join(full, "metrics.jsonl")) as f:
                    rows = [json.loads(line) for line in f]
                self.assertEqual([r["epoch"] for r in rows], [1, 2, 3, 4])
                for key in ("loss", "accuracy", "samples_per_s"):
                    self.assertIn(key, rows[0])

    def test_killed_run_resumes_to_the_same_parameters(self):
        # Larger than the other runs so that the kill usually lands mid-training (if the run is
        # already done, resuming from its last checkpoint must still end at the same parameters).
        args = ["--epochs", "6", "--samples", "16000", "--global-batch-size", "64", "--batch-size",
                "16", "--seed", "5"]
        full = os.path.join(self.tmp, "kill_full")
        _, text = self.job(2, *args, "--save-dir", full)
        want = self.checksum(text, 2)
        part = os.path.join(self.tmp, "kill_part")
        ckpt = os.path.join(part, "checkpoint.bin")
        proc = testlib.start(self.cmd(2, *args, "--save-dir", part))
        workers = []
        try:
            testlib.wait_until(lambda: os.path.exists(ckpt) or proc.poll() is not None,
                               timeout=60, what=f"first checkpoint {ckpt}")
            workers = children(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)  # gpurun dies; workers follow (PDEATHSIG)
        except ProcessLookupError:
            pass
        finally:
            proc.communicate(timeout=30)
        # No worker of the killed job may still be writing when the resumed job reads.
        testlib.wait_until(lambda: not any(testlib.pid_alive(p) for p in workers), timeout=30,
                           what=f"killed workers {workers} to exit")
        self.assertTrue(os.path.exists(ckpt))
        _, text = self.job(2, *args, "--save-dir", part, "--resume")
        self.assertEqual(self.checksum(text, 2), want)

    def test_resume_refuses_a_different_configuration(self):
        d = os.path.join(self.tmp, "cfg")
        self.job(1, "--epochs", "1", "--save-dir", d)
        rc, text = self.job(1, "--epochs", "1", "--lr", "0.1", "--save-dir", d, "--resume", ok=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("different configuration", text)
        self.assertIn("lr: checkpoint 0.05, this run 0.1", text)


class TrainAccuracy(Base):
    def test_accuracy_matches_across_world_sizes_at_the_same_global_batch(self):
        args = ["--epochs", "6", "--global-batch-size", "64", "--batch-size", "16", "--lr", "0.05",
                "--seed", "1"]
        acc = self.accuracy_by_world_size(self.cmd, args)
        print("test accuracy by world size:", acc)
        self.assertGreater(acc[1], 80.0)
        for n in (2, 4):
            self.assertLessEqual(abs(acc[n] - acc[1]), 1.0, acc)


DIGITS = os.path.join(os.environ.get("GPURUN_SOURCE_DIR", ""), "data", "digits.csv.gz")


class TrainDigits(Base):
    """The real data set: scikit-learn's handwritten digits, unpacked from Debian's python3-sklearn
    by scripts/fetch_digits.sh (scripts/test.sh runs it)."""

    def test_digits_accuracy_matches_across_world_sizes(self):
        if not os.path.exists(DIGITS):
            self.skipTest(f"{DIGITS} missing: run scripts/fetch_digits.sh")
        args = ["--dataset", "digits", "--data-file", DIGITS, "--epochs", "20",
                "--global-batch-size", "64", "--batch-size", "16", "--seed", "2"]
        acc = self.accuracy_by_world_size(
            lambda n, *a: [self.gpurun, f"--nproc_per_node={n}", self.train, "--cpu",
                           "--no-progress", *a], args, "1437 train / 360 test samples")
        print("digits test accuracy by world size:", acc)
        self.assertGreater(acc[1], 90.0)
        for n in (2, 4):
            self.assertLessEqual(abs(acc[n] - acc[1]), 1.0, acc)


class TrainErrors(Base):
    def test_global_batch_must_divide(self):
        rc, text = self.job(2, "--global-batch-size", "100", "--batch-size", "16", ok=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("--global-batch-size 100 is not a multiple of --batch-size 16 x world size 2 = 32",
                      text)

    def test_usage_error_exit_code(self):
        proc = testlib.run([self.train, "--lr-scaling", "cubic"], timeout=30)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("train: error: invalid value 'cubic' for --lr-scaling", proc.stderr)


if __name__ == "__main__":
    testlib.main()
