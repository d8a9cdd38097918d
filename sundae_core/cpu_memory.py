"""Keep freed memory for reuse while a megapixel decode or encode runs on the CPU.

PyTorch's CPU allocator hands every tensor to malloc and back. glibc serves blocks over 32 MB
(the cap of its mmap threshold) with a fresh mmap and unmaps them when freed, so each of the
decoder's megapixel activations (128 channels x 1024 x 1024 in bf16: 256 MB) is new memory whose
pages the kernel faults in and zeroes on first touch. That, not arithmetic, was most of the
decode: the f = 32 megapixel decode in bf16 on 2 threads (Intel Xeon with AMX) took 5.2-6.0 s
with glibc's defaults and 2.3 s with mmap off and trimming deferred, against a FLOP floor of
1.5 s.

`reuse_freed_memory()` turns glibc's mmap off (M_MMAP_MAX = 0) and defers trimming the heap
(M_TRIM_THRESHOLD) for the duration of a block, then restores mmap and returns the freed memory
to the system (malloc_trim), so a long-lived process such as ComfyUI keeps its usual footprint
between jobs. Elsewhere (macOS, Windows, musl) it does nothing: those allocators are not glibc's.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading
from typing import Iterator

# glibc's mallopt parameters (malloc.h) and its defaults
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_MMAP_MAX = 65536
DEFAULT_TRIM_THRESHOLD = 128 * 1024
DEFERRED_TRIM_THRESHOLD = 2**31 - 1  # the most mallopt takes: no trimming inside the block

_lock = threading.Lock()
_depth = 0


def _glibc():
    """libc with mallopt and malloc_trim, or None where the allocator is not glibc's."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
        libc.gnu_get_libc_version  # only glibc has it (musl has mallopt as a no-op stub)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


def supported() -> bool:
    return _LIBC is not None


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """Within the block, freed tensors' memory is reused instead of unmapped and faulted in anew.

    Nested and concurrent blocks are counted: the policy is restored when the last one ends.
    """
    global _depth
    if _LIBC is None:
        yield
        return
    with _lock:
        if _depth == 0:
            _LIBC.mallopt(M_MMAP_MAX, 0)
            _LIBC.mallopt(M_TRIM_THRESHOLD, DEFERRED_TRIM_THRESHOLD)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _LIBC.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                _LIBC.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                _LIBC.malloc_trim(0)


def active() -> bool:
    """Whether a reuse_freed_memory block is running (for tests)."""
    return _depth > 0
