"""`cmake --install` the build tree into a temp prefix, then configure, build and run a tiny
outside project that does find_package(gpurun) and links gpurun::worker: alone (1 rank), and as 2
ranks under the installed gpurun in a mount namespace where CUDA's libraries are hidden (an empty
directory mounted over every directory that holds libcudart or libnccl)."""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import testlib

HERE = os.path.dirname(os.path.abspath(__file__))
CUDA_LIBS = ("libcudart", "libnccl")
RANK_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK",
             "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "GPURUN_GPU")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in RANK_VARS}
    env.update(extra)
    return env


def cuda_libraries_to_hide():
    """(directories, files) that hold libcudart/libnccl on this machine: the CUDA toolkit
    (/usr/local/cuda* and what it links to) and LD_LIBRARY_PATH entries as whole directories; a
    copy elsewhere (e.g. a distribution's libnccl in /usr/lib) as single files."""
    dirs = set()
    for d in ["/usr/local/cuda"] + glob.glob("/usr/local/cuda-*") + [
            d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]:
        if os.path.isdir(d) and any(glob.glob(os.path.join(d, "**", lib + "*"), recursive=True)
                                    for lib in CUDA_LIBS):
            dirs.add(os.path.realpath(d))
    dirs = {d for d in dirs if not any(d != o and d.startswith(o + "/") for o in dirs)}
    files = set()
    try:
        cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True,
                               timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        cache = ""
    for line in cache.splitlines():
        m = re.search(r"=>\s*(\S+)$", line)
        if m and any(lib in line for lib in CUDA_LIBS):
            real = os.path.realpath(m.group(1))
            if not any(real.startswith(d + "/") for d in dirs):
                files.add(real)
    return sorted(dirs), sorted(files)


def mount_namespace_available():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


class InstalledConsumer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        build = testlib.BUILD_DIR
        if not build or not os.path.exists(os.path.join(build, "CMakeCache.txt")):
            raise unittest.SkipTest("GPURUN_BUILD_DIR is not a configured build tree")
        cls.tmp = tempfile.mkdtemp(prefix="gpurun_consumer_")
        try:
            cls.prefix = os.path.join(cls.tmp, "prefix")
            testlib.run(["cmake", "--install", build, "--prefix", cls.prefix], timeout=120,
                        check=True)
            cbuild = os.path.join(cls.tmp, "build")
            gen = ["-G", "Ninja"] if shutil.which("ninja") else []
            testlib.run(["cmake", "-S", os.path.join(HERE, "consumer"), "-B", cbuild, *gen,
                         f"-DCMAKE_PREFIX_PATH={cls.prefix}", "-DCMAKE_BUILD_TYPE=Release"],
                        timeout=120, check=True)
            testlib.run(["cmake", "--build", cbuild, "-j", "2"], timeout=240, check=True)
            cls.consumer = os.path.join(cbuild, "consumer")
        except BaseException:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_find_package_gpurun_worker(self):
        self.assertTrue(os.path.exists(os.path.join(self.prefix, "include/gpurun/worker/worker.h")))
        proc = testlib.run([self.consumer], timeout=60, env=clean_env(), check=True)
        self.assertIn("consumer ok: rank 0/1 backend gloo device cpu grads[2]=3 tag=from-rank-0 "
                      "ranks=1 cuda libraries mapped: none", proc.stdout)

    def test_package_config_names_no_cuda_path(self):
        cmake_dir = os.path.join(self.prefix, "lib", "cmake", "gpurun")
        files = glob.glob(os.path.join(cmake_dir, "*.cmake"))
        self.assertTrue(files, f"no package config in {cmake_dir}")
        for f in files:
            with open(f) as fh:  # what CMake executes (comments may explain the module)
                text = "\n".join(line for line in fh if not line.lstrip().startswith("#"))
            self.assertNotIn("/usr/local/cuda", text, f)
            self.assertNotRegex(text, r"CUDA::|libcudart|libnccl|gpurun::nccl", f)

    def test_consumer_needs_no_cuda_library(self):
        needed = testlib.run(["readelf", "-d", self.consumer], timeout=30, check=True).stdout
        libs = re.findall(r"\(NEEDED\).*\[(.+)\]", needed)
        self.assertTrue(libs, needed)
        for lib in libs:
            self.assertFalse(lib.startswith(CUDA_LIBS + ("libcuda",)), f"consumer needs {lib}")
        # GPU ranks find the CUDA module through the RUNPATH find_package(gpurun) gave it.
        module_dir = os.path.join(self.prefix, "lib", "gpurun")
        if os.path.exists(os.path.join(module_dir, "libgpurun_worker_cuda.so")):
            runpath = re.findall(r"\((?:RUNPATH|RPATH)\).*\[(.*)\]", needed)
            self.assertTrue(runpath and module_dir in runpath[0].split(":"), needed)

    def test_two_ranks_under_gpurun_with_cuda_hidden(self):
        if not mount_namespace_available():
            self.skipTest("needs root and `unshare -m` (a private mount namespace)")
        gpurun = os.path.join(self.prefix, "bin", "gpurun")
        if not os.path.exists(gpurun):
            self.skipTest("gpurun was not installed (launcher not built)")
        hidden_dirs, hidden_files = cuda_libraries_to_hide()
        hidden = hidden_dirs + hidden_files
        empty = os.path.join(self.tmp, "empty")
        os.makedirs(empty, exist_ok=True)
        empty_file = os.path.join(self.tmp, "empty.so")
        open(empty_file, "w").close()
        module = os.path.join(self.prefix, "lib", "gpurun", "libgpurun_worker_cuda.so")
        # In the namespace: hide, prove the CUDA libraries are gone (none of the cache's paths
        # exists, and the SDK's own CUDA module, when installed, no longer resolves them), then
        # run 2 ranks. CUDA_VISIBLE_DEVICES= keeps a GPU machine's ranks on the CPU as well.
        script = ["set -e"]
        script += [f"mount --bind '{empty}' '{d}'" for d in hidden_dirs]
        script += [f"mount --bind '{empty_file}' '{f}'" for f in hidden_files]
        script += [
            "if ldconfig -p | grep -E 'libcudart|libnccl' | sed 's/.*=> //' "
            "| xargs -r cat 2>/dev/null | head -c 4 | grep -q ELF; then "
            "echo 'CUDA still visible'; exit 90; fi",
            f"if [ -e '{module}' ]; then ldd '{module}' | grep -E 'libcudart.*not found' "
            "|| { echo 'module still resolves libcudart'; exit 91; }; fi",
            f"ldd '{self.consumer}' | grep -E 'libcudart|libnccl' && exit 92",
            f"exec '{gpurun}' --nproc-per-node 2 '{self.consumer}'",
        ]
        proc = testlib.run(["unshare", "-m", "sh", "-c", "\n".join(script)], timeout=120,
                           env=clean_env(CUDA_VISIBLE_DEVICES=""))
        out = proc.stdout + proc.stderr
        self.assertEqual(proc.returncode, 0, f"hidden: {hidden}\n{out}")
        for r in (0, 1):
            self.assertRegex(out, rf"consumer ok: rank {r}/2 backend gloo device cpu "
                                  r"grads\[2\]=4\.5 tag=from-rank-0 ranks=2 "
                                  r"cuda libraries mapped: none")


if __name__ == "__main__":
    unittest.main()
