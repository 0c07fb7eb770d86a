#!/usr/bin/env python3
"""Speedup and efficiency of training runs, from the metrics files examples/train writes
(--metrics FILE: one JSON line per epoch with world_size, epoch_time_s and samples_per_s).

    python3 examples/slurm/speedup.py metrics-101.jsonl metrics-102.jsonl metrics-103.jsonl

The run with the fewest ranks is the baseline; the first epoch of each run (start-up, data
generation) is left out when a run has more than one. Prints the seed recipe's SPEEDUP ANALYSIS
block, and the same as JSON with --json."""
import argparse
import json
import statistics
import sys


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    if not rows:
        sys.exit(f"speedup.py: error: {path} has no epochs; was the run given --metrics {path}?")
    steady = rows[1:] if len(rows) > 1 else rows
    return {"file": path, "ranks": rows[-1]["world_size"], "epochs": len(rows),
            "epoch_time_s": statistics.mean(r["epoch_time_s"] for r in steady),
            "samples_per_s": statistics.mean(r["samples_per_s"] for r in steady),
            "accuracy": rows[-1]["accuracy"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("metrics", nargs="+", help="metrics files, one per run")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args()
    runs = sorted((load(p) for p in args.metrics), key=lambda r: r["ranks"])
    base = runs[0]
    for r in runs:
        r["speedup"] = base["epoch_time_s"] / r["epoch_time_s"]
        r["efficiency"] = r["speedup"] * base["ranks"] / r["ranks"]
    if args.json:
        print(json.dumps(runs))
        return
    print("=" * 62)
    print("SPEEDUP ANALYSIS")
    print("=" * 62)
    print(f"{'ranks':>5} {'epoch time':>11} {'samples/s':>11} {'speedup':>8} {'efficiency':>10} "
          f"{'accuracy':>9}")
    for r in runs:
        print(f"{r['ranks']:>5} {r['epoch_time_s']:>10.3f}s {r['samples_per_s']:>11.0f} "
              f"{r['speedup']:>7.2f}x {100 * r['efficiency']:>9.1f}% {100 * r['accuracy']:>8.2f}%")
    print("=" * 62)


if __name__ == "__main__":
    main()
