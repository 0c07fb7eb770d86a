"""The worker SDK under real launchers other than gpurun: PyTorch 1.13's torchrun, Open MPI's mpirun
and Slurm's srun on a one-node cluster this test brings up on localhost (munged + slurmctld +
slurmd, as root). Each
worker finds its rank and world size from the launcher's variables and completes an all_reduce
through a gpurun-store it is pointed at with MASTER_ADDR/MASTER_PORT, or with nothing set, through
the store rank 0 hosts itself."""
import os
import signal
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sdklib
import testlib

DROP = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
        "GPURUN_BACKEND", "GPURUN_FAKE_GPU_RANKS", "TORCHELASTIC_RUN_ID")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in DROP and not k.startswith("SLURM_")}
    env.update(extra)
    return env


class StoreServer:
    """A gpurun-store on 127.0.0.1, port 0; .port is what it bound."""

    def __enter__(self):
        exe = sdklib.sdk_binary("gpurun-store") if not os.environ.get("GPURUN_BIN_GPURUN_STORE") \
            else testlib.binary("gpurun-store")
        self.proc = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r":(\d+)\s*$", line)
        if not m:
            self.proc.kill()
            raise AssertionError(f"gpurun-store printed {line!r}, stderr {self.proc.stderr.read()}")
        self.port = int(m.group(1))
        return self

    def __exit__(self, *a):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Mpirun(unittest.TestCase):
    def test_allreduce_under_mpirun(self):
        mpirun = shutil.which("mpirun")
        if not mpirun:
            raise unittest.SkipTest("mpirun not installed (apt install openmpi-bin)")
        worker = sdklib.sdk_binary("collectives_worker")
        with StoreServer() as store:
            cmd = [mpirun, "--allow-run-as-root", "--oversubscribe", "-np", "3",
                   "-x", "MASTER_ADDR=127.0.0.1", "-x", f"MASTER_PORT={store.port}",
                   "-x", "GPURUN_COMM_TIMEOUT=30s", worker, "--allreduce"]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=clean_env())
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out)
        for r in range(3):
            self.assertIn(f"rank {r}/3 backend=gloo device=cpu launcher=mpirun local_rank={r}/3", out)
        self.assertIn("allreduce ok: world 3 sum 6", out)

    def test_mpirun_on_one_host_needs_no_store(self):
        # No MASTER_ADDR/MASTER_PORT and every rank on this host: rank 0 hosts the store.
        mpirun = shutil.which("mpirun")
        if not mpirun:
            raise unittest.SkipTest("mpirun not installed")
        worker = sdklib.sdk_binary("collectives_worker")
        p = subprocess.run([mpirun, "--allow-run-as-root", "--oversubscribe", "-np", "3",
                            "-x", "GPURUN_COMM_TIMEOUT=30s", worker, "--allreduce"],
                           capture_output=True, text=True, timeout=60, env=clean_env())
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out)
        for r in range(3):
            self.assertIn(f"rank {r}/3 backend=gloo device=cpu launcher=mpirun local_rank={r}/3", out)
        self.assertIn("allreduce ok: world 3 sum 6", out)


class Torchrun(unittest.TestCase):
    def test_allreduce_under_torchrun_1_13(self):
        # torchrun's own store is torch 1.13's TCPStore, which drops the 2.x handshake: the SDK
        # finds that at connect (Dialect::kAuto) and speaks 1.13. GPURUN_JOB_SECRET set beside
        # it must not be offered to a PyTorch store. (Before: retried the 2.x handshake for 30
        # minutes.)
        worker = sdklib.sdk_binary("collectives_worker")
        cmd = [testlib.PYTHON, "-m", "torch.distributed.run", "-r", "1", "-t", "1",
               "--nproc_per_node", "3", "--master_port", str(free_port()), "--no_python",
               worker, "--allreduce"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=90,
                           env=clean_env(GPURUN_COMM_TIMEOUT="30s", GPURUN_JOB_SECRET="beside"))
        out = p.stdout + p.stderr
        if "No module named torch" in out:
            raise unittest.SkipTest(f"torch not importable by {testlib.PYTHON}")
        self.assertEqual(p.returncode, 0, out)
        for r in range(3):
            self.assertIn(f"rank {r}/3 backend=gloo device=cpu launcher=torchrun local_rank={r}/3",
                          out)
        self.assertIn("allreduce ok: world 3 sum 6", out)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """munged + slurmctld + slurmd for one node (this host) in a temp dir, in the foreground
    (so this test owns their pids); SLURM_CONF points srun at it."""

    def __enter__(self):
        for tool in ("munged", "slurmctld", "slurmd", "srun", "sinfo"):
            if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
                raise unittest.SkipTest(f"{tool} not installed (apt install slurm-wlm munge)")
        if os.geteuid() != 0:
            raise unittest.SkipTest("a local Slurm cluster needs root (munged, slurmd)")
        if not os.path.exists("/etc/munge/munge.key"):
            raise unittest.SkipTest("no /etc/munge/munge.key (run scripts/setup.sh)")
        self.dir = tempfile.mkdtemp(prefix="gpurun_slurm_")
        d = self.dir
        os.makedirs(f"{d}/state")
        os.makedirs(f"{d}/spool")
        host = socket.gethostname()
        self.conf = f"{d}/slurm.conf"
        with open(self.conf, "w") as f:
            f.write(f"""ClusterName=gpuruntest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={d}/munge.sock
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
""")
        self.env = clean_env(SLURM_CONF=self.conf)
        self.procs = []
        sbin = lambda t: shutil.which(t) or f"/usr/sbin/{t}"
        self.procs.append(subprocess.Popen(
            [sbin("munged"), "-F", "-f", "-S", f"{d}/munge.sock", f"--pid-file={d}/munged.pid",
             f"--seed-file={d}/munged.seed", f"--log-file={d}/munged.log"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        testlib.wait_until(lambda: os.path.exists(f"{d}/munge.sock"), timeout=10,
                           what="munged socket")
        self.procs.append(subprocess.Popen([sbin("slurmctld"), "-D", "-i"], env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.procs.append(subprocess.Popen([sbin("slurmd"), "-D", "-N", host], env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def idle():
            if any(p.poll() is not None for p in self.procs):
                return True
            r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                               env=self.env, timeout=10)
            return r.stdout.strip() == "idle"

        try:
            testlib.wait_until(idle, timeout=30, interval=0.2, what="the Slurm node to be idle")
        except AssertionError:
            pass
        dead = [p.args[0] for p in self.procs if p.poll() is not None]
        if dead:
            logs = self.logs()
            self.__exit__()
            raise unittest.SkipTest(f"Slurm daemons could not start ({dead} exited):\n{logs}")
        return self

    def logs(self):
        out = ""
        for name in ("munged.log", "slurmctld.log", "slurmd.log"):
            try:
                with open(os.path.join(self.dir, name)) as f:
                    out += f"--- {name}\n" + "".join(f.readlines()[-15:])
            except OSError:
                pass
        return out

    def __exit__(self, *a):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        # A step's slurmstepd outlives slurmd when a job step was still running (it is reparented
        # to init): kill the ones of this cluster, found by the SLURM_CONF they inherited.
        for stepd in stepds_of(self.conf):
            try:
                os.kill(stepd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def stepds_of(conf):
    """PIDs of the slurmstepd processes started under SLURM_CONF=conf."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "slurmstepd":
                    continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"SLURM_CONF={conf}".encode() in f.read().split(b"\0"):
                    out.append(int(pid))
        except OSError:
            pass
    return out


class Srun(unittest.TestCase):
    def test_srun_gpurun_infers_from_slurm(self):
        # srun gpurun (one per node) with no multi-node flags: nodes, node rank and run id come
        # from Slurm, said in one line; the workers form their job on gpurun's store.
        worker = sdklib.sdk_binary("collectives_worker")
        with SlurmCluster() as cluster:
            env = dict(cluster.env, GPURUN_COMM_TIMEOUT="30s")
            p = subprocess.run(["srun", "-N", "1", "-n", "1", "--time=1", testlib.binary("gpurun"),
                                "--nproc-per-node", "2", "--master-port", "0", "--no-python",
                                worker, "--allreduce"], capture_output=True, text=True,
                               timeout=60, env=env)
            out = p.stdout + p.stderr
            self.assertEqual(p.returncode, 0, out + cluster.logs())
        self.assertRegex(out, r"gpurun: from Slurm: 1 node \(SLURM_STEP_NUM_NODES\), node rank 0 "
                              r"\(SLURM_NODEID\), run id \d+ \(SLURM_JOB_ID\); flags override")
        for r in range(2):
            self.assertIn(f"rank {r}/2 backend=gloo device=cpu launcher=gpurun", out)
        self.assertIn("allreduce ok: world 2 sum 3", out)

    def test_srun_needs_no_store(self):
        # Seed 001's way (srun of the app itself, one task per GPU/CPU), nothing set by hand: rank 0
        # hosts the store on the step's first node at a port derived from the job and step ids.
        with SlurmCluster() as cluster:
            out = self.srun_allreduce(cluster, GPURUN_LOG_LEVEL="info", GPURUN_LOG_SUBSYS="init")
        self.assertRegex(out, r"rank 0 hosts the job's store on \S+:\d+ \(the first node of "
                              r"SLURM_STEP_NODELIST and a port derived from SLURM_JOB_ID=\d+")

    def test_allreduce_under_srun(self):
        with SlurmCluster() as cluster, StoreServer() as store:
            self.srun_allreduce(cluster, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(store.port))

    def srun_allreduce(self, cluster, **extra_env):
        """srun -n 3 of the worker's all_reduce on the cluster; checks every rank; returns output."""
        worker = sdklib.sdk_binary("collectives_worker")
        env = dict(cluster.env, GPURUN_COMM_TIMEOUT="30s", **extra_env)
        p = subprocess.run(["srun", "-N", "1", "-n", "3", "-O", "--time=1", worker, "--allreduce"],
                           capture_output=True, text=True, timeout=60, env=env)
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out + cluster.logs())
        for r in range(3):
            self.assertIn(f"rank {r}/3 backend=gloo device=cpu launcher=srun local_rank={r}/3", out)
        self.assertIn("allreduce ok: world 3 sum 6", out)
        return out


if __name__ == "__main__":
    unittest.main()
