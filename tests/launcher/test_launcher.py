"""End-to-end tests of the real gpurun binary: environment, exit codes, signals, orphans,
restarts, logs, output handling, summaries. Workers are hello_env (examples/hello_env) and
/bin/sh snippets. Every wait has a deadline; nothing sleeps to synchronise."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from testlib import binary, pid_alive, run, start, wait_until

LINE = re.compile(r"^(?:\[(?:\S+ )?rank (\d+)\] )?hello_env\[(\d+)\] (\w+)=(.*)$")


def gpurun(*args, timeout=60, env=None, **kw):
    return run([binary("gpurun"), *args], timeout=timeout, env=env, **kw)


def hello(*args):
    return [binary("hello_env"), *args]


def parse_env(stdout):
    per_rank = {}
    for line in stdout.splitlines():
        m = LINE.match(line)
        if m:
            tag, rank, key, value = m.groups()
            if tag is not None:
                assert tag == rank, f"line tagged [rank {tag}] came from rank {rank}: {line}"
            per_rank.setdefault(int(rank), {})[key] = value
    return per_rank


def read_pids(pid_dir, n, timeout=10.0):
    paths = [os.path.join(pid_dir, f"{r}.pid") for r in range(n)]
    wait_until(lambda: all(os.path.exists(p) for p in paths), timeout=timeout,
               what=f"{n} workers to write their pid files in {pid_dir}")
    pids = []
    for p in paths:
        with open(p) as f:
            pids.append(int(f.read()))
    return pids


def read_stderr_until(proc, text, timeout=10.0):
    """Reads proc.stderr (a pipe) until `text` appears; returns what was read."""
    import select
    buf = ""
    deadline = time.monotonic() + timeout
    fd = proc.stderr.fileno()
    while text not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout}s waiting for {text!r} on stderr; "
                                 f"got {buf!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 65536).decode()
            if not chunk:
                raise AssertionError(f"stderr closed before {text!r}; got {buf!r}")
            buf += chunk
    return buf


class Env(unittest.TestCase):
    def test_env_for_1_to_8_workers(self):
        for n in range(1, 9):
            with self.subTest(nproc=n):
                p = gpurun("--nproc-per-node", str(n), *hello())
                self.assertEqual(p.returncode, 0, p.stderr)
                envs = parse_env(p.stdout)
                self.assertEqual(sorted(envs), list(range(n)), p.stdout)
                ports = {e["MASTER_PORT"] for e in envs.values()}
                self.assertEqual(len(ports), 1)
                self.assertGreater(int(ports.pop()), 0)
                for r, e in envs.items():
                    self.assertEqual(e["RANK"], str(r))
                    self.assertEqual(e["LOCAL_RANK"], str(r))
                    self.assertEqual(e["ROLE_RANK"], str(r))
                    self.assertEqual(e["WORLD_SIZE"], str(n))
                    self.assertEqual(e["LOCAL_WORLD_SIZE"], str(n))
                    self.assertEqual(e["ROLE_WORLD_SIZE"], str(n))
                    self.assertEqual(e["GROUP_RANK"], "0")
                    self.assertEqual(e["GROUP_WORLD_SIZE"], "1")
                    self.assertEqual(e["ROLE_NAME"], "default")
                    self.assertEqual(e["MASTER_ADDR"], "127.0.0.1")
                    self.assertEqual(e["TORCHELASTIC_RESTART_COUNT"], "0")
                    self.assertEqual(e["TORCHELASTIC_MAX_RESTARTS"], "0")
                    self.assertEqual(e["TORCHELASTIC_USE_AGENT_STORE"], "True")
                    self.assertEqual(e["TORCHELASTIC_RUN_ID"], "none")
                    self.assertRegex(e["TORCHELASTIC_ERROR_FILE"],
                                     rf"/none_[a-z0-9_]{{8}}/attempt_0/{r}/error\.json$")
                    if n > 1:
                        self.assertEqual(e["OMP_NUM_THREADS"], "1")
                if n > 1:
                    self.assertIn("Setting OMP_NUM_THREADS environment variable", p.stderr)

    def test_workers_get_the_users_fd_limit_back(self):
        # gpurun raises its own soft RLIMIT_NOFILE for the store it hosts; the workers get the
        # soft limit gpurun was started with, as under torchrun.
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard <= 1000:
            self.skipTest(f"hard RLIMIT_NOFILE {hard}: nothing to raise")

        def lower():
            resource.setrlimit(resource.RLIMIT_NOFILE, (1000, hard))
        p = gpurun("--nproc-per-node", "2", "--no-python", "sh", "-c",
                   "echo soft=$(ulimit -Sn)", preexec_fn=lower)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(re.findall(r"soft=(\d+)", p.stdout), ["1000", "1000"], p.stdout)

    def test_startup_is_fast_and_leaves_no_temp_dir(self):
        tmp = tempfile.mkdtemp()
        t0 = time.monotonic()
        p = gpurun("--nproc-per-node", "2", "/bin/true", env={"TMPDIR": tmp})
        elapsed = time.monotonic() - t0
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(os.listdir(tmp), [])  # no -r/-t, no error.json: nothing left behind
        self.assertLess(elapsed, 5.0)  # generous: a loaded CI box; the bench measures it
        os.rmdir(tmp)


class VisibleDevices(unittest.TestCase):
    def test_an_entry_cuda_stops_at_is_warned_about(self):
        # As CUDA, the list ends at the first invalid entry: "1,zz,0" drops GPU 0, and "zz" leaves
        # both workers on CPU. Neither may pass silently.
        for cvd in ("1,zz,0", "zz"):
            with self.subTest(CUDA_VISIBLE_DEVICES=cvd):
                p = gpurun("--nproc-per-node", "2", "--master-port", "0", *hello("--quiet"),
                           env={"CUDA_VISIBLE_DEVICES": cvd, "GPURUN_FAKE_GPUS": "2"})
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn(f"gpurun: warning: CUDA_VISIBLE_DEVICES={cvd}: entry 'zz' is not an "
                              "index, GPU- or MIG- UUID, so it and the entries after it are "
                              "ignored (as the CUDA runtime does)", p.stderr)


class Failures(unittest.TestCase):
    def test_exit_code_is_passed_through(self):
        t0 = time.monotonic()
        p = gpurun("--nproc-per-node", "3", *hello("--quiet", "--rank", "1", "--exit", "3",
                                                    "--sleep", "30"))
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertLess(time.monotonic() - t0, 10)  # the sleepers were stopped, not waited for
        self.assertIn("gpurun: error: rank 1 (pid ", p.stderr)
        self.assertIn("exited with code 3; see its last output below", p.stderr)
        self.assertIn("  | hello_env[1]: exiting with code 3", p.stderr)
        self.assertIn("Root Cause (first observed failure):", p.stderr)
        self.assertIn("  rank      : 1 (local_rank: 1)", p.stderr)
        self.assertIn("  exitcode  : 3 (pid: ", p.stderr)

    def test_sigsegv_is_139_and_named(self):
        p = gpurun("--nproc-per-node", "2", *hello("--quiet", "--rank", "0", "--signal", "SEGV",
                                                    "--sleep", "30"))
        self.assertEqual(p.returncode, 139, p.stderr)
        self.assertRegex(p.stderr, r"rank 0 \(pid \d+\) killed by SIGSEGV \(exit 139\)")
        self.assertRegex(p.stderr, r"traceback : Signal 11 \(SIGSEGV\) received by PID \d+")
        self.assertIn("  exitcode  : -11 (pid: ", p.stderr)

    def test_single_worker_failure(self):
        p = gpurun("/bin/sh", "-c", "exit 7")
        self.assertEqual(p.returncode, 7, p.stderr)
        self.assertIn("rank 0 (pid", p.stderr)

    def test_hung_workers_are_killed_after_the_grace_period(self):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.monotonic()
            p = gpurun("--nproc-per-node", "3", "--shutdown-timeout", "1s",
                       *hello("--quiet", "--ignore-term", "--rank", "0", "--exit", "1",
                              "--wait-peers", "--sleep", "60", "--pid-dir", d))
            elapsed = time.monotonic() - t0
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertGreater(elapsed, 0.95)  # the full 1 s grace was given
            self.assertLess(elapsed, 6.0)     # not the 60 s sleep, not torchrun's 30 s
            self.assertRegex(p.stderr, r"ranks 1,2 still running 1s after SIGTERM; sending SIGKILL")
            for pid in read_pids(d, 3):
                self.assertFalse(pid_alive(pid), pid)

    def test_exec_failure_is_one_clear_line(self):
        p = gpurun("--nproc-per-node", "2", "/nonexistent/gpurun-test-prog", "x")
        self.assertEqual(p.returncode, 127, p.stderr)
        self.assertIn("gpurun: error: cannot run '/nonexistent/gpurun-test-prog': No such file or "
                      "directory; check the path", p.stderr)
        self.assertNotIn("Root Cause", p.stderr)

    def test_timeout_names_the_ranks_still_running(self):
        t0 = time.monotonic()
        p = gpurun("--nproc-per-node", "3", "--timeout", "0.5s", "/bin/sh", "-c",
                   '[ "$RANK" = 0 ] || exec sleep 60')
        self.assertEqual(p.returncode, 124, p.stderr)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertIn("ranks 1,2 still running", p.stderr)

    def test_error_file_traceback_and_corrupt_file(self):
        script = ('printf \'{"message": {"message": "RuntimeError: boom", "extraInfo": '
                  '{"py_callstack": "Traceback (most recent call last):\\\\n  File \\\\"x.py\\\\"'
                  '\\\\nRuntimeError: boom", "timestamp": "1732384523"}}}\' > '
                  '"$TORCHELASTIC_ERROR_FILE"; exit 2')
        p = gpurun("/bin/sh", "-c", script)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertRegex(p.stderr, r"error_file: \S+/attempt_0/0/error\.json")
        self.assertIn("traceback : Traceback (most recent call last):\n    File \"x.py\"\n"
                      "  RuntimeError: boom", p.stderr)
        p = gpurun("/bin/sh", "-c", 'echo "{not json" > "$TORCHELASTIC_ERROR_FILE"; exit 5')
        self.assertEqual(p.returncode, 5, p.stderr)
        self.assertIn("is unreadable: not valid JSON", p.stderr)

    def test_summary_json(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "summary.json")
            p = gpurun("--nproc-per-node", "2", "--summary-json", path,
                       *hello("--quiet", "--rank", "1", "--signal", "ABRT", "--sleep", "30"))
            self.assertEqual(p.returncode, 128 + signal.SIGABRT, p.stderr)
            s = json.load(open(path))
            self.assertEqual(s["outcome"], "worker_failed")
            self.assertEqual(s["exit_code"], 134)
            self.assertEqual(s["root_cause"]["rank"], 1)
            self.assertEqual(s["root_cause"]["signal"], "SIGABRT")
            self.assertEqual(s["root_cause"]["exitcode"], -6)
            self.assertIn("hello_env[1]: raising Aborted", s["root_cause"]["last_lines"])
            self.assertEqual(len(s["workers"]), 2)
            self.assertTrue(s["workers"][0]["stopped_by_gpurun"])
            # Success writes a summary too.
            p = gpurun("--summary-json", path, "/bin/true")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(json.load(open(path))["outcome"], "succeeded")


class Signals(unittest.TestCase):
    def test_ctrl_c_is_forwarded_and_exit_is_130(self):
        with tempfile.TemporaryDirectory() as d:
            proc = start([binary("gpurun"), "--nproc-per-node", "2",
                          *hello("--quiet", "--sleep", "60", "--pid-dir", d)])
            try:
                pids = read_pids(d, 2)
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=10)
            finally:
                proc.kill()
            self.assertEqual(proc.returncode, 130, err)
            self.assertIn("received SIGINT; forwarding it to 2 workers", err)
            for pid in pids:
                self.assertFalse(pid_alive(pid))

    def test_second_ctrl_c_kills_at_once(self):
        with tempfile.TemporaryDirectory() as d:
            proc = start([binary("gpurun"), "--nproc-per-node", "2", "--shutdown-timeout", "60s",
                          *hello("--quiet", "--ignore-term", "--sleep", "60", "--pid-dir", d)])
            try:
                pids = read_pids(d, 2)
                proc.send_signal(signal.SIGINT)
                # The second Ctrl-C only after gpurun handled the first (signals coalesce).
                read_stderr_until(proc, "received SIGINT; forwarding it to 2 workers")
                proc.send_signal(signal.SIGINT)
                t0 = time.monotonic()
                out, err = proc.communicate(timeout=10)
                self.assertLess(time.monotonic() - t0, 5)
            finally:
                proc.kill()
            self.assertEqual(proc.returncode, 130, err)
            for pid in pids:
                wait_until(lambda: not pid_alive(pid), timeout=5, what=f"pid {pid} to die")

    def test_kill_9_leaves_no_worker_behind(self):
        with tempfile.TemporaryDirectory() as d:
            proc = start([binary("gpurun"), "--nproc-per-node", "3",
                          *hello("--quiet", "--ignore-term", "--sleep", "60", "--pid-dir", d)])
            try:
                pids = read_pids(d, 3)
                proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=10)
            finally:
                proc.kill()
            for pid in pids:
                wait_until(lambda: not pid_alive(pid), timeout=5,
                           what=f"worker pid {pid} to die after kill -9 of gpurun")

    def test_sigusr1_is_forwarded(self):
        with tempfile.TemporaryDirectory() as d:
            # (gpurun, like torchrun, turns "$$" into "$" in arguments: no $$ here.)
            script = ("trap 'echo got-usr1; exit 0' USR1; echo 1 > " + d +
                      "/$RANK.pid.tmp; mv " + d + "/$RANK.pid.tmp " + d +
                      "/$RANK.pid; while :; do sleep 0.05; done")
            proc = start([binary("gpurun"), "--nproc-per-node", "2", "/bin/sh", "-c", script])
            try:
                read_pids(d, 2)
                proc.send_signal(signal.SIGUSR1)
                out, err = proc.communicate(timeout=10)
            finally:
                proc.kill()
            self.assertEqual(proc.returncode, 0, err)
            self.assertIn("[rank 0] got-usr1", out)
            self.assertIn("[rank 1] got-usr1", out)


class Store(unittest.TestCase):
    def test_busy_master_port_names_the_holder(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            p = gpurun("--nproc-per-node", "2", "--master-port", str(port), *hello())
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertIn(f"gpurun: error: cannot bind store on 127.0.0.1:{port} (address already in "
                      f"use by pid {os.getpid()}", p.stderr)
        self.assertIn("pass --master-port 0 (auto) or pick a free port", p.stderr)
        self.assertNotIn("hello_env[", p.stdout)  # nothing was started

    def test_given_free_port_is_used(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        p = gpurun("--nproc-per-node", "2", "--master-port", str(port), *hello())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual({e["MASTER_PORT"] for e in parse_env(p.stdout).values()}, {str(port)})


class Restarts(unittest.TestCase):
    def test_failure_on_attempt_0_then_success(self):
        with tempfile.TemporaryDirectory() as d:
            p = gpurun("--nproc-per-node", "2", "--max-restarts", "1", "--log-dir", d,
                       "--rdzv-id", "job", *hello("--rank", "1", "--attempt", "0", "--exit", "1"))
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertRegex(p.stderr, r"rank 1 \(pid \d+\) exited with code 1; restarting all 2 "
                                       r"workers \(restart 1 of 1\)")
            envs = parse_env(p.stdout)
            counts = sorted(v for line in p.stdout.splitlines()
                            for v in re.findall(r"TORCHELASTIC_RESTART_COUNT=(\d+)", line))
            # Attempt 1: both ranks ran with the count incremented (attempt 0's rank 0 may have
            # been stopped before it printed anything).
            self.assertEqual(counts.count("1"), 2, p.stdout)
            self.assertEqual(envs[1]["TORCHELASTIC_RESTART_COUNT"], "1")
            (run_dir,) = os.listdir(d)
            self.assertEqual(sorted(os.listdir(os.path.join(d, run_dir))),
                             ["attempt_0", "attempt_1"])

    def test_no_restarts_left(self):
        p = gpurun("--nproc-per-node", "2",
                   *hello("--quiet", "--rank", "1", "--attempt", "0", "--exit", "4"))
        self.assertEqual(p.returncode, 4, p.stderr)


class Logs(unittest.TestCase):
    def test_log_dir_layout_redirect_and_tee(self):
        with tempfile.TemporaryDirectory() as d:
            p = gpurun("--nproc-per-node", "2", "--log-dir", d, "--rdzv-id", "myjob", "-r", "1",
                       "-t", "2", *hello("--quiet", "--lines", "3", "--stderr-lines", "2"))
            self.assertEqual(p.returncode, 0, p.stderr)
            (run_dir,) = os.listdir(d)
            self.assertRegex(run_dir, r"^myjob_[a-z0-9_]{8}$")
            attempt = os.path.join(d, run_dir, "attempt_0")
            self.assertEqual(sorted(os.listdir(attempt)), ["0", "1"])
            for r in range(2):
                files = sorted(os.listdir(os.path.join(attempt, str(r))))
                self.assertEqual(files, ["stderr.log", "stdout.log"])
                out = open(os.path.join(attempt, str(r), "stdout.log")).read()
                self.assertEqual(out, "".join(f"hello_env[{r}] line {i}\n" for i in range(3)))
                err = open(os.path.join(attempt, str(r), "stderr.log")).read()
                self.assertEqual(err, "".join(f"hello_env[{r}] err {i}\n" for i in range(2)))
                # tee'd: torchrun's "[<role><local_rank>]:" header
                self.assertIn(f"[default{r}]:hello_env[{r}] err 1\n", p.stderr)
            self.assertNotIn("line 0", p.stdout)  # -r 1: stdout only in the files

    def test_duplicate_filters_copy_matching_teed_lines_into_one_file(self):
        with tempfile.TemporaryDirectory() as d:
            p = gpurun("--nproc-per-node", "2", "--log-dir", d, "-t", "3",
                       "--duplicate-stdout-filters", "line 1,line 2",
                       "--duplicate-stderr-filters", "err 0",
                       *hello("--quiet", "--lines", "3", "--stderr-lines", "2"))
            self.assertEqual(p.returncode, 0, p.stderr)
            (run_dir,) = os.listdir(d)
            attempt = os.path.join(d, run_dir, "attempt_0")
            self.assertEqual(sorted(os.listdir(attempt)),
                             ["0", "1", "filtered_stderr.log", "filtered_stdout.log"])
            out = open(os.path.join(attempt, "filtered_stdout.log")).read().splitlines()
            # Each rank's lines in order; the ranks' relative order depends on timing.
            self.assertEqual(sorted(out), sorted(f"[default{r}]:hello_env[{r}] line {i}"
                                                 for r in (0, 1) for i in (1, 2)))
            self.assertEqual([l for l in out if l.startswith("[default0]")],
                             ["[default0]:hello_env[0] line 1", "[default0]:hello_env[0] line 2"])
            err = open(os.path.join(attempt, "filtered_stderr.log")).read().splitlines()
            self.assertEqual(sorted(err), [f"[default{r}]:hello_env[{r}] err 0" for r in (0, 1)])
            # The per-rank files and the console are unchanged.
            self.assertIn("[default1]:hello_env[1] line 0", p.stdout)
        p = gpurun("--nproc-per-node", "2", "--duplicate-stdout-filters", "x", *hello("--quiet"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("no rank's stdout is tee'd to a log file", p.stderr)

    def test_event_log_handler_console_prints_worker_events(self):
        p = gpurun("--nproc-per-node", "2", "--event-log-handler", "console", "--rdzv-id", "ev1",
                   "--no-python", "/bin/sh", "-c", 'exit $((RANK * 5))')
        self.assertEqual(p.returncode, 5, p.stderr)
        events = [json.loads(l) for l in p.stderr.splitlines() if l.startswith('{"metadata"')]
        by_rank = {e["metadata"]["global_rank"]: e for e in events}
        self.assertEqual(sorted(by_rank), [0, 1])
        self.assertEqual(by_rank[1]["name"], "torchelastic.worker.status.FAILED")
        self.assertEqual(by_rank[1]["metadata"]["run_id"], "ev1")
        self.assertIn(by_rank[0]["name"], ("torchelastic.worker.status.TERMINATED",))
        p = gpurun("--nproc-per-node", "2", *hello("--quiet"))
        self.assertNotIn("torchelastic.worker.status", p.stderr)  # default: null

    def test_redirected_stderr_is_quoted_in_the_summary(self):
        with tempfile.TemporaryDirectory() as d:
            p = gpurun("--log-dir", d, "-r", "3", *hello("--quiet", "--stderr-lines", "3",
                                                         "--exit", "9"))
            self.assertEqual(p.returncode, 9, p.stderr)
            self.assertRegex(p.stderr, r"last \d+ lines of rank 0's \S+/attempt_0/0/stderr\.log")
            self.assertIn("  | hello_env[0] err 2", p.stderr)

    def test_local_ranks_filter(self):
        p = gpurun("--nproc-per-node", "3", "--local-ranks-filter", "1", *hello())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(parse_env(p.stdout)), [1])

    def test_lines_never_interleave(self):
        n, lines = 4, 3000
        p = gpurun("--nproc-per-node", str(n), *hello("--quiet", "--lines", str(lines)))
        self.assertEqual(p.returncode, 0, p.stderr)
        seen = {r: 0 for r in range(n)}
        for line in p.stdout.splitlines():
            m = re.fullmatch(r"\[rank (\d)\] hello_env\[(\d)\] line (\d+)", line)
            self.assertIsNotNone(m, f"mangled line: {line!r}")
            tag, rank, i = m.groups()
            self.assertEqual(tag, rank)
            self.assertEqual(int(i), seen[int(rank)])  # in order, none lost
            seen[int(rank)] += 1
        self.assertEqual(seen, {r: lines for r in range(n)})

    def test_partial_last_line_is_flushed(self):
        p = gpurun("--nproc-per-node", "2", "/bin/sh", "-c", "printf 'no newline'")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("[rank 0] no newline\n", p.stdout)
        self.assertIn("[rank 1] no newline\n", p.stdout)

    def test_no_tag_output_and_prefix_template(self):
        p = gpurun("--nproc-per-node", "2", "--no-tag-output", "/bin/sh", "-c", "echo hi")
        self.assertEqual(p.stdout, "hi\nhi\n")
        p = gpurun("--nproc-per-node", "2", "/bin/sh", "-c", "echo hi",
                   env={"TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": "[${role_name}${local_rank}]:"})
        self.assertEqual(sorted(p.stdout.splitlines()), ["[default0]:hi", "[default1]:hi"])


class MultiNode(unittest.TestCase):
    def test_two_static_nodes_on_localhost(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        common = ["--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", str(port),
                  "--rdzv-timeout", "30s", "--rdzv-id", "mn"]
        procs = []
        # Node 1 first: it waits (connect retries) until node 0 hosts the store.
        for node, nproc in ((1, 3), (0, 2)):
            procs.append(start([binary("gpurun"), *common, "--node-rank", str(node),
                                "--nproc-per-node", str(nproc), *hello()]))
        results = {}
        try:
            for (node, nproc), proc in zip(((1, 3), (0, 2)), procs):
                out, err = proc.communicate(timeout=60)
                results[node] = (proc.returncode, out, err, nproc)
        finally:
            for proc in procs:
                proc.kill()
        all_ranks = {}
        # Node 0 hosts the store on a loopback address: it says so at once (issue 16).
        self.assertIn("--master-addr 127.0.0.1 is a loopback address", results[0][2])
        for node, (rc, out, err, nproc) in results.items():
            self.assertEqual(rc, 0, err)
            envs = parse_env(out)
            for r, e in envs.items():
                self.assertEqual(e["WORLD_SIZE"], "5")
                self.assertEqual(e["GROUP_RANK"], str(node))
                self.assertEqual(e["GROUP_WORLD_SIZE"], "2")
                self.assertEqual(e["LOCAL_WORLD_SIZE"], str(nproc))
                self.assertEqual(e["MASTER_PORT"], str(port))
                all_ranks[r] = (node, int(e["LOCAL_RANK"]))
        # torchrun's assignment: node g owns [sum(lws[0..g-1]), +lws).
        self.assertEqual(all_ranks, {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (1, 1), 4: (1, 2)})

    def test_missing_node_is_named_after_the_rendezvous_timeout(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        p = gpurun("--nnodes", "2", "--node-rank", "0", "--master-port", str(port),
                   "--rdzv-timeout", "1s", *hello())
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertIn("waiting for role_info from node rank 1", p.stderr)
        self.assertIn("the store is on a loopback address", p.stderr)



class NumaBinding(unittest.TestCase):
    """--numa-binding on a made-up two-node machine (GPURUN_SYSFS_ROOT, tests only) with two
    fake GPUs, one per node: each worker really runs on its node's CPU (its kernel affinity)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="gpurun_numa_")
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise unittest.SkipTest("needs 2 CPUs")
        cls.cpus = cpus[:2]

        def put(rel, text):
            path = os.path.join(cls.tmp, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text + "\n")

        put("devices/system/cpu/online", ",".join(map(str, cls.cpus)))
        for node, cpu in enumerate(cls.cpus):
            put(f"devices/system/node/node{node}/cpulist", str(cpu))
            put(f"devices/system/cpu/cpu{cpu}/topology/physical_package_id", str(node))
        cls.env = {"GPURUN_FAKE_GPUS": "2", "GPURUN_FAKE_GPU_NUMA_NODES": "0,1",
                   "GPURUN_SYSFS_ROOT": cls.tmp}

    @classmethod
    def tearDownClass(cls):
        import shutil
        shutil.rmtree(cls.tmp, ignore_errors=True)

    AFFINITY = ["--no-python", "/bin/sh", "-c",
                "echo affinity=$(grep Cpus_allowed_list /proc/self/status | cut -f2)"]

    def affinity(self, p):
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return dict(re.findall(r"\[rank (\d+)\] affinity=(\S+)", p.stdout))

    def test_each_worker_runs_on_its_gpus_node(self):
        p = gpurun("--nproc-per-node", "2", "--numa-binding", "node", *self.AFFINITY,
                   env=self.env)
        self.assertEqual(self.affinity(p), {"0": str(self.cpus[0]), "1": str(self.cpus[1])})

    def test_without_the_flag_workers_keep_every_cpu(self):
        p = gpurun("--nproc-per-node", "2", *self.AFFINITY, env=self.env)
        got = self.affinity(p)
        self.assertEqual(len(got), 2)
        self.assertNotEqual(got["0"], str(self.cpus[0]))

    def test_cpu_workers_are_left_alone_and_named(self):
        p = gpurun("--nproc-per-node", "3", "--numa-binding", "socket", *self.AFFINITY,
                   env=self.env)
        got = self.affinity(p)
        self.assertEqual(got["0"], str(self.cpus[0]))
        self.assertEqual(got["1"], str(self.cpus[1]))
        self.assertNotIn(got["2"], (str(self.cpus[0]), str(self.cpus[1])))
        self.assertIn("rank 2 has no GPU with a known NUMA node; not bound", p.stderr)

    def test_dry_run_shows_the_cpus(self):
        p = gpurun("--dry-run", "--nproc-per-node", "2", "--numa-binding", "exclusive",
                   *self.AFFINITY, env=self.env)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(f"cpus:    {self.cpus[1]} (--numa-binding exclusive)", p.stdout)

    def test_exclusive_with_too_few_cores_and_bad_values_are_errors(self):
        p = gpurun("--nproc-per-node", "2", "--numa-binding", "exclusive", *self.AFFINITY,
                   env={**self.env, "GPURUN_FAKE_GPU_NUMA_NODES": "0,0"})
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("gpurun: error: --numa-binding exclusive: NUMA node 0 has 1 physical core "
                      "for 2 workers", p.stderr)
        p = gpurun("--numa-binding", "numa", *self.AFFINITY)
        self.assertEqual(p.returncode, 2)
        self.assertIn("node, socket, exclusive or core-complex", p.stderr)

if __name__ == "__main__":
    unittest.main(verbosity=2)
