"""CPU memory: keep glibc from growing the heap under batches of changing shapes.

Measured (docs/performance.md, benchmarks/reward_vs_trl.py at 4 x 256, max length 192, 20 steps):
peak RSS 2,109 MB with glibc's defaults vs 1,438 MB with a fixed 64 KiB mmap threshold, while
TRL's run peaked at 1,448 MB. The cause: glibc raises its mmap threshold dynamically each time a
large mmapped block is freed (up to 32 MiB), after which activation tensors come from the brk heap.
Length-grouped batches change shape every step, so each step's tensors no longer fit the holes the
last step's left, and the heap (RSS) grows past the live peak. A fixed threshold keeps every large
tensor mmapped and returns its pages to the OS when it is freed.

That costs a page fault per page of every large tensor: measured at 4 x 256, max length 512, bf16,
prompt-shared, 20 steps, our reward run went from 5,144 to 2,964 real tokens/s (peak RSS 3,497 ->
1,972 MB). ``release_free_heap`` after each optimizer step (``training.cpu_malloc_trim``) is the
cheaper trade: 4,263 tokens/s at 2,502 MB (TRL on the same batches: 3,483 tokens/s, 2,963 MB).
"""

from __future__ import annotations

import ctypes
import functools
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>


@functools.lru_cache(maxsize=1)
def _libc():  # loaded once: release_free_heap runs every step
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def set_malloc_mmap_threshold(threshold_bytes: int) -> bool:
    """Fix glibc's mmap threshold (``mallopt(M_MMAP_THRESHOLD, ...)``) for this process.

    Args:
        threshold_bytes: allocations of at least this many bytes are mmapped (and unmapped on free).
    Returns:
        True if glibc accepted it; False off Linux/glibc (nothing changed).
    Raises:
        ValueError: if ``threshold_bytes`` is outside glibc's range [0, 32 MiB].
    """
    if not 0 <= threshold_bytes <= 32 * 2**20:
        raise ValueError(f"training.cpu_malloc_mmap_threshold={threshold_bytes} must be between 0 and 33554432 bytes (32 MiB)")
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(_libc().mallopt(M_MMAP_THRESHOLD, int(threshold_bytes)))
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False


def release_free_heap() -> bool:
    """Give the free pages of glibc's heap back to the OS (``malloc_trim(0)``), e.g. once per step.

    Freed activation tensors leave holes in the heap that stay resident; between steps nearly all
    of the heap is free, so this returns it, and the next step faults it in again (a cost of about
    17% of a CPU step at 4 x 256 in bf16, against 42% for a 64 KiB mmap threshold; module doc).

    Returns:
        True if memory was released; False off Linux/glibc or when nothing could be released.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(_libc().malloc_trim(0))
    except (OSError, AttributeError):  # musl or another libc without malloc_trim
        return False
