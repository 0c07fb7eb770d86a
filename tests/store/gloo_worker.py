"""One rank of interop (c): init_process_group("gloo", init_method="env://") in torchelastic
agent-store mode (the store is gpurun's), then collectives whose results are checked by the test.
Prints one JSON line with what it computed."""
import datetime
import json
import os

import torch
import torch.distributed as dist


def main():
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method="env://", timeout=datetime.timedelta(seconds=60))
    assert dist.get_rank() == rank and dist.get_world_size() == world
    out = {"rank": rank, "world": world}

    t = torch.arange(4, dtype=torch.float64) + rank
    dist.all_reduce(t)  # SUM
    out["all_reduce"] = t.tolist()

    dist.barrier()

    gathered = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(gathered, torch.tensor([rank * 10], dtype=torch.int64))
    out["all_gather"] = [int(x.item()) for x in gathered]

    b = torch.tensor([1234.5 if rank == 0 else 0.0])
    dist.broadcast(b, src=0)
    out["broadcast"] = b.item()

    pair = dist.new_group([0, 1])  # every rank calls new_group, only 0 and 1 are members
    if rank in (0, 1):
        x = torch.ones(3) * (rank + 1)
        dist.all_reduce(x, group=pair)
        out["pair_all_reduce"] = x.tolist()
    dist.barrier()

    dist.destroy_process_group()
    out["destroyed"] = not dist.is_initialized()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
