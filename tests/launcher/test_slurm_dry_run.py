"""srun gpurun without multi-node flags, and multi-node dry runs: what gpurun infers from Slurm's
variables (given here as a Slurm step would set them), and that a multi-node --dry-run prints this
node's plan at once, touching no network (the rendezvous host below does not even resolve)."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))

import testlib

SLURM_STEP = {"SLURM_JOB_ID": "4711", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1",
              "SLURM_NODEID": "1", "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_NUM_TASKS": "2",
              "SLURM_STEP_NODELIST": "gpu-test[07-08].invalid"}


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "PET_", "MASTER_", "TORCHELASTIC_"))}
    env.update(extra)
    return env


def dry_run(args, env):
    import subprocess
    t0 = time.monotonic()
    p = subprocess.run([testlib.binary("gpurun"), "--dry-run", *args,
                        testlib.binary("hello_env")], capture_output=True, text=True, timeout=60,
                       env=env)
    return p, time.monotonic() - t0


class SlurmInference(unittest.TestCase):
    def test_srun_gpurun_takes_nodes_rank_and_rendezvous_from_slurm(self):
        p, _ = dry_run(["--nproc-per-node", "2"], clean_env(**SLURM_STEP))
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("gpurun: from Slurm: 2 nodes (SLURM_STEP_NUM_NODES), node rank 1 "
                      "(SLURM_NODEID), rendezvous host gpu-test07.invalid (the first node of "
                      "SLURM_STEP_NODELIST), port 38844 (from SLURM_JOB_ID=4711 and step 0), run "
                      "id 4711 (SLURM_JOB_ID); flags override each of these", out)
        self.assertIn("RANK=2 LOCAL_RANK=0 WORLD_SIZE=4", out)
        self.assertIn("MASTER_ADDR=gpu-test07.invalid", out)
        self.assertIn("MASTER_PORT=38844", out)
        self.assertIn("TORCHELASTIC_RUN_ID=4711", out)

    def test_flags_win_over_slurm(self):
        p, _ = dry_run(["--nproc-per-node", "2", "--master-port", "29555", "--node-rank", "0"],
                       clean_env(**SLURM_STEP))
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("MASTER_PORT=29555", out)
        self.assertIn("RANK=0 LOCAL_RANK=0 WORLD_SIZE=4", out)

    def test_several_gpurun_per_node_is_refused(self):
        env = clean_env(**dict(SLURM_STEP, SLURM_STEP_NUM_TASKS="8"))
        p, _ = dry_run(["--nproc-per-node", "2"], env)
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("gpurun: error: srun started 8 gpurun tasks on 2 nodes", p.stderr)
        self.assertIn("srun --ntasks-per-node=1 gpurun", p.stderr)


class MultiNodeDryRun(unittest.TestCase):
    def test_static_dry_run_touches_no_network(self):
        p, took = dry_run(["--nnodes", "2", "--node-rank", "1", "--master-addr",
                           "gpu-test07.invalid", "--nproc-per-node", "2"], clean_env())
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out)
        self.assertLess(took, 10, out)  # it used to retry the store for --rdzv-timeout
        self.assertNotIn("still trying to reach the store", out)
        self.assertIn("node rank 1 of 2; the global ranks assume every node runs as many "
                      "workers as this one", out)
        self.assertIn("RANK=3 LOCAL_RANK=1 WORLD_SIZE=4", out)

    def test_c10d_dry_run_says_ranks_come_from_the_rendezvous(self):
        p, took = dry_run(["--nnodes", "1:3", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                           "gpu-test07.invalid:29400", "--nproc-per-node", "2"], clean_env())
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out)
        self.assertLess(took, 10, out)
        self.assertIn("the group rank and the global ranks are assigned at rendezvous on "
                      "gpu-test07.invalid:29400", out)


if __name__ == "__main__":
    testlib.main()
