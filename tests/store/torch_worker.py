"""Child job for the interop tests (forked by storelib.fork_worker, or run as a script): a PyTorch 1.13 TCPStore client doing one job, printing one
JSON line with its result. Usage: torch_worker.py HOST PORT JOB ARGS...

  wait KEY TIMEOUT_S   blocks in store.wait([KEY]) and prints {"woken": true, "elapsed": s}
  get KEY TIMEOUT_S    blocks in store.get(KEY) and prints {"value_hex": ...}
  set KEY VALUE        store.set(KEY, VALUE)
  adds KEY N           N times store.add(KEY, 1); prints {"results": [...]}
"""
import datetime
import json
import sys
import time

import torch.distributed as dist


def run(host, port, job, args):
    store = dist.TCPStore(host, port, None, False, datetime.timedelta(seconds=60))
    out = {"job": job}
    if job == "wait":
        t0 = time.monotonic()
        store.wait([args[0]], datetime.timedelta(seconds=float(args[1])))
        out.update(woken=True, elapsed=time.monotonic() - t0)
    elif job == "get":
        store.set_timeout(datetime.timedelta(seconds=float(args[1])))
        out.update(value_hex=store.get(args[0]).hex())
    elif job == "set":
        store.set(args[0], args[1])
        store.num_keys()  # a round trip, so the SET has been applied before we exit
    elif job == "adds":
        out.update(results=[store.add(args[0], 1) for _ in range(int(args[1]))])
    else:
        raise SystemExit(f"unknown job {job}")
    return out


def main():
    print(json.dumps(run(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:])), flush=True)


if __name__ == "__main__":
    main()
