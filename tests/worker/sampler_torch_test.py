"""DistributedSampler indices from the SDK equal torch 1.13's, for many (n, replicas, rank,
shuffle, seed, epoch, drop_last) combinations (n not divisible, n < replicas, n large)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sdklib
import testlib


class SamplerMatchesTorch(unittest.TestCase):
    def test_indices_equal_torch(self):
        import torch
        from torch.utils.data import DistributedSampler

        tool = sdklib.sdk_binary("gpurun_sampler_dump")
        combos = []
        for n in (0, 1, 3, 10, 17, 100, 1000, 100000):
            for replicas in (1, 3, 4, 8):
                for drop_last in (0, 1):
                    for shuffle in (0, 1):
                        for seed, epoch in ((0, 0), (42, 3), (2**32 + 5, 1)):
                            if not shuffle and (seed, epoch) != (0, 0):
                                continue
                            if n == 100000 and (replicas, seed) not in ((4, 0), (3, 42)):
                                continue
                            for rank in sorted({0, replicas - 1, replicas // 2}):
                                combos.append((n, replicas, rank, shuffle, seed, epoch, drop_last))

        class DS:  # a sized dataset; DistributedSampler only calls len()
            def __init__(self, n):
                self.n = n

            def __len__(self):
                return self.n

        expected = []
        for (n, replicas, rank, shuffle, seed, epoch, drop_last) in combos:
            s = DistributedSampler(DS(n), num_replicas=replicas, rank=rank, shuffle=bool(shuffle),
                                   seed=seed, drop_last=bool(drop_last))
            s.set_epoch(epoch)
            expected.append(list(s))

        stdin = "".join(" ".join(map(str, c)) + "\n" for c in combos)
        proc = testlib.run([tool], input=stdin, timeout=60, check=True)
        lines = proc.stdout.split("\n")
        self.assertGreaterEqual(len(lines), len(combos))
        mismatches = []
        for combo, want, line in zip(combos, expected, lines):
            got = [int(x) for x in line.split()]
            if got != want:
                mismatches.append(f"{combo}: got {got[:10]}... want {want[:10]}...")
        self.assertEqual(mismatches, [], f"{len(mismatches)} of {len(combos)} combos differ")
        print(f"{len(combos)} sampler combinations identical to torch {torch.__version__}")

    def test_randperm_large_seed_and_size(self):
        import torch
        tool = sdklib.sdk_binary("gpurun_sampler_dump")
        # n=100000, shuffle, one replica: the raw permutation.
        for seed in (0, 7, 2**40 + 3):
            want = torch.randperm(100000, generator=torch.Generator().manual_seed(seed)).tolist()
            proc = testlib.run([tool], input=f"100000 1 0 1 {seed} 0 0\n", timeout=30, check=True)
            got = [int(x) for x in proc.stdout.split()]
            self.assertEqual(got, want, f"seed {seed}")


if __name__ == "__main__":
    unittest.main()
