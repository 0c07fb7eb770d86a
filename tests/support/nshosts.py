"""Several hosts on this one machine for multi-node tests: each host is a network + UTS + mount
namespace with its own hostname, its own address on a bridge (10.77.0.0/24, inside namespaces
this module creates only) and a private /etc/hosts that names every host; plus a Slurm cluster
on them (slurmctld on host "ctl", one slurmd per compute node, a munged of its own).

Facts this relies on (docs/multinode-on-one-vm.md in the shared notes): `ip netns add` works as
root; `nsenter --net=` enters only the network namespace and keeps /sys (slurmd needs
/sys/fs/cgroup; `ip netns exec` would remount /sys); `unshare -m -u` gives the host its own
hostname and a private mount of /etc/hosts, so nothing outside the test changes.

Every process is started by this module and stopped by its own pid; the namespaces (and with
them the veths and the bridge) are deleted at the end. Tests skip, saying why, when not root or
when ip/nsenter/unshare (or slurm/munge for SlurmCluster) are missing."""
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import testlib

SUBNET = "10.77.0"
# The bridge lives in the first host's namespace (the controller / rendezvous host).
ENTER = r"""#!/bin/sh
# enter NETNS HOSTNAME HOSTS_FILE CMD...: CMD in NETNS with its own hostname and /etc/hosts.
ns=$1; name=$2; hosts=$3; shift 3
exec nsenter --net=/run/netns/"$ns" unshare -m -u --propagation private sh -c \
  'mount --bind "$0" /etc/hosts && hostname "$1" && shift && exec "$@"' "$hosts" "$name" "$@"
"""


def _need_root_tools(tools):
    if os.geteuid() != 0:
        raise unittest.SkipTest("hosts as network namespaces need root (ip netns, unshare)")
    for t in tools:
        if not shutil.which(t) and not os.path.exists(f"/usr/sbin/{t}"):
            raise unittest.SkipTest(f"{t} not installed")


class Hosts:
    """hosts: {name: last octet}; the first one holds the bridge. .addr[name] is its address;
    .cmd(name, argv) is argv run in that host; .popen/.run start it (popen'ed processes are
    stopped at exit)."""

    def __init__(self, hosts):
        self.octets = dict(hosts)
        self.addr = {h: f"{SUBNET}.{o}" for h, o in self.octets.items()}
        self.tag = f"gpr{os.getpid()}"
        self.ns = {h: f"{self.tag}{h}" for h in self.octets}
        self.procs = []
        self.made = []

    def _ip(self, *args):
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)

    def __enter__(self):
        _need_root_tools(("ip", "nsenter", "unshare"))
        self.dir = tempfile.mkdtemp(prefix="gpurun_hosts_")
        self.hosts_file = os.path.join(self.dir, "hosts")
        with open(self.hosts_file, "w") as f:
            f.write("127.0.0.1 localhost\n::1 localhost ip6-localhost\n")
            for h, a in self.addr.items():
                f.write(f"{a} {h}\n")
        self.enter = os.path.join(self.dir, "enter")
        with open(self.enter, "w") as f:
            f.write(ENTER)
        os.chmod(self.enter, 0o755)
        try:
            names = list(self.octets)
            bridge_ns = self.ns[names[0]]
            for h in names:
                self._ip("netns", "add", self.ns[h])
                self.made.append(self.ns[h])
                self._ip("-n", self.ns[h], "link", "set", "lo", "up")
            self._ip("-n", bridge_ns, "link", "add", "br0", "type", "bridge")
            self._ip("-n", bridge_ns, "link", "set", "br0", "up")
            self._ip("-n", bridge_ns, "addr", "add", f"{self.addr[names[0]]}/24", "dev", "br0")
            for i, h in enumerate(names[1:], 1):
                veth = f"v{os.getpid()}_{i}"  # unique even if created in the root namespace
                self._ip("link", "add", veth, "netns", bridge_ns, "type", "veth", "peer",
                         "name", "eth0", "netns", self.ns[h])
                self._ip("-n", bridge_ns, "link", "set", veth, "master", "br0", "up")
                self._ip("-n", self.ns[h], "addr", "add", f"{self.addr[h]}/24", "dev", "eth0")
                self._ip("-n", self.ns[h], "link", "set", "eth0", "up")
        except subprocess.CalledProcessError as e:
            self.__exit__()
            raise unittest.SkipTest(f"cannot build the namespace hosts: {e.cmd}: {e.stderr}")
        return self

    def cmd(self, host, argv):
        return [self.enter, self.ns[host], host, self.hosts_file, *argv]

    def popen(self, host, argv, **kw):
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(self.cmd(host, argv), **kw)
        self.procs.append(p)
        return p

    def run(self, host, argv, timeout=60, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.cmd(host, argv), timeout=timeout, **kw)

    def stop(self, p, grace=10):
        """SIGTERM to p's process group (it leads one: start_new_session), SIGKILL after grace."""
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()

    def __exit__(self, *a):
        for p in reversed(self.procs):
            self.stop(p)
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.made = []
        shutil.rmtree(self.dir, ignore_errors=True)


class SlurmCluster:
    """slurmctld on host "ctl" and a slurmd on each compute node, every one in its own namespace
    host; munged (its own socket) in the root namespace serves them all (a unix socket is a
    file). .sbatch/.srun run on the controller host. Node names: n1, n2, ...; extra hosts (e.g. a
    stranger "x") get an address but no slurmd."""

    def __init__(self, nodes=2, extra=()):
        self.nodes = [f"n{i}" for i in range(1, nodes + 1)]
        spec = {"ctl": 1}
        spec.update({n: 10 + i for i, n in enumerate(self.nodes, 1)})
        spec.update({h: 99 - i for i, h in enumerate(extra)})
        self.hosts = Hosts(spec)

    def __enter__(self):
        for tool in ("munged", "slurmctld", "slurmd", "srun", "sbatch", "sinfo"):
            if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
                raise unittest.SkipTest(f"{tool} not installed (apt install slurm-wlm munge)")
        if os.geteuid() == 0 and not os.path.exists("/etc/munge/munge.key"):
            raise unittest.SkipTest("no /etc/munge/munge.key (run scripts/setup.sh)")
        self.hosts.__enter__()
        t0 = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _start(self):
        d = self.dir = self.hosts.dir
        for sub in ("state", "spool"):
            os.makedirs(f"{d}/{sub}")
        self.conf = f"{d}/slurm.conf"
        a = self.hosts.addr
        node_lines = "".join(
            f"NodeName={n} NodeAddr={a[n]} CPUs={os.cpu_count()} State=UNKNOWN\n"
            for n in self.nodes)
        with open(self.conf, "w") as f:
            f.write(f"""ClusterName=gpurunns{os.getpid()}
SlurmctldHost=ctl({a['ctl']})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={d}/munge.sock
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd-%n.log
{node_lines}PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
""")
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("SLURM_", "PET_", "TORCHELASTIC_", "MASTER_", "GPURUN_"))
                and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
        self.env = dict(keep, SLURM_CONF=self.conf)
        sbin = lambda t: shutil.which(t) or f"/usr/sbin/{t}"
        # munged: the root namespace (its socket is a path every namespace can reach).
        self.munged = subprocess.Popen(
            [sbin("munged"), "-F", "-f", "-S", f"{d}/munge.sock", f"--pid-file={d}/munged.pid",
             f"--seed-file={d}/munged.seed", f"--log-file={d}/munged.log"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.hosts.procs.append(self.munged)
        testlib.wait_until(lambda: os.path.exists(f"{d}/munge.sock") or
                           self.munged.poll() is not None, timeout=10, what="munged's socket")
        self.daemons = [self.munged]
        self.daemons.append(self.hosts.popen("ctl", [sbin("slurmctld"), "-D", "-i"], env=self.env,
                                             stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL))
        for n in self.nodes:
            self.daemons.append(self.hosts.popen(n, [sbin("slurmd"), "-D", "-N", n],
                                                 env=self.env, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL))

        def idle():
            if any(p.poll() is not None for p in self.daemons):
                return True
            r = self.hosts.run("ctl", ["sinfo", "-h", "-N", "-o", "%N %T"], timeout=30,
                               env=self.env)
            states = dict(line.split() for line in r.stdout.splitlines() if line.strip())
            return all(states.get(n) == "idle" for n in self.nodes)

        try:
            testlib.wait_until(idle, timeout=60, interval=0.3, what="every slurmd to be idle")
        except AssertionError as e:
            raise unittest.SkipTest(f"the Slurm cluster did not come up ({e}):\n{self.logs()}")
        dead = [p.args for p in self.daemons if p.poll() is not None]
        if dead:
            raise unittest.SkipTest(f"Slurm daemons could not start ({dead}):\n{self.logs()}")

    def run(self, argv, timeout=300, env=None):
        """argv (sbatch, srun, squeue, ...) on the controller host with the cluster's SLURM_CONF."""
        return self.hosts.run("ctl", argv, timeout=timeout, env=dict(self.env, **(env or {})))

    def logs(self, lines=20):
        out = ""
        names = ["munged.log", "slurmctld.log"] + [f"slurmd-{n}.log" for n in self.nodes]
        for name in names:
            try:
                with open(os.path.join(self.dir, name)) as f:
                    out += f"--- {name}\n" + "".join(f.readlines()[-lines:])
            except OSError:
                pass
        return out

    def __exit__(self, *a):
        self.hosts.__exit__()
