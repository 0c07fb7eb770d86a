"""Worker for the elastic tests: prints its torchrun environment on one line, then (with GO_FILE)
stays running until the test creates that file (bounded: exits 9 after 120 s); WORK_S: then works
(sleeps) that many seconds more."""
import os
import sys
import time

KEYS = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "LOCAL_WORLD_SIZE",
        "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "TORCHELASTIC_RESTART_COUNT",
        "TORCHELASTIC_RUN_ID", "TORCHELASTIC_MAX_RESTARTS", "MASTER_ADDR", "MASTER_PORT"]
print("ENV " + " ".join(f"{k}={os.environ.get(k)}" for k in KEYS), flush=True)
go = os.environ.get("GO_FILE")
if go:
    deadline = time.monotonic() + 120
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            sys.exit(9)
        time.sleep(0.02)
work = float(os.environ.get("WORK_S", "0"))
if work > 0:
    time.sleep(work)
