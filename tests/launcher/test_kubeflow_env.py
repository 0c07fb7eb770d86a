"""Kubernetes' PyTorchJob contract: the Kubeflow training operator starts `torchrun app` (here:
`gpurun app`, no flags) in each pod with PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK,
PET_MASTER_ADDR/PET_MASTER_PORT (static) or PET_RDZV_BACKEND/PET_RDZV_ENDPOINT (elastic), plus
MASTER_ADDR, MASTER_PORT, WORLD_SIZE (= pods) and RANK (= pod index) for the pod itself. Two
"pods" run here as two gpurun processes on loopback addresses 127.0.0.1 and 127.0.0.2 (a pod's own
address comes from PET_LOCAL_ADDR here, where a real pod has its own IP); each runs 2 workers of an
unmodified PyTorch 1.13 gloo job, which must form one job of 4 ranks, as under torchrun: the pod
level WORLD_SIZE/RANK never reach the workers.

PyTorchJobInNamespaces runs the same contract with each pod a host of its own (a network + UTS
namespace with its own hostname and address, tests/support/nshosts.py): pods "job-master-0"
(10.77.0.1) and "job-worker-0" (10.77.0.2), named as the operator names them, reach each other
by those names (PET_MASTER_ADDR=job-master-0), with no PET_LOCAL_ADDR: each agent finds its own
address as a pod would. A third pod "stranger" (10.77.0.99), not part of the job, tries the
job's store while the job holds: with PET_RDZV_ALLOW naming the job's pods it is refused, and
node 0's log names its address."""
import os
import re
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))

import nshosts
import testlib
from testlib import PYTHON, binary, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_JOB = os.path.join(HERE, "torch_allreduce.py")


def have_torch():
    return subprocess.run([PYTHON, "-c", "import torch.distributed"], capture_output=True,
                          timeout=60).returncode == 0


def pod_env(pod, common, local_addr=True):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PET_", "SLURM_", "TORCHELASTIC_", "MASTER_", "GPURUN_"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(common)
    env.update({"PET_NODE_RANK": str(pod), "RANK": str(pod), "WORLD_SIZE": "2",
                "PYTHON_EXEC": PYTHON})
    if local_addr:
        env["PET_LOCAL_ADDR"] = f"127.0.0.{pod + 1}"
    return env


def check_one_job_of_4(test, outs):
    ranks = set()
    for out in outs:
        for m in re.finditer(r"allreduce ok rank=(\d+) world=(\d+) sum=10", out):
            ranks.add(int(m.group(1)))
            test.assertEqual(m.group(2), "4", out)
    test.assertEqual(ranks, {0, 1, 2, 3}, "\n---\n".join(outs))


class PyTorchJobEnv(unittest.TestCase):
    def run_pods(self, common):
        if not have_torch():
            raise unittest.SkipTest("torch 1.13 not importable by /usr/bin/python3")
        with tempfile.TemporaryDirectory() as d:
            procs = []
            for pod in (0, 1):
                out = open(os.path.join(d, f"pod{pod}.out"), "w")
                procs.append((subprocess.Popen([binary("gpurun"), TORCH_JOB], stdout=out,
                                               stderr=subprocess.STDOUT,
                                               env=pod_env(pod, common), start_new_session=True),
                              out))
            outs = []
            try:
                for p, f in procs:
                    p.wait(timeout=120)
            finally:
                for p, f in procs:
                    if p.poll() is None:
                        os.killpg(p.pid, 9)
                        p.wait()
                    f.close()
            for pod in (0, 1):
                with open(os.path.join(d, f"pod{pod}.out")) as f:
                    outs.append(f.read())
            for (p, _), out in zip(procs, outs):
                self.assertEqual(p.returncode, 0, "\n---\n".join(outs))
            return outs

    def check_one_job_of_4(self, outs):
        check_one_job_of_4(self, outs)

    def test_static_pytorchjob(self):
        port = str(free_port())
        outs = self.run_pods({"PET_NNODES": "2", "PET_NPROC_PER_NODE": "2",
                              "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": port,
                              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
        self.check_one_job_of_4(outs)

    def test_elastic_pytorchjob(self):
        port = str(free_port())
        outs = self.run_pods({"PET_NNODES": "2:2", "PET_NPROC_PER_NODE": "2",
                              "PET_RDZV_BACKEND": "c10d",
                              "PET_RDZV_ENDPOINT": f"127.0.0.1:{port}",
                              "PET_RDZV_ID": "pytorchjob-test",
                              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
        self.check_one_job_of_4(outs)


PODS = {"job-master-0": 1, "job-worker-0": 2, "stranger": 99}
# A stranger's attack from issue 16: ADD to a key of the job's store through torch's own client.
STRANGER = r"""
import sys, datetime
from torch.distributed import TCPStore
try:
    s = TCPStore(sys.argv[1], int(sys.argv[2]), None, False, datetime.timedelta(seconds=10))
    s.add("stranger_probe", 1)
    print("ACCEPTED")
except Exception as e:
    print("REFUSED", type(e).__name__, e)
"""
# torch 1.13's client sometimes aborts on the reset instead of raising (terminate called after
# throwing std::system_error "Connection reset by peer"): refused all the same.
def refused(verdict):
    return "ACCEPTED" not in verdict and ("REFUSED" in verdict or
                                          "Connection reset by peer" in verdict)



class PyTorchJobInNamespaces(unittest.TestCase):
    """The pods are namespace hosts; the master's service name is its hostname."""

    @classmethod
    def setUpClass(cls):
        if not have_torch():
            raise unittest.SkipTest("torch 1.13 not importable by /usr/bin/python3")
        binary("gpurun")
        cls.hosts = nshosts.Hosts(PODS)
        cls.hosts.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.hosts.__exit__()

    def run_pods(self, common, hold=None, while_held=None):
        """Both pods' gpurun with the operator's environment; `while_held(dir)` runs once rank 0
        holds (HOLD_DIR), then the job is let go. Returns both pods' output."""
        with tempfile.TemporaryDirectory() as d:
            procs = []
            extra = {"HOLD_DIR": d} if hold else {}
            for pod, host in enumerate(("job-master-0", "job-worker-0")):
                out = open(os.path.join(d, f"pod{pod}.out"), "w")
                env = dict(pod_env(pod, common, local_addr=False), **extra)
                procs.append((self.hosts.popen(host, [binary("gpurun"), TORCH_JOB], stdout=out,
                                               stderr=subprocess.STDOUT, env=env), out))
            try:
                if hold:
                    testlib.wait_until(
                        lambda: os.path.exists(os.path.join(d, "ready")) or
                        any(p.poll() is not None for p, _ in procs),
                        timeout=120, interval=0.05, what="rank 0 to hold the job (HOLD_DIR/ready)")
                    while_held(d)
                    open(os.path.join(d, "go"), "w").close()
                for p, _ in procs:
                    p.wait(timeout=120)
            finally:
                for p, f in procs:
                    self.hosts.stop(p)
                    f.close()
            outs = []
            for pod in (0, 1):
                with open(os.path.join(d, f"pod{pod}.out")) as f:
                    outs.append(f.read())
            for p, _ in procs:
                self.assertEqual(p.returncode, 0, "\n---\n".join(outs))
            return outs

    def test_static_pytorchjob_across_pods(self):
        outs = self.run_pods({"PET_NNODES": "2", "PET_NPROC_PER_NODE": "2",
                              "PET_MASTER_ADDR": "job-master-0", "PET_MASTER_PORT": "23456",
                              "MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456"})
        check_one_job_of_4(self, outs)

    def test_elastic_pytorchjob_across_pods(self):
        outs = self.run_pods({"PET_NNODES": "2:2", "PET_NPROC_PER_NODE": "2",
                              "PET_RDZV_BACKEND": "c10d", "PET_RDZV_ENDPOINT": "job-master-0:23456",
                              "PET_RDZV_ID": "pytorchjob-test",
                              "MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456"})
        check_one_job_of_4(self, outs)
        self.assertIn("hosting the rendezvous store of 'pytorchjob-test' on job-master-0:23456",
                      outs[0])
        # Each agent found its own pod address (no PET_LOCAL_ADDR).
        joined = "\n".join(outs)
        self.assertIn("job-master-0 (10.77.0.1)", joined)
        self.assertIn("job-worker-0 (10.77.0.2)", joined)

    def probe(self, addr, port):
        r = self.hosts.run("stranger", [PYTHON, "-c", STRANGER, addr, str(port)], timeout=90)
        return r.stdout + r.stderr

    def run_attacked(self, common):
        """run_pods, with the stranger probing the store while rank 0 holds the job; returns the
        pods' outputs and what the stranger saw."""
        seen = {}

        def attack(d):
            with open(os.path.join(d, "ready")) as f:
                addr, port = f.read().split()
            seen["probe"] = self.probe(addr, port)

        outs = self.run_pods(common, hold=True, while_held=attack)
        return outs, seen["probe"]

    def test_a_stranger_pod_is_refused_with_rdzv_allow(self):
        outs, probe = self.run_attacked({
            "PET_NNODES": "2", "PET_NPROC_PER_NODE": "2",
            "PET_MASTER_ADDR": "job-master-0", "PET_MASTER_PORT": "23456",
            "MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456",
            "PET_RDZV_ALLOW": "job-master-0,job-worker-0"
        })
        self.assertTrue(refused(probe), probe)
        self.assertRegex(outs[0], r"refusing connection from 10\.77\.0\.99:\d+: not one of the "
                                  r"job's hosts, which are job-master-0=10\.77\.0\.1, "
                                  r"job-worker-0=10\.77\.0\.2 \(from --rdzv-allow\)")
        check_one_job_of_4(self, outs)  # the job's own pods were let in

    def test_a_job_secret_closes_the_store_without_a_list(self):
        # No Slurm, no --rdzv-allow, but GPURUN_JOB_SECRET on both pods (issue 16): the worker
        # pod's agent proves it, which admits its host (and so its PyTorch workers); the
        # stranger's PyTorch client, which cannot, is closed at its first request.
        outs, probe = self.run_attacked({
            "PET_NNODES": "2", "PET_NPROC_PER_NODE": "2",
            "PET_MASTER_ADDR": "job-master-0", "PET_MASTER_PORT": "23458",
            "MASTER_ADDR": "job-master-0", "MASTER_PORT": "23458",
            "GPURUN_JOB_SECRET": "pytorchjob-secret",
            "GPURUN_LOG_LEVEL": "info", "GPURUN_LOG_SUBSYS": "store"
        })
        self.assertTrue(refused(probe), probe)
        self.assertRegex(outs[0], r"10\.77\.0\.2:\d+ proved the job secret: host 10\.77\.0\.2 is "
                                  r"admitted as one of the job's")
        self.assertRegex(outs[0], r"closing connection from 10\.77\.0\.99:\d+: it sent ADD "
                                  r"without proving the job secret first")
        self.assertNotRegex(outs[0], r"host 10\.77\.0\.99 is admitted")
        check_one_job_of_4(self, outs)

    def test_a_job_secret_admits_the_elastic_agents(self):
        # The c10d rendezvous store (hosted by the master pod's agent) with a secret and no list:
        # the other agent proves it; the round's workers' store admits the round's nodes.
        outs = self.run_pods({"PET_NNODES": "2:2", "PET_NPROC_PER_NODE": "2",
                              "PET_RDZV_BACKEND": "c10d", "PET_RDZV_ENDPOINT": "job-master-0:23459",
                              "PET_RDZV_ID": "pytorchjob-secret-test",
                              "MASTER_ADDR": "job-master-0", "MASTER_PORT": "23459",
                              "GPURUN_JOB_SECRET": "pytorchjob-secret",
                              "GPURUN_LOG_LEVEL": "info", "GPURUN_LOG_SUBSYS": "store"})
        check_one_job_of_4(self, outs)
        self.assertRegex(outs[0], r"proved the job secret: host 10\.77\.0\.2 is admitted")

    def test_a_wrong_job_secret_is_refused_at_once(self):
        common = {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "2",
                  "PET_MASTER_ADDR": "job-master-0", "PET_MASTER_PORT": "23460",
                  "MASTER_ADDR": "job-master-0", "MASTER_PORT": "23460"}
        with tempfile.TemporaryDirectory() as d:
            master_out = open(os.path.join(d, "master.out"), "w")
            master = self.hosts.popen(
                "job-master-0", [binary("gpurun"), TORCH_JOB], stdout=master_out,
                stderr=subprocess.STDOUT,
                env=dict(pod_env(0, common, local_addr=False), GPURUN_JOB_SECRET="right"))
            try:
                r = self.hosts.run("job-worker-0", [binary("gpurun"), TORCH_JOB], timeout=90,
                                   env=dict(pod_env(1, common, local_addr=False),
                                            GPURUN_JOB_SECRET="wrong"))
            finally:
                self.hosts.stop(master)
                master_out.close()
            with open(os.path.join(d, "master.out")) as f:
                master_log = f.read()
        out = r.stdout + r.stderr
        self.assertNotEqual(r.returncode, 0, out)
        self.assertIn("the store refused this host's job-secret proof: GPURUN_JOB_SECRET here "
                      "differs from the store's", out)
        self.assertRegex(master_log, r"closing connection from 10\.77\.0\.2:\d+: its job-secret "
                                     r"proof is wrong")
        self.assertNotIn("allreduce ok", out)

    def test_without_an_allow_list_the_stranger_gets_in(self):
        # The control: what --rdzv-allow changes (no Slurm, no list: any host, as torchrun).
        outs, probe = self.run_attacked({
            "PET_NNODES": "2", "PET_NPROC_PER_NODE": "2",
            "PET_MASTER_ADDR": "job-master-0", "PET_MASTER_PORT": "23457",
            "MASTER_ADDR": "job-master-0", "MASTER_PORT": "23457"
        })
        self.assertIn("ACCEPTED", probe)
        check_one_job_of_4(self, outs)


if __name__ == "__main__":
    unittest.main()
