"""bench/scaling/scaling_bench as users run it, in its quick mode: both examples under the real
gpurun at 1 and 2 ranks, the windowed job's PNG identical across rank counts, a table and a JSON
line with every point; and the PyTorch DDP version of the training job (torch_train.py) under
torchrun and gpurun next to it."""
import json
import os
import unittest

import testlib

TORCH_SCRIPT = os.path.join(os.environ.get("GPURUN_SOURCE_DIR", ""), "bench", "scaling",
                            "torch_train.py")


def last_json(text):
    lines = [l for l in text.splitlines() if l.startswith("{")]
    if not lines:
        raise AssertionError(f"no JSON line in:\n{text}")
    return json.loads(lines[-1])


class ScalingBench(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.bench = testlib.binary("scaling_bench")

    def test_quick_run_reports_every_point(self):
        proc = testlib.run([self.bench, "--quick", "--ranks", "1,2", "--repeat", "1",
                            "--no-torch"], timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn("speedup", proc.stdout)
        out = last_json(proc.stdout)
        self.assertEqual(out["mode"], "cpu")
        points = {(r["example"], r["ranks"]): r for r in out["results"]}
        self.assertEqual(set(points), {(e, n) for e in ("windowed_image", "train") for n in (1, 2)})
        for (example, n), r in points.items():
            self.assertNotIn("OUTPUT DIFFERS", r["note"], (example, n))
            self.assertGreater(r["seconds"], 0)
            self.assertEqual(r["promised_speedup"], {1: 1.0, 2: 1.8}[n])
        self.assertEqual(points[("train", 1)]["speedup"], 1.0)
        self.assertEqual(out["torch"], [])

    def test_bad_flag_is_named(self):
        proc = testlib.run([self.bench, "--rnaks", "1"], timeout=30)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("scaling_bench: error: unrecognised option '--rnaks'; see --help", proc.stderr)


class TorchTrain(unittest.TestCase):
    """The PyTorch side: needs /usr/bin/python3 with torch (python3-torch)."""

    def test_torch_ddp_job_under_gpurun(self):
        gpurun = testlib.binary("gpurun")
        proc = testlib.run([gpurun, "--nproc_per_node=2", TORCH_SCRIPT, "--samples", "4096",
                            "--test-samples", "512", "--epochs", "2", "--global-batch-size",
                            "512", "--batch-size", "128"],
                           timeout=120, env={"PYTHON_EXEC": "/usr/bin/python3"})
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        out = last_json(proc.stdout.replace("[rank 0] ", ""))
        self.assertEqual(out["world_size"], 2)
        self.assertGreater(out["test_accuracy"], 0.5)  # 8 classes: chance is 0.125
        self.assertGreater(out["train_seconds"], 0)

    def test_bench_runs_it_under_torchrun_and_gpurun(self):
        bench = testlib.binary("scaling_bench")
        proc = testlib.run([bench, "--quick", "--only", "train", "--ranks", "1,2", "--repeat",
                            "1", "--torch-repeat", "1"], timeout=240)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        out = last_json(proc.stdout)
        self.assertEqual(out["torch_skipped"], "")
        rows = {(t["launcher"], t["ranks"]): t for t in out["torch"]}
        self.assertEqual(set(rows), {(l, n) for l in ("torchrun", "gpurun") for n in (1, 2)})
        for key, t in rows.items():
            self.assertGreater(t["loop_seconds"], 0, key)
            self.assertGreater(t["seconds"], t["loop_seconds"], key)  # the job includes the loop
            self.assertGreater(t["seconds_vs_example"], 0, key)
        self.assertIn("PyTorch 1.13 DDP", proc.stdout)


if __name__ == "__main__":
    testlib.main()
