"""Kubernetes' PyTorchJob contract: the Kubeflow training operator starts `torchrun app` (here:
`gpurun app`, no flags) in each pod with PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK,
PET_MASTER_ADDR/PET_MASTER_PORT (static) or PET_RDZV_BACKEND/PET_RDZV_ENDPOINT (elastic), plus
MASTER_ADDR, MASTER_PORT, WORLD_SIZE (= pods) and RANK (= pod index) for the pod itself. Two
"pods" run here as two gpurun processes on loopback addresses 127.0.0.1 and 127.0.0.2 (a pod's own
address comes from PET_LOCAL_ADDR here, where a real pod has its own IP); each runs 2 workers of an
unmodified PyTorch 1.13 gloo job, which must form one job of 4 ranks, as under torchrun: the pod
level WORLD_SIZE/RANK never reach the workers."""
import os
import re
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))

from testlib import PYTHON, binary, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_JOB = os.path.join(HERE, "torch_allreduce.py")


def have_torch():
    return subprocess.run([PYTHON, "-c", "import torch.distributed"], capture_output=True,
                          timeout=60).returncode == 0


def pod_env(pod, common):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PET_", "SLURM_", "TORCHELASTIC_", "MASTER_", "GPURUN_"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(common)
    env.update({"PET_NODE_RANK": str(pod), "RANK": str(pod), "WORLD_SIZE": "2",
                "PET_LOCAL_ADDR": f"127.0.0.{pod + 1}", "PYTHON_EXEC": PYTHON})
    return env


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
        ranks = set()
        for out in outs:
            for m in re.finditer(r"allreduce ok rank=(\d+) world=(\d+) sum=10", out):
                ranks.add(int(m.group(1)))
                self.assertEqual(m.group(2), "4", out)
        self.assertEqual(ranks, {0, 1, 2, 3}, "\n---\n".join(outs))

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


if __name__ == "__main__":
    unittest.main()
