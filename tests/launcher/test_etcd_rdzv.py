"""gpurun's elastic agent over etcd (--rdzv-backend etcd, issue 17) with a real etcd (Debian's
etcd-server 3.4, 1 or 3 members on 127.0.0.1, started and killed by the test) and real gpurun
agents on 127.0.0.x: the workers' env and a real PyTorch 1.13 gloo job across 2 agents; the etcd
leader killed mid-run (the job goes on); kill -9 of the agent hosting the round's workers' store
(the survivors re-form with a new group rank 0 and finish); an unreachable etcd. Every wait is
bounded; only the agents and etcd members this test started are killed. Skipped without etcd."""
import os
import shutil
import tempfile
import time
import unittest

from etcd_cluster import EtcdCluster, etcd_binary
from testlib import free_port
from test_elastic import ENV_WORKER, TORCH_JOB, Agent, ElasticBase, have_torch


@unittest.skipUnless(etcd_binary(), "etcd not installed (apt-get install etcd-server)")
class EtcdBase(ElasticBase):
    members = 1

    def setUp(self):
        super().setUp()
        self.etcd = EtcdCluster(self.members)
        self.endpoints = self.etcd.endpoints()
        self.run_id = f"job{os.getpid()}_{time.monotonic_ns()}"

    def tearDown(self):
        super().tearDown()
        self.etcd.stop()

    def start(self, n, nnodes, *extra, nproc=2, script=ENV_WORKER, env=None, conf=""):
        rdzv_conf = "last_call_timeout=0" + ("," + conf if conf else "")
        args = ["--nnodes", nnodes, "--nproc-per-node", str(nproc), "--rdzv-backend", "etcd",
                "--rdzv-endpoint", self.endpoints, "--rdzv-id", self.run_id,
                "--rdzv-conf", rdzv_conf, *extra, script]
        out = []
        for _ in range(n):
            a = Agent(self, len(self.agents), args, env or {})
            self.agents.append(a)
            out.append(a)
        return out

    def check_envs(self, agents, world, restart=0):
        # as ElasticBase's, with this test's run id
        envs = [e for a in agents for e in a.envs()
                if int(e["WORLD_SIZE"]) == world and e["TORCHELASTIC_RESTART_COUNT"] == str(restart)]
        self.assertEqual(sorted(int(e["RANK"]) for e in envs), list(range(world)), self.dump())
        masters = set()
        for e in envs:
            self.assertEqual(e["LOCAL_WORLD_SIZE"], "2")
            self.assertEqual(int(e["GROUP_WORLD_SIZE"]), world // 2)
            self.assertEqual(e["TORCHELASTIC_RUN_ID"], self.run_id)
            self.assertEqual(int(e["RANK"]), 2 * int(e["GROUP_RANK"]) + int(e["LOCAL_RANK"]))
            masters.add(e["MASTER_ADDR"] + ":" + e["MASTER_PORT"])
        self.assertEqual(len(masters), 1, self.dump())  # one workers' store per round
        return masters.pop()


class EtcdJob(EtcdBase):
    def test_two_agents_env(self):
        agents = self.start(2, "2")
        for a in agents:
            self.assertEqual(a.wait(), 0, self.dump())
        master = self.check_envs(agents, 4)
        # No agent hosts a rendezvous store: the workers' store is group rank 0's.
        for a in agents:
            self.assertNotIn("hosting the rendezvous store", a.err())
        g0 = [a for a in agents if {e["GROUP_RANK"] for e in a.envs()} == {"0"}]
        self.assertEqual(len(g0), 1, self.dump())
        self.assertTrue(master.startswith(g0[0].addr + ":"), (master, self.dump()))

    def test_two_agents_torch_gloo_job(self):
        if not have_torch():
            self.skipTest("torch not importable")
        agents = self.start(2, "2", script=TORCH_JOB)
        for a in agents:
            self.assertEqual(a.wait(timeout=120), 0, self.dump())
        oks = [l for a in agents for l in a.out().splitlines() if "allreduce ok" in l]
        self.assertEqual(len(oks), 4, self.dump())
        for l in oks:
            self.assertIn("world=4 sum=10", l)

    def test_unreachable_etcd_names_every_endpoint(self):
        p1, p2 = free_port(), free_port()
        self.endpoints = f"127.0.0.1:{p1},127.0.0.1:{p2}"
        (a,) = self.start(1, "2", conf="join_timeout=2")
        self.assertEqual(a.wait(timeout=60), 3, self.dump())
        err = a.err()
        self.assertIn(f"127.0.0.1:{p1} (connection refused)", err)
        self.assertIn(f"127.0.0.1:{p2} (connection refused)", err)
        self.assertIn("check that etcd runs", err)
        self.assertEqual(a.envs(), [])


class EtcdFailover(EtcdBase):
    members = 3

    def test_etcd_leader_killed_mid_run(self):
        # The leader leads the endpoint list, so the agents talk to it when it dies.
        leader = self.etcd.leader()
        self.endpoints = self.etcd.endpoints(first=leader)
        env = {"GO_FILE": self.go}
        agents = self.start(2, "2", env=env, conf="keep_alive_interval=1,keep_alive_max_attempt=5")
        self.wait_envs(agents, 4)
        self.etcd.kill(leader)
        new_leader = self.etcd.leader()
        self.assertIsNot(new_leader, leader)
        # The workers finish only now: their agents must reach etcd (report done, the round's
        # end) through the surviving members.
        open(self.go, "w").close()
        for a in agents:
            self.assertEqual(a.wait(), 0, self.dump())
        self.check_envs(agents, 4)
        for a in agents:
            self.assertNotIn("round 0 ended", a.err(), self.dump())  # no re-form was needed


class EtcdStoreHostLoss(EtcdBase):
    def test_kill9_of_the_store_hosting_agent_reforms(self):
        env = {"GO_FILE": self.go}
        agents = self.start(3, "2:3", "--max-restarts", "1", env=env,
                            conf="keep_alive_interval=1,keep_alive_max_attempt=2")
        self.wait_envs(agents, 6)
        host = [a for a in agents if {e["GROUP_RANK"] for e in a.envs()} == {"0"}]
        self.assertEqual(len(host), 1, self.dump())
        host = host[0]
        old_master = self.check_envs(agents, 6)
        self.assertTrue(old_master.startswith(host.addr + ":"), self.dump())
        survivors = [a for a in agents if a is not host]
        t0 = time.monotonic()
        host.kill()
        self.wait_envs(survivors, 4, restart=1, timeout=60)
        reformed = time.monotonic() - t0
        open(self.go, "w").close()
        for a in survivors:
            self.assertEqual(a.wait(), 0, self.dump())
        new_master = self.check_envs(survivors, 4, restart=1)
        self.assertNotEqual(new_master, old_master)
        self.assertTrue(any(new_master.startswith(a.addr + ":") for a in survivors), self.dump())
        for a in survivors:
            self.assertRegex(a.err(), r"round \d+ ended: node .*\(" + host.addr.replace(".", r"\.")
                             + r"\) \(group rank 0\) lost: (its agent's etcd lease ended|no heartbeat)",
                             self.dump())
        print(f"\nkill -9 of the store host -> re-formed and running at world 4: {reformed:.2f}s")


if __name__ == "__main__":
    unittest.main(verbosity=2)
