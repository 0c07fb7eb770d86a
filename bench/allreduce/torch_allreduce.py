"""torch.distributed gloo all_reduce timing, the reference side of allreduce_bench.

usage: torch_allreduce.py --port P --sizes 4096,16384,... --iters 500,500,...
Spawns 2 processes (world size 2, gloo, env:// on 127.0.0.1:P), float32 sum, same warm-up and
iteration counts as the SDK side; rank 0 prints one JSON line per size:
{"bytes": N, "iters": K, "seconds": <mean seconds per all_reduce, max over ranks>}.
"""
import argparse
import json
import os
import sys
import time


def worker(rank, world, port, sizes, iters, warmup):
    import torch
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    for nbytes, n in zip(sizes, iters):
        t = torch.ones(nbytes // 4, dtype=torch.float32)
        for _ in range(warmup):
            dist.all_reduce(t)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(n):
            dist.all_reduce(t)
        elapsed = (time.perf_counter() - start) / n
        r = torch.tensor([elapsed], dtype=torch.float64)
        dist.all_reduce(r, op=dist.ReduceOp.MAX)
        if rank == 0:
            print(json.dumps({"bytes": nbytes, "iters": n, "seconds": r.item()}), flush=True)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sizes", required=True)
    ap.add_argument("--iters", required=True)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--world", type=int, default=2)
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    iters = [int(x) for x in a.iters.split(",")]
    import torch.multiprocessing as mp
    mp.start_processes(worker, args=(a.world, a.port, sizes, iters, a.warmup), nprocs=a.world,
                       start_method="fork")


if __name__ == "__main__":
    sys.exit(main())
