"""The PyTorch side of scaling_bench: the training example's job written the way users write it
today (torch.nn MLP, DistributedDataParallel on gloo, DistributedSampler, gradient accumulation
with no_sync), run under torchrun (or gpurun, which runs it unmodified).

usage: torchrun --nproc_per_node=N torch_train.py --samples 32000 --test-samples 2000 \
           --hidden 256,256 --epochs 8 --global-batch-size 2048 --batch-size 128
Same job as examples/train's defaults: 16 features, 8 Gaussian classes (sigma 2), SGD with momentum 0.9,
lr 0.05 on a cosine schedule over the optimizer steps, the mean gradient of the global batch, an
evaluation of the test set after every epoch, one thread per rank. Rank 0 prints one JSON line: {"world_size", "train_seconds" (first epoch start
to last epoch end, max over ranks), "samples_per_s", "test_accuracy"}.
"""
import argparse
import json
import os
import time


def sampler_len(n, world):
    """The indices one rank gets from DistributedSampler (padded to a multiple of world)."""
    return range(-(-n // world))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=32000)
    ap.add_argument("--test-samples", type=int, default=2000)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--noise", type=float, default=2.0)  # within-class sigma, as examples/train
    ap.add_argument("--hidden", default="256,256")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--global-batch-size", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.utils.data import DistributedSampler

    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dist.init_process_group("gloo")  # env:// from the launcher

    per_step = a.batch_size * world
    if a.global_batch_size % per_step:
        raise SystemExit(f"torch_train.py: --global-batch-size {a.global_batch_size} is not a "
                         f"multiple of batch size x world size = {per_step}")
    accum = a.global_batch_size // per_step

    # Every rank builds the same data set (as users do: a seeded generator).
    g = torch.Generator().manual_seed(a.seed)
    centres = 3.0 * torch.randn(a.classes, a.features, generator=g) / (a.features / 8 + 1) ** 0.5

    def blobs(n):
        y = torch.randint(0, a.classes, (n,), generator=g)
        return centres[y] + a.noise * torch.randn(n, a.features, generator=g), y

    x_train, y_train = blobs(a.samples)
    x_test, y_test = blobs(a.test_samples)

    torch.manual_seed(a.seed)
    widths = [a.features] + [int(h) for h in a.hidden.split(",")] + [a.classes]
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i + 2 < len(widths):
            layers.append(torch.nn.ReLU())
    model = DDP(torch.nn.Sequential(*layers))
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9)
    steps_per_epoch = -(-len(sampler_len(a.samples, world)) // (a.batch_size * accum))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps_per_epoch * a.epochs)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    sampler = DistributedSampler(range(a.samples), num_replicas=world, rank=rank, shuffle=True,
                                 seed=a.seed)

    dist.barrier()
    start = time.perf_counter()
    correct = total = 0
    for epoch in range(a.epochs):
        sampler.set_epoch(epoch)
        idx = torch.tensor(list(sampler))
        model.train()
        micro = [idx[i:i + a.batch_size] for i in range(0, len(idx), a.batch_size)]
        for s in range(0, len(micro), accum):
            group = micro[s:s + accum]
            opt.zero_grad(set_to_none=True)
            for m, b in enumerate(group):
                last = m + 1 == len(group)
                ctx = model.no_sync() if not last else torch.enable_grad()
                with ctx:
                    out = model(x_train[b])
                    (loss_fn(out, y_train[b]) / (len(b) * len(group))).backward()
            opt.step()
            sched.step()
        # Evaluation: rank r scores test rows r, r + W, ...; the counts are summed.
        model.eval()
        with torch.no_grad():
            pred = model.module(x_test[rank::world]).argmax(1)
            counts = torch.tensor([(pred == y_test[rank::world]).sum().item(), len(pred)],
                                  dtype=torch.float64)
        dist.all_reduce(counts)
        correct, total = counts.tolist()
    elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    if rank == 0:
        seconds = elapsed.item()
        print(json.dumps({"world_size": world, "train_seconds": round(seconds, 4),
                          "samples_per_s": round(a.samples * a.epochs / seconds, 1),
                          "test_accuracy": round(correct / total, 4)}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
