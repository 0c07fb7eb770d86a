"""A 2-rank PyTorch 1.13 job (gloo, env://, the store gpurun hosts) for stranger_test.py: rank 0
publishes MASTER_PORT in $STRANGER_DIR/port, every rank waits for $STRANGER_DIR/go (while the
test attacks the store as another user), then init_process_group, all_reduce, barrier."""
import os
import sys
import time

import torch
import torch.distributed as dist


def main():
    d = os.environ["STRANGER_DIR"]
    rank = int(os.environ["RANK"])
    if rank == 0:
        tmp = os.path.join(d, "port.tmp")
        with open(tmp, "w") as f:
            f.write(os.environ["MASTER_PORT"])
        os.rename(tmp, os.path.join(d, "port"))
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(d, "go")):
        if time.monotonic() > deadline:
            print(f"rank {rank}: no go file after 120s", file=sys.stderr)
            sys.exit(2)
        time.sleep(0.05)
    dist.init_process_group(backend="gloo", init_method="env://")
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    dist.barrier()
    print(f"job ok rank={rank} sum={t.item():g}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
