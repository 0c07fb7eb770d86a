"""An unmodified PyTorch 1.13 job, as users write it for torchrun: env:// rendezvous (through the
store gpurun hosts: TORCHELASTIC_USE_AGENT_STORE=True), gloo, one all_reduce checked.
Exits 3 on rank FAIL_RANK when FAIL_ON_ATTEMPT equals TORCHELASTIC_RESTART_COUNT (restart test)."""
import os
import sys

import torch
import torch.distributed as dist


def main():
    rank = int(os.environ["RANK"])
    fail_rank = os.environ.get("FAIL_RANK")
    if fail_rank is not None and int(fail_rank) == rank and \
            os.environ.get("FAIL_ON_ATTEMPT") == os.environ["TORCHELASTIC_RESTART_COUNT"]:
        print(f"rank {rank}: failing on purpose", file=sys.stderr)
        sys.exit(3)
    dist.init_process_group(backend="gloo", init_method="env://")
    world = dist.get_world_size()
    assert dist.get_rank() == rank, (dist.get_rank(), rank)
    assert world == int(os.environ["WORLD_SIZE"])
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    expected = world * (world + 1) / 2
    assert t.item() == expected, (t.item(), expected)
    dist.barrier()
    print(f"allreduce ok rank={rank} world={world} sum={t.item():g} "
          f"attempt={os.environ['TORCHELASTIC_RESTART_COUNT']}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
