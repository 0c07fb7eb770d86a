"""An unmodified PyTorch 1.13 job, as users write it for torchrun: env:// rendezvous (through the
store gpurun hosts: TORCHELASTIC_USE_AGENT_STORE=True), gloo, one all_reduce checked.
Exits 3 on rank FAIL_RANK when FAIL_ON_ATTEMPT equals TORCHELASTIC_RESTART_COUNT (restart test).
With HOLD_DIR set, rank 0 writes HOLD_DIR/ready ("MASTER_ADDR MASTER_PORT") once the process group
is formed and waits (up to 120 s) for HOLD_DIR/go before the all_reduce: a test probes the job's
store meanwhile."""
import os
import sys
import time

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
    hold = os.environ.get("HOLD_DIR")
    if hold and rank == 0:
        with open(os.path.join(hold, "ready.tmp"), "w") as f:
            f.write(f"{os.environ['MASTER_ADDR']} {os.environ['MASTER_PORT']}\n")
        os.rename(os.path.join(hold, "ready.tmp"), os.path.join(hold, "ready"))
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(hold, "go")):
            if time.monotonic() > deadline:
                sys.exit(f"rank 0: no {hold}/go within 120 s")
            time.sleep(0.05)
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
