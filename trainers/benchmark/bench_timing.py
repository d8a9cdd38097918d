"""The benchmark's timing and memory harness: synchronised median timings after a warm-up, peak
memory of a case, and the machine's measured matmul peak every utilisation figure is relative to.

Timing: a case is warmed up, then the median of several synchronised runs is reported (with the
minimum). Memory: the peak resident set size (RSS) above the level just before the case, polled
every 2 ms from /proc/self/statm by a thread while the model is built and the warm-up run (the same
code path as the timed runs) executes; the poller is stopped before the timed runs so it cannot
slow them. Freed memory is returned to the OS (malloc_trim) between cases; allocator caching can
still hide a little reuse, so read the numbers as +-5 %. On CUDA the peak is
torch.cuda.max_memory_allocated.

Where the time goes: `outside_share` profiles one call and returns the share of its self CPU time
spent outside the kernels that do a model's FLOPs (matmuls, convolutions, attention), i.e. the
norms, activations, adds, copies and the sampler: the work compiling can fuse.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import os
import resource
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from sundae_core.models import inference_dtype

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    median_s: float
    min_s: float
    runs: list[float]


def time_runs(fn: Callable[[], object], device: torch.device, repeats: int) -> Timing:
    """Median of `repeats` synchronised runs of fn (warm it up before calling this)."""
    runs = []
    for _ in range(max(1, repeats)):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        runs.append(time.perf_counter() - start)
    return Timing(statistics.median(runs), min(runs), [round(r, 6) for r in runs])


def warm_up(fn: Callable[[], object], device: torch.device) -> float:
    """Run fn once (first-call costs: allocation, kernel selection); returns its seconds."""
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def repeats_for(warm_s: float, repeats: int, budget_s: float) -> int:
    """Fewer repeats (at least 3) for cases whose single run would blow the per-case budget."""
    if warm_s * repeats <= budget_s:
        return repeats
    return max(3, min(repeats, int(budget_s / max(warm_s, 1e-9))))


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: fall back to the high-water mark
        return max_rss_bytes()


def max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def release_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class MemoryProbe:
    """Peak memory above the level at entry: polled RSS on CPU, allocator peak on CUDA."""

    def __init__(self, device: torch.device, interval_s: float = 0.002):
        self.device, self.interval = device, interval_s
        self.peak_bytes = 0

    def __enter__(self) -> "MemoryProbe":
        release_memory()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        self.base = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self.base
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.peak_bytes = self.peak - self.base

    @property
    def mb(self) -> float:
        return round(self.peak_bytes / 2**20, 1)


def build(make: Callable[[], torch.nn.Module], device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """An inference model built once: made with a fixed seed, cast, eval mode, no gradients."""
    torch.manual_seed(0)
    return make().to(device=device, dtype=dtype).eval().requires_grad_(False)


@dataclass
class Bench:
    device: torch.device
    repeats: int
    long_repeats: int
    budget_s: float
    peak: dict[str, float] = dataclasses.field(default_factory=dict)  # dtype -> FLOP/s
    log: Callable[[str], None] = print
    # the dtype the project computes in on this device (compute_dtype): the inference and training
    # cases run in it and their MFU is over its peak
    compute: str = "bf16"

    @property
    def compute_dtype(self) -> torch.dtype:
        return DTYPES[self.compute]

    def fraction(self, flop_per_s: float, dtype: str | None = None) -> float | None:
        peak = self.peak.get(dtype or self.compute)
        return round(flop_per_s / peak, 4) if peak else None


def matmul_timing(n: int, dtype: torch.dtype, device: torch.device, runs: int) -> Timing:
    """`runs` synchronised n x n x n matmuls (2 n^3 FLOPs each) into a preallocated output after
    one warm-up: the peak every utilisation figure is taken against."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    fn = lambda: torch.mm(a, b, out=c)
    fn()
    return time_runs(fn, device, runs)


def measure_peak(bench: Bench, sizes: tuple[int, ...], dtypes: tuple[str, ...] = tuple(DTYPES)
                 ) -> tuple[dict[str, float], list[dict]]:
    """The matmul peak at torch's current thread count: per dtype name, the best over `sizes` of
    the median FLOP/s of bench.repeats runs; and one row per dtype and size. Sets nothing: the
    caller decides which figures a Bench divides by."""
    peaks, rows = {}, []
    for name in dtypes:
        for n in sizes:
            t = matmul_timing(n, DTYPES[name], bench.device, bench.repeats)
            rate = 2 * n ** 3 / t.median_s
            rows.append({"dtype": name, "n": n, "threads": torch.get_num_threads(), "median_s": t.median_s,
                         "min_s": t.min_s, "runs": t.runs, "flop_per_s": rate})
            peaks[name] = max(peaks.get(name, 0.0), rate)
        bench.log(f"peak {name} at {torch.get_num_threads()} threads: {peaks[name] / 1e9:.0f} GFLOP/s")
    return peaks, rows


def compute_dtype(device: torch.device) -> str:
    """The dtype name the project computes in on `device`: what loaded models are cast to
    (models.inference_dtype) and what the trainers autocast to; fp32 on a CPU without bf16 kernels."""
    return "bf16" if inference_dtype(device) == torch.bfloat16 else "fp32"


def training_precision(dtype: str) -> str:
    """How a training row names its precision: bf16 autocast over fp32 weights, or plain fp32."""
    return "bf16-autocast" if dtype == "bf16" else "fp32"


def matmul_peak(threads: int, n: int = 4096, runs: int = 12, device: torch.device = torch.device("cpu"),
                dtype: str = "bf16") -> float:
    """Best FLOP/s of an n x n x n `dtype` matmul over `runs` runs on `device`, at `threads` threads
    (sets torch's thread count; on a GPU it only drives the launches); sundae-bench-train's peak."""
    torch.set_num_threads(threads)
    return 2 * n ** 3 / matmul_timing(n, DTYPES[dtype], device, runs).min_s


# Kernels that do a model's FLOPs, by name without the namespace ("aten::", "mkldnn::", "mkl::"),
# matched as prefixes so their backward kernels count too: matmuls (and linear layers, eager and
# the oneDNN-prepacked ones of a frozen compiled graph), convolutions, fused attention. Parents
# such as linear / conv2d / matmul are listed too: with self time they add only their own
# overhead, never their children's. Everything else (norms, activations, adds, copies, indexing,
# the sampler, the fused kernels of a compiled graph, an optimiser) is "outside".
FLOP_KERNELS = ("mm", "addmm", "_addmm_activation", "bmm", "baddbmm", "matmul", "linear", "_linear_pointwise",
                "_mkl_linear", "mkldnn_linear", "qlinear", "conv1d", "conv2d", "conv3d", "conv_", "convolution",
                "_convolution", "mkldnn_convolution", "_conv_depthwise", "slow_conv", "qconv",
                "scaled_dot_product", "_scaled_dot_product", "_flash_attention", "_efficient_attention")


def is_flop_kernel(key: str) -> bool:
    """Whether a profiler key ("aten::addmm", "mkldnn::_linear_pointwise") names a FLOP kernel."""
    return key.rsplit("::", 1)[-1].startswith(FLOP_KERNELS)


def outside_share(fn: Callable[[], object]) -> float:
    """Share in [0, 1] of one call's profiled self CPU time spent outside FLOP_KERNELS. Self time
    (not inclusive time): a parent such as aten::linear must not count its addmm again. fn runs
    once unprofiled first, so a first-call cost (a compile, a recompile for new inputs, allocator
    growth) never lands in the profile."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    inside = sum(e.self_cpu_time_total for e in events if is_flop_kernel(e.key))
    return min(1.0, max(0.0, 1 - inside / total)) if total > 0 else 0.0


def gpu_profile(fn: Callable[[], object], device: torch.device, top: int = 12) -> dict:
    """Where one call's time goes on a GPU (fn runs once unprofiled first): `gpu_busy_share`, the
    summed kernel time over the wall time (below 1: the GPU waits on the host, which is launching
    kernels or syncing); `outside_matmul_share`, the share of kernel time in ops outside
    FLOP_KERNELS; `top_ops`, the ops with the most GPU self time (ms and share of kernel time)."""
    fn()
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        fn()
        sync(device)
        wall = time.perf_counter() - start
    # Host-side ops only: each carries the GPU time of the kernels it launched, and the kernels'
    # own rows would count that time twice.
    ops = [e for e in prof.key_averages()
           if e.device_type == torch.autograd.DeviceType.CPU and e.self_device_time_total > 0]
    total_us = sum(e.self_device_time_total for e in ops)
    if total_us <= 0:
        return {"gpu_busy_share": 0.0}
    inside = sum(e.self_device_time_total for e in ops if is_flop_kernel(e.key))
    ops.sort(key=lambda e: e.self_device_time_total, reverse=True)
    return {"gpu_busy_share": round(min(1.0, total_us / 1e6 / wall), 3),
            "outside_matmul_share": round(1 - inside / total_us, 3),
            "top_ops": [{"op": e.key[:80], "ms": round(e.self_device_time_total / 1e3, 3),
                         "share": round(e.self_device_time_total / total_us, 4)} for e in ops[:top]]}
