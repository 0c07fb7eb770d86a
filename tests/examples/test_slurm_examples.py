"""examples/slurm: both sbatch scripts submitted with `sbatch --wait` to a one-node Slurm cluster
started on this machine (tests/worker/launchers_e2e_test.py's SlurmCluster), each with 2 ranks on
CPU and nothing set by hand; then speedup.py on their metrics files."""
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "worker"))
sys.path.insert(0, os.path.join(HERE, "..", "support"))

import testlib
from launchers_e2e_test import SlurmCluster

SCRIPTS = os.path.join(testlib.SOURCE_DIR, "examples", "slurm")


class SlurmExamples(unittest.TestCase):
    def submit(self, cluster, d, script, extra, metrics, nproc=None):
        out = os.path.join(d, os.path.basename(script) + ".out")
        export = (f"ALL,GPURUN_BUILD={testlib.BUILD_DIR},EPOCHS=2,METRICS={metrics},"
                  f"GPURUN_COMM_TIMEOUT=60s" + (f",NPROC={nproc}" if nproc else ""))
        p = subprocess.run(["sbatch", "--wait", "--nodes=1", f"--output={out}",
                            f"--export={export}", *extra, os.path.join(SCRIPTS, script)],
                           capture_output=True, text=True, timeout=240, env=cluster.env, cwd=d)
        text = open(out).read() if os.path.exists(out) else ""
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr + text + cluster.logs())
        return text

    def test_both_scripts_and_the_speedup_report(self):
        testlib.binary("gpurun")
        testlib.binary("train")
        with SlurmCluster() as cluster, tempfile.TemporaryDirectory() as d:
            m_gpurun = os.path.join(d, "gpurun.jsonl")
            # NPROC=2: CPU workers (the script's default, "gpu", needs GPUs).
            out = self.submit(cluster, d, "train_gpurun.sbatch", [], m_gpurun, nproc=2)
            self.assertIn("gpurun: from Slurm: 1 node (SLURM_STEP_NUM_NODES)", out)
            self.assertIn("WORLD_SIZE: 2 ranks on 1 node(s)", out)
            self.assertIn("Effective batch size: 32 x 2 x 4 = 256", out)
            self.assertRegex(out, r"Final: test accuracy \d+\.\d+%")

            m_direct = os.path.join(d, "direct.jsonl")
            out = self.submit(cluster, d, "train_direct.sbatch", ["--ntasks-per-node=2"],
                              m_direct)
            self.assertIn("WORLD_SIZE: 2 ranks on 1 node(s)", out)
            self.assertRegex(out, r"Final: test accuracy \d+\.\d+%")

            r = subprocess.run([testlib.PYTHON, os.path.join(SCRIPTS, "speedup.py"), m_gpurun,
                                m_direct], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("SPEEDUP ANALYSIS", r.stdout)
            self.assertRegex(r.stdout, r"\n\s+2\s+\d+\.\d+s\s+\d+\s+1\.00x\s+100\.0%")


if __name__ == "__main__":
    testlib.main()
