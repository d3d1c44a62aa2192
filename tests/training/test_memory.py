"""core/training/memory.py: a fixed mmap threshold returns freed tensors' pages to the OS."""

from __future__ import annotations

import subprocess
import sys

import pytest

from prefalign.core.training.loop import TrainConfig
from prefalign.core.training.memory import set_malloc_mmap_threshold

# glibc raises its mmap threshold when an mmapped block is freed; the next block of that size then
# comes from the heap and stays resident after it is freed. Prints the RSS (MB) still held after the free.
PROBE = """
import sys, numpy as np, psutil
from prefalign.core.training.memory import release_free_heap, set_malloc_mmap_threshold
if sys.argv[1] == "fixed":
    assert set_malloc_mmap_threshold(65536)
trim = sys.argv[1] == "trim"
rss = lambda: psutil.Process().memory_info().rss / 2**20
a = np.ones(2 << 20); del a          # 16 MB (under glibc's 32 MB cap): mmapped, freed (glibc raises its threshold here)
base = rss()
b = np.ones(2 << 20)                 # 16 MB again: now from the heap (default) or mmapped (fixed)
c = np.ones(1 << 19)                 # 4 MB after it, pinning the heap top
del b                                # a 16 MB hole below c: resident unless it was mmapped
if trim:
    from prefalign.core.training.memory import release_free_heap
    assert release_free_heap()       # malloc_trim(0) gives the hole's pages back
print(rss() - base)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_fixed_threshold_releases_freed_blocks():
    held = {}
    for mode in ("default", "fixed", "trim"):
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
        held[mode] = float(out.stdout.strip().splitlines()[-1])
    assert held["default"] > 15  # glibc kept the freed 16 MB block resident (plus c's 4 MB)
    assert held["fixed"] < 8  # only c's 4 MB
    assert held["trim"] < 8  # the hole's pages went back to the OS


def test_bad_threshold_names_the_key():
    with pytest.raises(ValueError, match="cpu_malloc_mmap_threshold"):
        set_malloc_mmap_threshold(-1)
    with pytest.raises(ValueError, match="training.cpu_malloc_mmap_threshold"):
        TrainConfig.from_dict({"cpu_malloc_mmap_threshold": 2**30})
