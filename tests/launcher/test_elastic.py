"""gpurun's elastic agent (--rdzv-backend c10d) with real agents on loopback addresses 127.0.0.x:
the env of every worker, a real PyTorch 1.13 gloo job across agents, a late joiner (--nnodes
2:3), kill -9 of an agent (re-form with the survivors, or every survivor exits naming it), a node
that never arrives, and a worker failure restarted across nodes. Every wait is bounded; only
the agents this test started (and their process groups) are killed."""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from testlib import PYTHON, binary, free_port, pid_alive, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
ENV_WORKER = os.path.join(HERE, "elastic_worker.py")
TORCH_JOB = os.path.join(HERE, "torch_allreduce.py")


def have_torch():
    return subprocess.run([PYTHON, "-c", "import torch.distributed"], capture_output=True,
                          timeout=60).returncode == 0


class Agent:
    def __init__(self, test, idx, args, env):
        self.idx = idx
        self.addr = f"127.0.0.{idx + 1}"
        self.out_path = os.path.join(test.tmp, f"agent{idx}.out")
        self.err_path = os.path.join(test.tmp, f"agent{idx}.err")
        full_env = dict(os.environ)
        full_env.pop("OMP_NUM_THREADS", None)  # so that every agent prints torchrun's banner
        full_env.update({"PYTHON_EXEC": PYTHON})
        full_env.update(env)
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [binary("gpurun"), "--local-addr", self.addr, *args], stdout=out, stderr=err,
                env=full_env, start_new_session=True)
        self.started = time.monotonic()

    def out(self):
        with open(self.out_path) as f:
            return f.read()

    def err(self):
        with open(self.err_path) as f:
            return f.read()

    def envs(self):
        return [dict(kv.split("=", 1) for kv in m.split())
                for m in re.findall(r"ENV (.*)", self.out())]

    def wait(self, timeout=60):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent {self.addr} still running after {timeout}s\n"
                                 f"stdout:\n{self.out()}\nstderr:\n{self.err()}")

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)


OMP_BANNER = "Setting OMP_NUM_THREADS environment variable for each process to be 1"


class ElasticBase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="gpurun_elastic_")
        self.port = free_port()
        self.agents = []
        self.go = os.path.join(self.tmp, "go")

    def tearDown(self):
        for a in self.agents:
            a.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, n, nnodes, *extra, nproc=2, script=ENV_WORKER, env=None, conf=""):
        rdzv_conf = "last_call_timeout=0" + ("," + conf if conf else "")
        args = ["--nnodes", nnodes, "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{self.port}", "--rdzv-id", "job",
                "--rdzv-conf", rdzv_conf, *extra, script]
        out = []
        for _ in range(n):
            a = Agent(self, len(self.agents), args, env or {})
            self.agents.append(a)
            out.append(a)
        return out

    def dump(self):
        return "\n".join(f"--- agent {a.addr} rc={a.proc.poll()}\n{a.out()}\n{a.err()}"
                         for a in self.agents)

    def assert_notes_once(self, agents):
        # torchrun's OMP banner is printed once per agent, not again at every round.
        for a in agents:
            self.assertEqual(a.err().count(OMP_BANNER), 1, self.dump())

    def wait_envs(self, agents, world, restart=None, timeout=60):
        def ready():
            return all(sum(1 for e in a.envs() if int(e["WORLD_SIZE"]) == world and
                           (restart is None or e["TORCHELASTIC_RESTART_COUNT"] == str(restart)))
                       >= 2 for a in agents)
        try:
            wait_until(ready, timeout=timeout, what=f"every agent's workers at world {world}")
        except AssertionError:
            raise AssertionError(f"workers never reached world {world}\n" + self.dump())

    def check_envs(self, agents, world, restart=0):
        envs = [e for a in agents for e in a.envs()
                if int(e["WORLD_SIZE"]) == world and e["TORCHELASTIC_RESTART_COUNT"] == str(restart)]
        self.assertEqual(sorted(int(e["RANK"]) for e in envs), list(range(world)), self.dump())
        groups = {}
        for e in envs:
            self.assertEqual(e["LOCAL_WORLD_SIZE"], "2")
            self.assertEqual(int(e["GROUP_WORLD_SIZE"]), world // 2)
            self.assertEqual(e["ROLE_RANK"], e["RANK"])
            self.assertEqual(e["ROLE_WORLD_SIZE"], str(world))
            self.assertEqual(e["TORCHELASTIC_RUN_ID"], "job")
            # node-major: the node's ranks are 2g and 2g+1
            self.assertEqual(int(e["RANK"]), 2 * int(e["GROUP_RANK"]) + int(e["LOCAL_RANK"]))
            groups.setdefault(e["GROUP_RANK"], set()).add(e["MASTER_ADDR"] + ":" + e["MASTER_PORT"])
        self.assertEqual(len(groups), world // 2)
        self.assertEqual(len(set().union(*groups.values())), 1)  # one workers' store


class ElasticEnv(ElasticBase):
    def run_agents(self, n):
        agents = self.start(n, str(n))
        for a in agents:
            self.assertEqual(a.wait(), 0, self.dump())
        self.check_envs(agents, 2 * n)
        self.assertIn("hosting the rendezvous store", agents[0].err())
        # Each agent got its own group rank; new nodes are ordered by address.
        for a in agents:
            self.assertEqual({e["GROUP_RANK"] for e in a.envs()}, {str(a.idx)}, self.dump())

    def test_two_agents(self):
        self.run_agents(2)

    def test_three_agents(self):
        self.run_agents(3)

    def test_node_that_never_arrives(self):
        (a,) = self.start(1, "2", conf="join_timeout=2")
        self.assertEqual(a.wait(timeout=30), 3, self.dump())
        self.assertIn("1 of at least 2 nodes joined", a.err())
        self.assertIn(f"127.0.0.1:{self.port}", a.err())
        self.assertIn("join_timeout", a.err())
        self.assertEqual(a.envs(), [])

    def test_store_host_that_never_comes(self):
        # Only a client: it says what it waits for, then gives up after join_timeout.
        self.port = free_port()
        a = Agent(self, 1, ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                            "--rdzv-endpoint", f"127.0.0.1:{self.port}",
                            "--rdzv-conf", "join_timeout=2", ENV_WORKER], {})
        self.agents.append(a)
        self.assertEqual(a.wait(timeout=30), 3, self.dump())
        self.assertIn(f"cannot reach the rendezvous store at 127.0.0.1:{self.port}", a.err())


class ElasticMembership(ElasticBase):
    def test_late_joiner_reforms_at_world_6(self):
        env = {"GO_FILE": self.go}
        a, b = self.start(2, "2:3", env=env)
        self.wait_envs([a, b], 4)
        (c,) = self.start(1, "2:3", env=env)
        self.wait_envs([a, b, c], 6)
        open(self.go, "w").close()
        for x in (a, b, c):
            self.assertEqual(x.wait(), 0, self.dump())
        self.check_envs([a, b, c], 6, restart=0)  # a membership change is not a restart
        self.assert_notes_once([a, b, c])
        self.assertIn("127.0.0.3) joined", a.err())
        self.assertIn("127.0.0.3) joined", b.err())
        # The first two keep their group ranks; the joiner comes after them.
        self.assertEqual({e["GROUP_RANK"] for e in c.envs()}, {"2"})

    def test_kill9_reforms_with_the_survivors(self):
        env = {"GO_FILE": self.go}
        a, b, c = self.start(3, "2:3", "--max-restarts", "1", env=env)
        self.wait_envs([a, b, c], 6)
        t0 = time.monotonic()
        c.kill()
        self.wait_envs([a, b], 4, restart=1, timeout=30)
        reformed = time.monotonic() - t0
        open(self.go, "w").close()
        for x in (a, b):
            self.assertEqual(x.wait(), 0, self.dump())
        self.check_envs([a, b], 4, restart=1)
        self.assert_notes_once([a, b])
        for x in (a, b):
            self.assertRegex(x.err(), r"127\.0\.0\.3\) \(group rank \d\) lost: its agent's "
                                      r"connection to the rendezvous store dropped")
        print(f"\nkill -9 -> re-formed and running at world 4: {reformed:.2f}s")

    def test_a_hung_agent_is_found_by_heartbeats(self):
        env = {"GO_FILE": self.go}
        a, b, c = self.start(3, "2:3", "--max-restarts", "1", env=env,
                             conf="keep_alive_interval=0.5,keep_alive_max_attempt=2")
        self.wait_envs([a, b, c], 6)
        os.kill(c.proc.pid, signal.SIGSTOP)  # alive (its connection stays) but silent
        self.wait_envs([a, b], 4, restart=1, timeout=60)
        open(self.go, "w").close()
        for x in (a, b):
            self.assertEqual(x.wait(), 0, self.dump())
        self.assertTrue(any(re.search(r"127\.0\.0\.3\) \(group rank \d\) lost: no heartbeat for",
                                      x.err()) for x in (a, b)), self.dump())

    def test_kill9_of_the_store_host_is_reported_on_the_others(self):
        env = {"GO_FILE": self.go}
        a, b = self.start(2, "1:2", "--max-restarts", "3", env=env)
        self.wait_envs([a, b], 4)
        a.kill()  # hosts the rendezvous store: nobody can re-form
        self.assertEqual(b.wait(timeout=60), 3, self.dump())
        self.assertIn(f"lost the rendezvous store at 127.0.0.1:{self.port}", b.err())

    def test_kill9_with_fixed_nnodes_stops_every_survivor(self):
        env = {"GO_FILE": self.go}
        a, b, c = self.start(3, "3", "--max-restarts", "3", env=env)
        self.wait_envs([a, b, c], 6)
        worker_pids = []
        t0 = time.monotonic()
        c.kill()
        for x in (a, b):
            self.assertEqual(x.wait(timeout=30), 3, self.dump())
        stopped = time.monotonic() - t0
        for x in (a, b):
            err = x.err()
            self.assertIn("the job stops on every node", err)
            self.assertRegex(err, r"127\.0\.0\.3\) \(group rank 2\) lost")
            self.assertIn("2 nodes left, fewer than the minimum of --nnodes (3)", err)
        print(f"\nkill -9 -> both survivors exited: {stopped:.2f}s")


class ElasticExitBarrier(ElasticBase):
    def test_exit_barrier_timeout_names_the_slow_node(self):
        # Node 0 (127.0.0.1, the store host) has slow workers (they run until the go file, then
        # work 2 s more); node 1's finish at once and wait in the exit barrier, bounded by
        # --exit-barrier-timeout. Node 1 leaving then is not a lost node (neither its dropped
        # connection nor its stopped heartbeats, 0.2 s x 2 here, while node 0 still works).
        conf = "keep_alive_interval=0.2,keep_alive_max_attempt=2"
        (slow,) = self.start(1, "2", "--exit-barrier-timeout", "1", conf=conf,
                             env={"GO_FILE": self.go, "WORK_S": "2"})
        (fast,) = self.start(1, "2", "--exit-barrier-timeout", "1", conf=conf)
        self.assertEqual(fast.wait(timeout=60), 0, self.dump())
        err = fast.err()
        self.assertRegex(err, r"exit barrier: timed out after 1s \(--exit-barrier-timeout\) "
                              r"waiting for 1 node of round 0 to finish: (\S+ \()?127\.0\.0\.1\)? "
                              r"\(group rank 0\);", self.dump())
        self.assertEqual(slow.proc.poll(), None, self.dump())  # still running its workers
        open(self.go, "w").close()
        self.assertEqual(slow.wait(timeout=60), 0, self.dump())
        self.assertNotIn("lost", slow.err())
        self.check_envs([slow, fast], 4)


@unittest.skipUnless(have_torch(), "PyTorch not importable by " + PYTHON)
class MixedWithTorchrun(ElasticBase):
    MSG = ("gpurun and torchrun agents cannot be mixed in one job; run the same launcher on "
           "every node")

    def torchrun(self):
        with open(os.path.join(self.tmp, "torchrun.err"), "w") as err:
            p = subprocess.Popen(
                [PYTHON, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                 "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{self.port}",
                 "--rdzv_id", "job", "--no_python", "/bin/true"],
                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        self.addCleanup(lambda: (p.poll() is None and os.killpg(p.pid, signal.SIGKILL), p.wait()))
        return p, err.name

    def check_both(self, agent, proc, err_path):
        self.assertEqual(agent.wait(timeout=60), 3, self.dump())
        self.assertIn("gpurun: error: a torchrun agent joined rendezvous job at "
                      f"127.0.0.1:{self.port}; " + self.MSG, agent.err())
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("torchrun still waiting 60 s after gpurun refused it")
        with open(err_path) as f:
            terr = f.read()
        self.assertNotEqual(rc, 0, terr)
        self.assertIn(self.MSG, terr)  # torchrun's agent stops naming the mix-up too

    def test_gpurun_hosts_and_a_torchrun_agent_comes(self):
        (a,) = self.start(1, "2", nproc=1)
        wait_until(lambda: "hosting the rendezvous store" in a.err(), timeout=60,
                   what="gpurun hosting the store")
        proc, err_path = self.torchrun()
        self.check_both(a, proc, err_path)


class StaticExitBarrier(ElasticBase):
    def test_kill9_of_a_node_ends_node0s_exit_barrier_at_once(self):
        common = ["--nnodes", "2", "--nproc-per-node", "1", "--master-addr", "127.0.0.1",
                  "--master-port", str(self.port), "--rdzv-timeout", "120"]
        env = {"GO_FILE": self.go}
        n0 = Agent(self, 0, [*common, "--node-rank", "0", ENV_WORKER], env)
        n1 = Agent(self, 1, [*common, "--node-rank", "1", ENV_WORKER], env)
        self.agents += [n0, n1]
        wait_until(lambda: len(n0.envs()) == 1 and len(n1.envs()) == 1, timeout=60,
                   what="both nodes' workers running")
        n1.kill()
        open(self.go, "w").close()  # node 0's worker finishes; node 0 enters the barrier
        t0 = time.monotonic()
        self.assertEqual(n0.wait(timeout=30), 3, self.dump())
        self.assertLess(time.monotonic() - t0, 30)
        self.assertIn("node rank 1 exited without reaching the exit barrier", n0.err())


@unittest.skipUnless(have_torch(), "PyTorch not importable by " + PYTHON)
class ElasticPyTorch(ElasticBase):
    def sums(self, agents):
        out = "".join(a.out() for a in agents)
        return re.findall(r"allreduce ok rank=(\d+) world=(\d+) sum=(\S+) attempt=(\d+)", out)

    def check(self, agents, world, attempt):
        sums = self.sums(agents)
        self.assertEqual(sorted(int(r) for r, _, _, _ in sums), list(range(world)), self.dump())
        for _, w, total, att in sums:
            self.assertEqual(int(w), world)
            self.assertEqual(float(total), world * (world + 1) / 2)
            self.assertEqual(int(att), attempt)

    def test_gloo_allreduce_across_three_agents(self):
        agents = self.start(3, "3", script=TORCH_JOB)
        for a in agents:
            self.assertEqual(a.wait(timeout=120), 0, self.dump())
        self.check(agents, 6, 0)

    def test_worker_failure_restarts_every_node(self):
        agents = self.start(2, "2", "--max-restarts", "1", script=TORCH_JOB,
                            env={"FAIL_RANK": "3", "FAIL_ON_ATTEMPT": "0"})
        for a in agents:
            self.assertEqual(a.wait(timeout=120), 0, self.dump())
        self.check(agents, 4, 1)
        self.assertIn("rank 3 (local rank 1", agents[0].err())
        self.assert_notes_once(agents)

    def test_worker_failure_without_restarts_same_exit_code_everywhere(self):
        agents = self.start(2, "2", script=TORCH_JOB,
                            env={"FAIL_RANK": "3", "FAIL_ON_ATTEMPT": "0"})
        for a in agents:
            self.assertEqual(a.wait(timeout=120), 3, self.dump())
            self.assertIn("no restarts left", a.err())
            self.assertIn("rank 3 (local rank 1", a.err())


if __name__ == "__main__":
    unittest.main(verbosity=2)
