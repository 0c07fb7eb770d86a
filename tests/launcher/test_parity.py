"""torchrun parity on one node (issue 14), against the real gpurun binary: the grace periods,
signals inherited as ignored, the terminal handed to the one interactive worker (tmux + pdb),
torchrun's tee header, every rank that failed on its own, the @record traceback once, the FQDN,
--local-addr and the c10d endpoint's port, which PROGRAMs run through Python, and where the exit
code comes from. Comparisons with torchrun 1.13 itself are in test_torchrun_parity.py."""
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest

from testlib import PYTHON, binary, pid_alive, run, start, wait_until

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_launcher import hello, parse_env, read_pids, read_stderr_until  # noqa: E402


def gpurun(*args, timeout=60, env=None):
    return run([binary("gpurun"), *args], timeout=timeout, env=env)


def sig_ign_mask(text):
    """The SigIgn bit mask from a /proc/<pid>/status dump."""
    return int(re.search(r"^SigIgn:\s*([0-9a-f]+)$", text, re.M).group(1), 16)


class Grace(unittest.TestCase):
    def test_a_received_sigterm_gets_torchruns_30s(self):
        with tempfile.TemporaryDirectory() as d:
            proc = start([binary("gpurun"), "--nproc-per-node", "2",
                          *hello("--quiet", "--ignore-term", "--sleep", "120", "--pid-dir", d)])
            try:
                pids = read_pids(d, 2)
                proc.send_signal(signal.SIGTERM)
                read_stderr_until(proc, "received SIGTERM; forwarding it to 2 workers (SIGKILL in "
                                        "30s; send it again to kill now)")
                # Workers that ignore SIGTERM are still there well inside the 30 s.
                time.sleep(1.0)  # not synchronisation: how long they survive is the assertion
                for pid in pids:
                    self.assertTrue(pid_alive(pid), pid)
                proc.send_signal(signal.SIGTERM)  # a second one kills at once
                proc.communicate(timeout=10)
            finally:
                proc.kill()
            self.assertEqual(proc.returncode, 143)
            for pid in pids:
                wait_until(lambda: not pid_alive(pid), timeout=5, what=f"pid {pid} to die")

    def test_help_says_which_grace_applies_when(self):
        p = gpurun("--help")
        self.assertRegex(" ".join(p.stdout.split()),
                         r"default 30s \(torchrun's\) when gpurun received the signal .* 5s when "
                         r"it stops the others after a worker failure")


class InheritedIgnore(unittest.TestCase):
    def test_kill_int_stops_a_background_gpurun(self):
        """`gpurun ... &` in a script starts with SIGINT ignored; kill -INT must still stop it."""
        with tempfile.TemporaryDirectory() as d:
            script = (f'"$0" --nproc-per-node 2 "$1" --quiet --sleep 60 --pid-dir {d} & '
                      'echo "$!"; wait "$!"; echo "rc=$?"')
            sh = subprocess.Popen(["/bin/sh", "-c", script, binary("gpurun"), binary("hello_env")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
            try:
                gpid = int(sh.stdout.readline())
                pids = read_pids(d, 2)
                os.kill(gpid, signal.SIGINT)
                out, err = sh.communicate(timeout=15)
            finally:
                sh.kill()
            self.assertIn("rc=130", out, err)
            self.assertIn("received SIGINT; forwarding it to 2 workers", err)
            for pid in pids:
                wait_until(lambda: not pid_alive(pid), timeout=5, what=f"pid {pid} to die")

    def test_workers_get_default_dispositions(self):
        script = ('"$0" --no-python /bin/sh -c "exec cat /proc/self/status" & wait "$!"')
        p = run(["/bin/sh", "-c", script, binary("gpurun")], timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        ign = sig_ign_mask(p.stdout)
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE,
                    signal.SIGXFSZ):
            self.assertFalse(ign & (1 << (sig - 1)), f"{sig!r} is ignored in the worker")


class Console(unittest.TestCase):
    def test_tee_prefix_is_torchruns_and_role_is_used(self):
        with tempfile.TemporaryDirectory() as d:
            p = gpurun("--nproc-per-node", "2", "--log-dir", d, "-t", "3", "--role", "trainer",
                       "--no-python", "/bin/sh", "-c", "echo out$RANK; echo err$RANK >&2")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(p.stdout.splitlines()), ["[trainer0]:out0", "[trainer1]:out1"])
        self.assertIn("[trainer1]:err1\n", p.stderr)
        # Without -t, gpurun's own prefix stays (a documented difference).
        p = gpurun("--nproc-per-node", "2", "--no-python", "/bin/sh", "-c", "echo out$RANK")
        self.assertEqual(sorted(p.stdout.splitlines()), ["[rank 0] out0", "[rank 1] out1"])

    def test_three_ranks_failing_together_are_all_failures(self):
        """gpurun is stopped while ranks 1-3 exit, so all three have exited when it looks."""
        with tempfile.TemporaryDirectory() as d:
            go = os.path.join(d, "go")
            # "$$$$": gpurun, like torchrun, turns "$$" into "$" in arguments.
            script = (f'echo $$$$ > {d}/$RANK.tmp; mv {d}/$RANK.tmp {d}/$RANK.pid; '
                      f'[ "$RANK" = 0 ] && exec sleep 60; '
                      f'while [ ! -e {go} ]; do sleep 0.01; done; exit 3')
            js = os.path.join(d, "s.json")
            proc = start([binary("gpurun"), "--nproc-per-node", "4", "--summary-json", js,
                          "--no-python", "/bin/sh", "-c", script])
            try:
                pids = read_pids(d, 4)
                os.kill(proc.pid, signal.SIGSTOP)
                open(go, "w").close()

                def zombie(pid):
                    with open(f"/proc/{pid}/stat") as f:
                        return f.read().rsplit(")", 1)[1].split()[0] == "Z"
                wait_until(lambda: all(zombie(p) for p in pids[1:]), timeout=20,
                           what="ranks 1-3 to exit")
                os.kill(proc.pid, signal.SIGCONT)
                out, err = proc.communicate(timeout=30)
            finally:
                os.kill(proc.pid, signal.SIGCONT) if proc.poll() is None else None
                proc.kill()
            self.assertEqual(proc.returncode, 3, err)
            with open(js) as f:
                s = json.load(f)
            self.assertEqual(sorted(f["rank"] for f in s["failures"]), [1, 2, 3])
            self.assertEqual(s["root_cause"]["rank"], s["failures"][0]["rank"])
            self.assertIn("Failures:\n[", err)
            self.assertEqual(len(re.findall(r"  exitcode  : 3 \(pid: \d+\)", err)), 3, err)
            self.assertNotIn("<NO_OTHER_FAILURES>", err)
            self.assertIn("gpurun: stopped the other rank 0 after the failure", err)

    def test_record_traceback_is_printed_once(self):
        if run([PYTHON, "-c", "import torch.distributed.elastic"], timeout=60).returncode:
            self.skipTest("torch not importable")
        with tempfile.TemporaryDirectory() as d:
            script = os.path.join(d, "rec.py")
            with open(script, "w") as f:
                f.write("from torch.distributed.elastic.multiprocessing.errors import record\n"
                        "@record\n"
                        "def main():\n"
                        "    raise RuntimeError('boom-from-worker')\n"
                        "main()\n")
            p = gpurun(script, env={"PYTHON_EXEC": PYTHON}, timeout=120)
        self.assertEqual(p.returncode, 1, p.stderr)
        # The worker printed it itself (one worker keeps the terminal); gpurun shows it once,
        # in torchrun's block, and does not quote the same lines again.
        self.assertEqual(p.stderr.count("RuntimeError: boom-from-worker"), 2, p.stderr)
        self.assertIn("  RuntimeError: boom-from-worker", p.stderr)
        self.assertIn("its traceback (from its error file) is below", p.stderr)
        self.assertNotIn("  | ", p.stderr)

    def test_host_is_the_fqdn(self):
        p = gpurun("/bin/sh", "-c", "exit 5")
        self.assertEqual(p.returncode, 5)
        host = subprocess.run([PYTHON, "-c", "import socket; print(socket.getfqdn())"],
                              capture_output=True, text=True).stdout.strip()
        self.assertIn(f"  host      : {host}\n", p.stderr)


class Flags(unittest.TestCase):
    def test_local_addr_is_master_addr_when_this_node_hosts_the_store(self):
        p = gpurun("--standalone", "--local_addr=127.0.0.2", "--nproc-per-node", "2", *hello())
        self.assertEqual(p.returncode, 0, p.stderr)
        envs = parse_env(p.stdout)
        self.assertEqual({e["MASTER_ADDR"] for e in envs.values()}, {"127.0.0.2"})
        # The store really is there: a client connects to MASTER_ADDR:MASTER_PORT.
        script = ('exec 3<>/dev/tcp/$MASTER_ADDR/$MASTER_PORT 2>/dev/null && '
                  'echo reached $MASTER_ADDR')
        p = gpurun("--standalone", "--local-addr", "127.0.0.2", "--no-python", "/bin/bash", "-c",
                   script)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("reached 127.0.0.2", p.stdout)

    def test_c10d_endpoint_port_is_the_store_port(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        p = gpurun("--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}",
                   "--nproc-per-node", "2", *hello())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual({e["MASTER_PORT"] for e in parse_env(p.stdout).values()}, {str(port)})

    def test_exit_barrier_timeout_is_accepted(self):
        p = gpurun("--exit-barrier-timeout", "20", "--dump-config", "x")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["exit_barrier_timeout_ms"], 20000)


class PythonPrograms(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="gpurun_py_")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def write(self, name, text, mode=0o644):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def test_non_executable_script_without_py_runs_through_python(self):
        path = self.write("train", "#!/usr/bin/env python\nimport sys\n"
                                   "print('py', sys.version_info[0], sys.argv[1:])\n")
        p = gpurun(path, "a", env={"PYTHON_EXEC": PYTHON})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("py 3 ['a']", p.stdout)
        p = gpurun("--dry-run", path)
        self.assertIn(f"python3 -u {path}", p.stdout)

    def test_executable_scripts_and_binaries_run_directly(self):
        path = self.write("tool", "#!/bin/sh\necho direct $0\n", 0o755)
        p = gpurun(path)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(f"direct {path}", p.stdout)
        p = gpurun("--dry-run", binary("hello_env"))
        self.assertNotIn("python3 -u", p.stdout)

    def test_non_executable_binary_gets_the_right_advice(self):
        path = os.path.join(self.dir, "app")
        shutil.copy(binary("hello_env"), path)
        os.chmod(path, 0o644)
        p = gpurun(path)
        self.assertEqual(p.returncode, 127, p.stderr)
        self.assertIn(f"cannot run '{path}': Permission denied; check that it is executable "
                      "(chmod +x)", p.stderr)
        self.assertNotIn("--no-python", p.stderr)
        self.assertIn("gpurun: exit code 127, from gpurun: rank 0 could not be executed", p.stderr)

    def test_missing_interpreter_is_named(self):
        path = self.write("train", "print('x')\n")
        p = gpurun(path, env={"PYTHON_EXEC": "/nonexistent/python9"})
        self.assertEqual(p.returncode, 127, p.stderr)
        self.assertIn("cannot run the Python interpreter '/nonexistent/python9' for", p.stderr)


class ExitCodes(unittest.TestCase):
    def test_origin_of_the_exit_code(self):
        with tempfile.TemporaryDirectory() as d:
            js = os.path.join(d, "s.json")
            p = gpurun("--summary-json", js, "--no-python", "/bin/sh", "-c", "exit 3")
            self.assertEqual(p.returncode, 3)
            self.assertIn("gpurun: exit code 3, from the worker: rank 0's own exit code", p.stderr)
            with open(js) as f:
                s = json.load(f)
            self.assertEqual((s["exit_code"], s["exit_code_origin"]), (3, "worker"))
            # gpurun's own 3: the store port is busy.
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                sock.listen(1)
                p = gpurun("--summary-json", js, "--master-port", str(sock.getsockname()[1]),
                           "/bin/true")
            self.assertEqual(p.returncode, 3)
            with open(js) as f:
                s = json.load(f)
            self.assertEqual((s["exit_code"], s["exit_code_origin"]), (3, "gpurun"))
            self.assertIn("cannot bind store", s["exit_code_reason"])

    def test_exit_code_mode_torchrun(self):
        p = gpurun("--exit-code-mode", "torchrun", "--nproc-per-node", "2", "--no-python",
                   "/bin/sh", "-c", "exit 7")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("gpurun: exit code 1 (--exit-code-mode torchrun; 7 from the worker", p.stderr)
        self.assertEqual(gpurun("--exit-code-mode", "torchrun", "/bin/true").returncode, 0)
        self.assertEqual(gpurun("--exit-code-mode", "torchrun", "--bogus", "x").returncode, 2)


@unittest.skipUnless(shutil.which("tmux"), "tmux not installed")
class Terminal(unittest.TestCase):
    """A real terminal (a tmux pane): the one worker gets it, pdb works, and the terminal is
    handed back with its settings when the worker ends."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="gpurun_tty_")
        self.session = f"gpurun_test_{os.getpid()}_{id(self)}"
        self.sock = os.path.join(self.dir, "tmux.sock")

    def tearDown(self):
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def read(self, name):
        with open(os.path.join(self.dir, name)) as f:
            return f.read().strip()

    def tmux(self, *args):
        return subprocess.run(["tmux", "-S", self.sock, *args], capture_output=True, text=True,
                              timeout=20)

    def pane(self):
        return self.tmux("capture-pane", "-p", "-t", self.session, "-S", "-200").stdout

    def wait_pane(self, text, timeout=60):
        wait_until(lambda: text in self.pane(), timeout=timeout,
                   what=f"{text!r} in the tmux pane")

    def start_pane(self, command):
        script = os.path.join(self.dir, "pane.sh")
        with open(script, "w") as f:
            f.write(command + "\nsleep 600\n")
        r = self.tmux("new-session", "-d", "-s", self.session, "-x", "200", "-y", "50",
                      f"/bin/sh {script}")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_pdb_in_the_only_worker_and_the_terminal_comes_back(self):
        worker = os.path.join(self.dir, "w.py")
        with open(worker, "w") as f:
            f.write("x = 6 * 7\nbreakpoint()\nprint('after-breakpoint', input('name? '))\n")
        probe = os.path.join(self.dir, "fg.py")
        with open(probe, "w") as f:
            f.write("import os\nprint('fg', os.tcgetpgrp(0) == os.getpgrp())\n")
        fg = f"{PYTHON} {probe} > {self.dir}/fg"
        self.start_pane(f"stty -g > {self.dir}/before\n"
                        f"PYTHON_EXEC={PYTHON} {binary('gpurun')} {worker}\n"
                        f"echo rc=$? > {self.dir}/rc\n"
                        f"stty -g > {self.dir}/after\n{fg}\necho > {self.dir}/done\n")
        self.wait_pane("(Pdb)")
        self.tmux("send-keys", "-t", self.session, "p x", "Enter")
        self.wait_pane("42")
        self.tmux("send-keys", "-t", self.session, "c", "Enter")
        self.wait_pane("name?")
        self.tmux("send-keys", "-t", self.session, "bob", "Enter")
        wait_until(lambda: os.path.exists(f"{self.dir}/done"), timeout=60, what="the pane to end")
        self.assertIn("after-breakpoint bob", self.pane())
        self.assertEqual(self.read("rc"), "rc=0", self.pane())
        self.assertEqual(self.read("before"), self.read("after"))  # stty -g: settings restored
        self.assertEqual(self.read("fg"), "fg True")  # the shell's group has the terminal again

    def test_ctrl_z_and_fg_in_an_interactive_shell(self):
        """Ctrl-Z stops the job and gives the prompt back; fg gives the worker the terminal
        again, as with torchrun (whose workers share its process group)."""
        worker = os.path.join(self.dir, "w.py")
        with open(worker, "w") as f:
            f.write("print('got', input('first? '))\n")
        r = self.tmux("new-session", "-d", "-s", self.session, "-x", "200", "-y", "50",
                      "env PS1='PROMPT$ ' bash --norc --noprofile -i")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.wait_pane("PROMPT$")
        self.tmux("send-keys", "-t", self.session,
                  f"PYTHON_EXEC={PYTHON} {binary('gpurun')} {worker}", "Enter")
        self.wait_pane("first?")
        self.tmux("send-keys", "-t", self.session, "C-z")
        self.wait_pane("Stopped")
        wait_until(lambda: self.pane().rstrip().endswith("PROMPT$"), timeout=30,
                   what="the shell's prompt after Ctrl-Z")
        self.tmux("send-keys", "-t", self.session, "fg", "Enter")
        # The worker reads the terminal again (no SIGTTIN): what is typed reaches it.
        self.tmux("send-keys", "-t", self.session, "abc", "Enter")
        self.wait_pane("got abc")
        wait_until(lambda: self.pane().rstrip().endswith("PROMPT$"), timeout=30,
                   what="the shell's prompt after the job")
        self.tmux("send-keys", "-t", self.session, "echo rc=$?", "Enter")
        self.wait_pane("rc=0")

    def test_stdin_rank_among_several_and_dev_null_for_the_others(self):
        worker = os.path.join(self.dir, "w.py")
        with open(worker, "w") as f:
            f.write("import os, sys\n"
                    "if os.environ['RANK'] == '1':\n"
                    "    line = input('rank1? ')\n"
                    # One write (print writes each argument apart, unbuffered): rank 0's line,
                    # which reaches the same terminal through gpurun, may come at any time.
                    "    sys.stdout.write('got ' + line + '\\n')\n"
                    "else:\n"
                    "    print('rank0 stdin', repr(sys.stdin.read()))\n")
        self.start_pane(f"PYTHON_EXEC={PYTHON} {binary('gpurun')} --nproc-per-node 2 "
                        f"--stdin-rank 1 {worker}; echo rc=$? > {self.dir}/rc")
        self.wait_pane("rank1?")  # capture-pane drops trailing spaces
        self.tmux("send-keys", "-t", self.session, "hello", "Enter")
        wait_until(lambda: os.path.exists(f"{self.dir}/rc"), timeout=60, what="gpurun to end")
        pane = self.pane()
        self.assertIn("got hello", pane)
        self.assertIn("[rank 0] rank0 stdin ''", pane)
        self.assertEqual(self.read("rc"), "rc=0", pane)


if __name__ == "__main__":
    unittest.main(verbosity=2)
