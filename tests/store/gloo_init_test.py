"""Interop (c): PyTorch 1.13 ranks doing init_process_group("gloo", init_method="env://") with
TORCHELASTIC_USE_AGENT_STORE=True against gpurun-store (the way gpurun launches workers), then
all_reduce / all_gather / broadcast / barrier / new_group / destroy_process_group."""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import storelib  # noqa: E402
from storelib import V113, s  # noqa: E402

WORKER = os.path.join(storelib.HERE, "gloo_worker.py")


class GlooInitTest(unittest.TestCase):
    def run_ranks(self, world):
        with storelib.Server() as server:
            procs = []
            for rank in range(world):
                env = dict(os.environ, MASTER_ADDR=server.host, MASTER_PORT=str(server.port),
                           RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                           LOCAL_WORLD_SIZE=str(world), TORCHELASTIC_USE_AGENT_STORE="True",
                           TORCHELASTIC_RESTART_COUNT="0", OMP_NUM_THREADS="1")
                procs.append(subprocess.Popen([storelib.PYTHON, WORKER], env=env,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True, start_new_session=True))
            results = []
            try:
                for rank, p in enumerate(procs):
                    out, err = p.communicate(timeout=90)
                    self.assertEqual(p.returncode, 0, f"rank {rank} failed:\n{err[-3000:]}")
                    results.append(json.loads(out.strip().splitlines()[-1]))
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                        p.wait()
            self.assertTrue(server.alive())
            # Every rank's TCPStore constructor (world_size given) did ADD "init/" 1 on our store.
            with storelib.RawConn(server.host, server.port) as raw:
                raw.send(bytes([V113.GET]) + s("init/"))
                self.assertEqual(raw.recv_exact(8 + len(str(world))), s(str(world)))
                raw.send(bytes([V113.GETNUMKEYS]))
                nkeys = int.from_bytes(raw.recv_exact(8), "little", signed=True)
                self.assertGreater(nkeys, 2 * world)  # gloo addresses, barrier keys, ...
        return results

    def check(self, results, world):
        base = [float(i) for i in range(4)]
        expect_sum = [world * b + world * (world - 1) / 2 for b in base]
        for r, res in enumerate(results):
            self.assertEqual(res["rank"], r)
            self.assertEqual(res["world"], world)
            self.assertEqual(res["all_reduce"], expect_sum)
            self.assertEqual(res["all_gather"], [10 * i for i in range(world)])
            self.assertEqual(res["broadcast"], 1234.5)
            if r in (0, 1):
                self.assertEqual(res["pair_all_reduce"], [3.0, 3.0, 3.0])
            self.assertTrue(res["destroyed"])

    def test_two_ranks(self):
        self.check(self.run_ranks(2), 2)

    def test_four_ranks(self):
        self.check(self.run_ranks(4), 4)


if __name__ == "__main__":
    storelib.testlib.main()
