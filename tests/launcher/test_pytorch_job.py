"""A real PyTorch 1.13 job (gloo, init_process_group(init_method="env://"), all_reduce checked)
launched unmodified by gpurun with 2 and 4 workers, plus a restart through the
/worker/attempt_<n> store prefix."""
import os
import re
import unittest

from testlib import PYTHON, binary, run

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "torch_allreduce.py")


def have_torch():
    return run([PYTHON, "-c", "import torch.distributed"], timeout=60).returncode == 0


@unittest.skipUnless(have_torch(), "PyTorch not importable by " + PYTHON)
class PyTorchJob(unittest.TestCase):
    def launch(self, n, *extra, env=None):
        full_env = {"PYTHON_EXEC": PYTHON}
        full_env.update(env or {})
        return run([binary("gpurun"), "--nproc-per-node", str(n), *extra, SCRIPT],
                   timeout=120, env=full_env)

    def check_ok(self, p, n, attempt=0):
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        sums = re.findall(r"allreduce ok rank=(\d+) world=(\d+) sum=(\S+) attempt=(\d+)", p.stdout)
        self.assertEqual(sorted(int(r) for r, _, _, _ in sums), list(range(n)), p.stdout)
        for _, world, total, att in sums:
            self.assertEqual(int(world), n)
            self.assertEqual(float(total), n * (n + 1) / 2)
            self.assertEqual(int(att), attempt)

    def test_two_workers(self):
        self.check_ok(self.launch(2), 2)

    def test_four_workers(self):
        self.check_ok(self.launch(4), 4)

    def test_store_on_a_host_address_without_the_uid_check(self):
        # The store bound to one of this host's own (non-loopback) addresses, uid check off: the
        # workers reach it through that address, and the job secret gpurun generates for one node
        # must not put them on probation (they cannot prove it; they are on this host).
        addrs = [a for a in run(["hostname", "-I"]).stdout.split() if ":" not in a]
        if not addrs:
            self.skipTest("this host has no non-loopback IPv4 address")
        p = self.launch(2, "--master-addr", addrs[0], env={"GPURUN_STORE_CHECK_PEER_UID": "0"})
        self.check_ok(p, 2)

    def test_restart_uses_a_fresh_store_prefix(self):
        p = self.launch(2, "--max-restarts", "1", env={"FAIL_RANK": "1", "FAIL_ON_ATTEMPT": "0"})
        self.assertIn("restarting all 2 workers", p.stderr)
        self.check_ok(p, 2, attempt=1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
