"""windowed_image under the real gpurun: the stitched PNG is bit-identical for 1-4 ranks and to
the single-process reference, every window is processed exactly once (also when the window count
does not divide by the world size), and the console shows what the user guide shows."""
import math
import os
import re
import shutil
import tempfile
import unittest

import testlib

SUCCESS_48 = "SUCCESS: Got 48 outputs. Example shape[0]: (3, 192, 192)"


class WindowedImage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.gpurun = testlib.binary("gpurun")
        cls.wi = testlib.binary("windowed_image")
        cls.tmp = tempfile.mkdtemp(prefix="wi_e2e_")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def reference(self, name, *args):
        out = os.path.join(self.tmp, name)
        testlib.run([self.wi, "--reference", "--output", out, *args], timeout=60, check=True)
        with open(out, "rb") as f:
            return f.read()

    def job(self, n, name, *args):
        out = os.path.join(self.tmp, name)
        proc = testlib.run([self.gpurun, f"--nproc_per_node={n}", self.wi, "--cpu",
                            "--output", out, *args], timeout=120)
        self.assertEqual(proc.returncode, 0,
                         f"{n} ranks failed\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        with open(out, "rb") as f:
            return proc.stdout + proc.stderr, f.read()

    def check_messages(self, text, n, windows, batch_size=1):
        per_rank = math.ceil(windows / n)
        batches = math.ceil(per_rank / batch_size)
        for r in range(n):
            self.assertRegex(text, rf"Setup: LOCAL_RANK={r}, RANK={r}, WORLD_SIZE={n}\b")
            self.assertRegex(text, rf"Rank {r}: Processing {batches} batches\.\.\.")
        self.assertEqual(len(re.findall(r"Using CPU", text)), n, text)
        self.assertEqual(len(re.findall(r"SUCCESS: Got \d+ outputs", text)), 1, text)

    def test_default_job_is_bit_identical_for_1_to_4_ranks(self):
        ref = self.reference("ref48.png")
        for n in (1, 2, 3, 4):
            with self.subTest(ranks=n):
                text, png = self.job(n, f"out{n}.png")
                self.assertIn(SUCCESS_48, text)
                self.check_messages(text, n, 48)
                self.assertIn(f"out{n}.png", text)
                self.assertEqual(png, ref, f"{n}-rank output differs from the reference")

    def test_window_count_not_divisible_by_world_size(self):
        # 450x300, window 96, stride 64: 7 x 5 = 35 windows (edge-aligned last row/column).
        args = ["--image-size", "450x300", "--window", "96", "--stride", "64"]
        ref = self.reference("ref35.png", *args)
        for n in (2, 3, 4):
            with self.subTest(ranks=n):
                text, png = self.job(n, f"odd{n}.png", *args, "--batch-size", "4")
                self.assertIn("SUCCESS: Got 35 outputs. Example shape[0]: (3, 96, 96)", text)
                self.check_messages(text, n, 35, batch_size=4)
                self.assertEqual(png, ref)

    def test_png_input(self):
        src = os.path.join(self.tmp, "input.png")
        testlib.run([self.wi, "--reference", "--output", src, "--image-size", "400x260",
                     "--gain", "1"], timeout=60, check=True)
        args = ["--input", src, "--window", "128", "--stride", "100"]  # 4 x 3 windows
        ref = self.reference("ref_in.png", *args)
        text, png = self.job(2, "in2.png", *args)
        self.assertIn("SUCCESS: Got 12 outputs. Example shape[0]: (3, 128, 128)", text)
        self.assertEqual(png, ref)

    def test_errors_name_the_problem(self):
        proc = testlib.run([self.wi, "--strid", "4"], timeout=30)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("windowed_image: error: unknown option '--strid'", proc.stderr)
        proc = testlib.run([self.wi, "--reference", "--input", "/nonexistent.png"], timeout=30)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("/nonexistent.png", proc.stderr)
        proc = testlib.run([self.gpurun, "--nproc_per_node=2", self.wi, "--cpu", "--output",
                            os.path.join(self.tmp, "never.png"), "--window", "2000"], timeout=60)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("smaller than one window", proc.stdout + proc.stderr)


if __name__ == "__main__":
    testlib.main()
