#!/usr/bin/env python3
"""srun start-up to the first collective, on a real two-node Slurm cluster on this machine (the
namespace hosts of tests/support/nshosts.py: slurmctld on "ctl", slurmd on n1 and n2, each its
own network + UTS namespace): the SDK's zero-setup path (`srun ./app`, nothing set: rank 0 hosts
the store on the first node at a port derived from the job id, the others connect with retry)
next to the hand-started way (`gpurun-store` started on n1 first, then `srun ./app` with
MASTER_ADDR/MASTER_PORT). The app is tests/worker's collectives_worker --allreduce: init, one
all_reduce of 1000 doubles checked on every rank, exit. Each figure is srun's wall time (srun
started -> every rank has done its all_reduce and exited); the hand-started store's own start-up
is shown apart. Needs root, slurm-wlm and munge; prints a table and one JSON line.

    python3 bench/rdzv/srun_bench.py --build build [--runs 5] [--ntasks-per-node 2]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "support"))

import nshosts  # noqa: E402


def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return time.monotonic() - t0, r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="the build directory [build]")
    ap.add_argument("--runs", type=int, default=5, help="runs of each way [5]")
    ap.add_argument("--ntasks-per-node", type=int, default=2)
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    worker = os.path.join(build, "tests", "worker", "collectives_worker")
    store = os.path.join(build, "rendezvous", "gpurun-store")
    for p in (worker, store):
        if not os.path.exists(p):
            sys.exit(f"srun_bench.py: error: {p} is missing; build first (scripts/build.sh)")
    n = 2 * a.ntasks_per_node
    want = f"allreduce ok: world {n} sum {n * (n + 1) // 2}"
    rows = {"zero_setup": [], "hand_started_store": [], "store_start": []}
    with nshosts.SlurmCluster(nodes=2) as c:
        srun = ["srun", "-N", "2", f"--ntasks-per-node={a.ntasks_per_node}", "-O", "--time=2"]

        def step(env):
            r = c.run(srun + [worker, "--allreduce"], timeout=120,
                      env=dict(env, GPURUN_COMM_TIMEOUT="60s"))
            if r.returncode != 0 or want not in r.stdout + r.stderr:
                sys.exit(f"srun_bench.py: error: the step failed ({r.returncode}):\n"
                         f"{r.stdout}{r.stderr}\n{c.logs()}")

        for i in range(a.runs):  # alternate, so both ways see the same load
            rows["zero_setup"].append(timed(lambda: step({}))[0])
            t0 = time.monotonic()
            p = c.hosts.popen("n1", [store, "--host", "0.0.0.0", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            m = re.search(r":(\d+)\s*$", p.stdout.readline())
            rows["store_start"].append(time.monotonic() - t0)
            if not m:
                sys.exit(f"srun_bench.py: error: gpurun-store printed no port: {p.stderr.read()}")
            rows["hand_started_store"].append(
                timed(lambda: step({"MASTER_ADDR": "n1", "MASTER_PORT": m.group(1)}))[0])
            c.hosts.stop(p)
        cluster_start = c.start_seconds

    def stat(xs):
        xs = sorted(xs)
        return {"median_ms": round(1000 * statistics.median(xs), 1),
                "min_ms": round(1000 * xs[0], 1), "max_ms": round(1000 * xs[-1], 1)}

    result = {"bench": "srun_start_to_first_collective", "nodes": 2,
              "ranks": n, "runs": a.runs, "cluster_start_s": round(cluster_start, 2),
              **{k: stat(v) for k, v in rows.items()}}
    print(f"srun -N 2 --ntasks-per-node={a.ntasks_per_node} collectives_worker --allreduce "
          f"({n} ranks on 2 namespace nodes, {a.runs} runs each; cluster up in "
          f"{cluster_start:.2f} s)")
    print(f"{'way':<44} {'median':>9} {'min':>9} {'max':>9}")
    for k, label in (("zero_setup", "srun ./app, nothing set (rank 0 hosts)"),
                     ("hand_started_store", "srun ./app + MASTER_ADDR/PORT of gpurun-store"),
                     ("store_start", "  starting that gpurun-store (apart)")):
        s = result[k]
        print(f"{label:<44} {s['median_ms']:>7.1f}ms {s['min_ms']:>7.1f}ms {s['max_ms']:>7.1f}ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
