"""`cmake --install` the build tree into a temp prefix, then configure, build and run a tiny
outside project that does find_package(gpurun) and links gpurun::worker."""
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import testlib

HERE = os.path.dirname(os.path.abspath(__file__))


class InstalledConsumer(unittest.TestCase):
    def test_find_package_gpurun_worker(self):
        build = testlib.BUILD_DIR
        if not build or not os.path.exists(os.path.join(build, "CMakeCache.txt")):
            raise unittest.SkipTest("GPURUN_BUILD_DIR is not a configured build tree")
        tmp = tempfile.mkdtemp(prefix="gpurun_consumer_")
        try:
            prefix = os.path.join(tmp, "prefix")
            testlib.run(["cmake", "--install", build, "--prefix", prefix], timeout=120, check=True)
            self.assertTrue(os.path.exists(os.path.join(prefix, "include/gpurun/worker/worker.h")))
            cbuild = os.path.join(tmp, "build")
            gen = ["-G", "Ninja"] if shutil.which("ninja") else []
            testlib.run(["cmake", "-S", os.path.join(HERE, "consumer"), "-B", cbuild, *gen,
                         f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Release"],
                        timeout=120, check=True)
            testlib.run(["cmake", "--build", cbuild, "-j", "2"], timeout=240, check=True)
            env = {k: v for k, v in os.environ.items()
                   if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")}
            proc = testlib.run([os.path.join(cbuild, "consumer")], timeout=60, env=env, check=True)
            self.assertIn("consumer ok: rank 0/1 backend gloo device cpu grads[2]=3", proc.stdout)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
