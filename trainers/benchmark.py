"""`sundae-bench`: speed of the SUNDAE prior against its baselines, measured in one run.

One command, one process, random weights (speed does not depend on training). Sections:
1. peak: the machine's matmul throughput in bf16 and fp32 (large square matmuls, measured in this
   run, so every utilisation figure is relative to what this machine did today);
2. step: one denoising step (network forward + the sampler) of each preset prior and of a
   vanilla transformer of the same total depth at full resolution, batch 1 and 8, bf16 and fp32;
   plus the sampler's own share (the step on cached logits);
3. sample: a full sample at batch 1 in bf16: the prior for T steps (no self-stopping, so T is
   exact) and the VQ-GAN decode (the paper's f = 32 megapixel decoder for FFHQ1024), against the
   time its FLOPs would take at the measured bf16 peak;
4. ar: the reference approach, an autoregressive decoder-only transformer of the same width,
   heads and total depth generating the same token grid one token at a time with a KV cache,
   batch 1 and 8, bf16; SUNDAE / AR = SUNDAE sampling time at T / AR generation time;
5. train: prior training steps (bf16 autocast over fp32 weights, AdamW, clipping: what
   `sundae-train-prior` runs) with a 2-step unroll; MFU = 3 x forward FLOPs x unroll steps /
   step time / bf16 peak.
6. vqgan: VQ-GAN training steps (`trainers.train_vqgan.train_step` past disc_start: the
   generator step with L1 + LPIPS + codebook loss + adaptive-weight PatchGAN term, then the
   discriminator step) at a run config's batch size and crop, bf16 autocast against fp32, in
   images/s; and encode / decode of one 1024 x 1024 image (bf16 weights, inference_mode) by that
   config's model and by the paper's megapixel f = 32 VQ-GAN, with peak memory (issue 5: the
   megapixel decode must fit in 8 GB);
7. sampler: drawing one proposal per position over a preset's (tokens x vocabulary) logits
   (FFHQ1024: 1024 x 8192) with torch's Categorical, with our inverse-CDF `sample_categorical`
   and with Gumbel-max; and the whole sampler step (`denoise_step` on cached logits, proportion
   0.5), i.e. the cost method.md says must be engineered.

Timing: models are built and cast once (inference models to bf16 or fp32 weights, no autocast
under inference_mode), the case is warmed up, then the median of several synchronised runs is
reported (with the minimum). Memory: the peak resident set size (RSS) above the level just
before the case, polled every 2 ms from /proc/self/statm by a thread while the model is built
and the warm-up run (the same code path as the timed runs) executes; the poller is stopped
before the timed runs so it cannot slow them. Freed memory is returned to the OS (malloc_trim)
between cases; allocator caching can still hide a little reuse, so read the numbers as +-5 %.
On CUDA the peak is torch.cuda.max_memory_allocated. The process-wide high-water mark
(getrusage ru_maxrss) is reported too.

Outputs in --out: bench.json (every run) and bench.md (the tables; also printed).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from einops import rearrange
from torch import nn
from torch.distributions import Categorical
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from sundae_core.checkpoint import atomic_write
from sundae_core.cli import run_guarded
from sundae_core.compiled import compiled_decode_fn
from sundae_core.config import HourglassConfig, VQGANConfig, load_yaml
from sundae_core.errors import InputError
from sundae_core.hourglass import HourglassTransformer, flops
from sundae_core.presets import MEGAPIXEL_VQGAN, PRESET_GRIDS, PRESETS
from sundae_core.sampler import denoise_step, model_logits_fn, random_tokens, sample, sample_categorical
from sundae_core.unroll import unrolled_loss
from sundae_core.vqgan import VQGAN

from .discriminator import DiscriminatorConfig, PatchDiscriminator
from .image_data import DataConfig
from .lpips import load_lpips
from .train_vqgan import VQGANRunConfig, VQTrainConfig, train_step

# A model small enough for tests and smoke runs; not a paper configuration.
TINY = HourglassConfig(vocab_size=64, dim=32, heads=2, depth=(1, 2, 1))
TINY_VQGAN = VQGANConfig(resolution=32, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                         z_channels=8, embed_dim=8, n_embed=64, mid_attention=False)
# `--vqgan-config tiny`: the tiny VQ-GAN trained on 32 px crops (AlexNet LPIPS: the smallest it takes).
TINY_VQGAN_RUN = VQGANRunConfig(model=TINY_VQGAN, data=DataConfig(resolution=32, crop=32, cache_size=32),
                                train=VQTrainConfig(batch_size=2, lpips_net="alex", disc_channels=8, disc_layers=2))
MODELS = {**PRESETS, "tiny": TINY}
GRIDS = {**PRESET_GRIDS, "tiny": (8, 8)}
# The decoder each preset's full sample is decoded with (the taming f = 16 VQ-GAN for the 256 px
# presets, the paper's f = 32 model for FFHQ1024; MNIST-style priors model pixels directly).
DECODERS = {"ffhq1024": MEGAPIXEL_VQGAN, "ffhq256": VQGANConfig(), "celeba": VQGANConfig(),
            "imagenet": VQGANConfig(), "tiny": TINY_VQGAN}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
SECTIONS = ("step", "sample", "ar", "train", "vqgan", "sampler")
VQGAN_CODECS = ("config", "megapixel")  # the inference cases of the vqgan section
SAMPLER_TAU = 0.8  # a temperature other than 1: every method pays for the division, as in sampling
EIGHT_GB_MB = 8 * 1024  # issue 5: the megapixel 1024 x 1024 decode must fit in 8 GB of RAM


# ---------------------------------------------------------------------------------------------
# Timing and memory


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


# ---------------------------------------------------------------------------------------------
# Models: the vanilla baseline, the autoregressive baseline, FLOP counts


def total_depth(depth) -> int:
    if isinstance(depth, int):
        return depth
    pre, valley, post = depth
    return pre + total_depth(valley) + post


def vanilla_config(config: HourglassConfig) -> HourglassConfig:
    """The same network without shortening: every layer at full resolution."""
    return dataclasses.replace(config, depth=total_depth(config.depth))


class ARBlock(nn.Module):
    """Pre-norm causal block; during decoding it attends over its KV cache."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def step(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, t: int) -> torch.Tensor:
        """x: (b 1 d), the token at position t; caches: (b heads n dh), filled up to t - 1."""
        q, k, v = rearrange(self.to_qkv(self.norm1(x)), "b 1 (three hd d) -> three b hd 1 d", three=3,
                            hd=self.heads)
        k_cache[:, :, t:t + 1] = k
        v_cache[:, :, t:t + 1] = v
        # The query is the newest position: attending over the cache up to t is the causal mask.
        out = F.scaled_dot_product_attention(q, k_cache[:, :, :t + 1], v_cache[:, :, :t + 1])
        x = x + self.to_out(rearrange(out, "b hd 1 d -> b 1 (hd d)"))
        return x + self.mlp(self.norm2(x))


class ARDecoder(nn.Module):
    """Minimal decoder-only transformer over a raster of `length` tokens, KV-cached decoding.

    The reference approach (VQ-GAN + transformer): same width, heads, MLP and total depth as the
    prior it is compared with; learned positions; a start token (id = vocab_size)."""

    def __init__(self, vocab_size: int, dim: int, heads: int, depth: int, length: int, mlp_ratio: int = 4):
        super().__init__()
        self.vocab_size, self.length, self.heads = vocab_size, length, heads
        self.embed = nn.Embedding(vocab_size + 1, dim)
        self.pos = nn.Parameter(torch.randn(length, dim) * 0.02)
        self.blocks = nn.ModuleList(ARBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def new_caches(self, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        p = self.pos
        shape = (batch, self.heads, self.length, p.shape[1] // self.heads)
        return [(torch.empty(shape, device=p.device, dtype=p.dtype), torch.empty(shape, device=p.device, dtype=p.dtype))
                for _ in self.blocks]

    def next_logits(self, token: torch.Tensor, t: int, caches) -> torch.Tensor:
        """token (b,) at position t (the start token at t = 0) -> logits (b v) for position t."""
        x = (self.embed(token) + self.pos[t])[:, None]
        for block, (k, v) in zip(self.blocks, caches):
            x = block.step(x, k, v, t)
        return self.head(self.norm(x[:, 0]))

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced causal pass over (b n) tokens -> (b n v), without the cache (tests
        check that cached decoding reproduces it)."""
        b, n = tokens.shape
        start = torch.full((b, 1), self.vocab_size, dtype=torch.long, device=tokens.device)
        x = self.embed(torch.cat([start, tokens[:, :-1]], 1)) + self.pos[:n]
        for block in self.blocks:
            q, k, v = rearrange(block.to_qkv(block.norm1(x)), "b n (three hd d) -> three b hd n d", three=3,
                                hd=self.heads)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + block.to_out(rearrange(out, "b hd n d -> b n (hd d)"))
            x = x + block.mlp(block.norm2(x))
        return self.head(self.norm(x))

    @torch.inference_mode()
    def generate(self, batch: int, *, steps: int | None = None, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """(b n) tokens, one position per network call; `steps` < n stops early (warm-up)."""
        caches = self.new_caches(batch)
        out = torch.zeros(batch, self.length, dtype=torch.long, device=self.pos.device)
        token = torch.full((batch,), self.vocab_size, dtype=torch.long, device=self.pos.device)
        for t in range(self.length if steps is None else steps):
            token = sample_categorical(self.next_logits(token, t, caches), temperature, generator)
            out[:, t] = token
        return out


def ar_flops(config: HourglassConfig, batch: int, n: int) -> int:
    """Matmul FLOPs of generating n tokens with a KV cache (the attention reads t + 1 keys at t)."""
    d, layers = config.dim, total_depth(config.depth)
    per_token = layers * 2 * (4 * d * d + 2 * config.mlp_ratio * d * d) + 2 * d * config.vocab_size
    attention = layers * 4 * d * (n * (n + 1) // 2)
    return batch * (n * per_token + attention)


def vqgan_flops(config: VQGANConfig, run: Callable[[VQGAN], object]) -> int:
    """FLOPs torch counts for run(model) on a meta-device VQ-GAN (no memory, no compute)."""
    with torch.device("meta"):
        model = VQGAN(config)
        counter = FlopCounterMode(display=False)
        with counter:
            run(model)
    return int(counter.get_total_flops())


def decoder_flops(config: VQGANConfig, height: int, width: int) -> int:
    """FLOPs of one VQ-GAN decode of a (height x width) token grid."""
    return vqgan_flops(config, lambda m: m.decode_latents(torch.zeros(1, config.embed_dim, height, width)))


def encoder_flops(config: VQGANConfig, height: int, width: int) -> int:
    """FLOPs of one VQ-GAN encode (with the nearest-code search) of a (height x width) image."""
    return vqgan_flops(config, lambda m: m.encode(torch.zeros(1, config.in_channels, height, width)))


def build(make: Callable[[], nn.Module], device: torch.device, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return make().to(device=device, dtype=dtype).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Cases


@dataclass
class Bench:
    device: torch.device
    repeats: int
    long_repeats: int
    budget_s: float
    peak: dict[str, float] = dataclasses.field(default_factory=dict)  # dtype -> FLOP/s
    log: Callable[[str], None] = print

    def fraction(self, flop_per_s: float, dtype: str = "bf16") -> float | None:
        peak = self.peak.get(dtype)
        return round(flop_per_s / peak, 4) if peak else None


def measure_peak(bench: Bench, sizes: tuple[int, ...]) -> list[dict]:
    rows = []
    for name, dtype in DTYPES.items():
        best = 0.0
        for n in sizes:
            a = torch.randn(n, n, device=bench.device).to(dtype)
            b = torch.randn(n, n, device=bench.device).to(dtype)
            c = torch.empty(n, n, device=bench.device, dtype=dtype)
            fn = lambda: torch.mm(a, b, out=c)
            fn()
            t = time_runs(fn, bench.device, bench.repeats)
            rate = 2 * n ** 3 / t.median_s
            rows.append({"dtype": name, "n": n, "median_s": t.median_s, "min_s": t.min_s, "runs": t.runs,
                         "flop_per_s": rate})
            best = max(best, rate)
        bench.peak[name] = best
        bench.log(f"peak {name}: {best / 1e9:.0f} GFLOP/s")
    return rows


def bench_step(bench: Bench, label: str, model_name: str, config: HourglassConfig, grid: tuple[int, int],
               dtype_name: str, batch: int) -> dict:
    """One denoising step (forward + sampler) and the sampler alone on cached logits."""
    dev, dtype = bench.device, DTYPES[dtype_name]
    g = torch.Generator(dev).manual_seed(0)
    with MemoryProbe(dev) as mem:
        model = build(lambda: HourglassTransformer(config), dev, dtype)
        fn_model = model_logits_fn(model)
        tokens = random_tokens(batch, *grid, config.vocab_size, generator=g, device=dev)
        step = lambda: denoise_step(fn_model, tokens, generator=g, temperature=1.0, proportion=0.5)
        with torch.inference_mode():
            warm = warm_up(step, dev)
    with torch.inference_mode():
        t = time_runs(step, dev, repeats_for(warm, bench.repeats, bench.budget_s))
        logits = model(tokens)
        sampler_only = lambda: denoise_step(lambda z, labels: logits, tokens, generator=g, temperature=1.0,
                                            proportion=0.5)
        sampler_only()
        ts = time_runs(sampler_only, dev, bench.repeats)
    del model, logits
    f = flops(config, batch, *grid)
    rate = f / t.median_s
    row = {"case": label, "model": model_name, "grid": list(grid), "dtype": dtype_name, "batch": batch,
           "depth": str(config.depth), "median_s": t.median_s, "min_s": t.min_s, "runs": t.runs,
           "sampler_s": ts.median_s, "tokens_per_s": batch * grid[0] * grid[1] / t.median_s,
           "flops": f, "flop_per_s": rate, "frac_bf16_peak": bench.fraction(rate, "bf16"),
           "frac_dtype_peak": bench.fraction(rate, dtype_name), "peak_mem_mb": mem.mb}
    bench.log(f"{label} {model_name} {dtype_name} b{batch}: {t.median_s * 1e3:.1f} ms/step "
              f"({rate / 1e9:.0f} GFLOP/s, sampler {ts.median_s * 1e3:.1f} ms), {mem.mb} MB")
    return row


def bench_sample(bench: Bench, model_name: str, config: HourglassConfig, grid: tuple[int, int],
                 vq: VQGANConfig | None, steps_list: tuple[int, ...], compiled: bool = False) -> list[dict]:
    """Full samples at batch 1 in bf16: T prior steps + decode, against the FLOP-time bound.
    compiled: the prior and the decoder run through torch.compile (sundae_core/compiled.py); the
    compile happens in the warm-up and is reported, not timed."""
    dev = bench.device
    prior_f = flops(config, 1, *grid)
    dec_f = decoder_flops(vq, *grid) if vq is not None else 0
    rows = []
    with MemoryProbe(dev) as mem:
        prior = build(lambda: HourglassTransformer(config), dev, torch.bfloat16)
        vqgan = build(lambda: VQGAN(vq), dev, torch.bfloat16) if vq is not None else None
        logits_fn = model_logits_fn(prior, compile=compiled)
        decode = None if vqgan is None else compiled_decode_fn(vqgan) if compiled else vqgan.decode

        def run(steps: int) -> tuple[float, float]:
            g = torch.Generator(dev).manual_seed(0)
            start = time.perf_counter()
            with torch.inference_mode():
                z = random_tokens(1, *grid, config.vocab_size, generator=g, device=dev)
                out = sample(logits_fn, z, generator=g, steps=steps, temperature=(1.0, 0.7), proportion=0.5,
                             self_stop=False)
                sync(dev)
                mid = time.perf_counter()
                if decode is not None:
                    decode(out.tokens)
                sync(dev)
            return mid - start, time.perf_counter() - mid

        warm_start = time.perf_counter()
        run(2)  # warm-up: the same path (sampler, both networks) at two steps; compiles if compiled
        warm_s = time.perf_counter() - warm_start
    for steps in steps_list:
        parts = [run(steps) for _ in range(max(1, bench.long_repeats))]
        totals = [a + b for a, b in parts]
        i = totals.index(statistics.median_low(totals))
        total_f = steps * prior_f + dec_f
        bound = total_f / bench.peak["bf16"] if bench.peak.get("bf16") else None
        row = {"case": "sample", "model": model_name, "grid": list(grid), "steps": steps, "batch": 1,
               "dtype": "bf16", "decoder": "pixels" if vq is None else f"f={vq.factor} ch={vq.ch}",
               "mode": "compiled" if compiled else "eager", "warm_up_s": warm_s,
               "median_s": statistics.median(totals), "min_s": min(totals), "runs": [round(x, 4) for x in totals],
               "prior_s": parts[i][0], "decode_s": parts[i][1], "flops": total_f, "prior_flops": steps * prior_f,
               "decode_flops": dec_f, "flop_per_s": total_f / statistics.median(totals),
               "frac_bf16_peak": bench.fraction(total_f / statistics.median(totals)),
               "bound_s": bound, "over_bound": statistics.median(totals) / bound if bound else None,
               "peak_mem_mb": mem.mb}
        rows.append(row)
        bench.log(f"sample {model_name} {row['mode']} T={steps}: {row['median_s']:.2f} s (prior {row['prior_s']:.2f} s, "
                  f"decode {row['decode_s']:.2f} s), {row['over_bound'] or 0:.2f}x the FLOP bound")
    del prior, vqgan
    return rows


def bench_ar(bench: Bench, model_name: str, config: HourglassConfig, grid: tuple[int, int], batch: int) -> dict:
    dev = bench.device
    n = grid[0] * grid[1]
    g = torch.Generator(dev).manual_seed(0)
    with MemoryProbe(dev) as mem:
        model = build(lambda: ARDecoder(config.vocab_size, config.dim, config.heads, total_depth(config.depth), n,
                                        config.mlp_ratio), dev, torch.bfloat16)
        model.generate(batch, steps=min(n, 16), generator=g)  # warm-up; the cache is allocated in full
    t = time_runs(lambda: model.generate(batch, generator=g), dev, bench.long_repeats)
    del model
    f = ar_flops(config, batch, n)
    row = {"case": "ar", "model": model_name, "grid": list(grid), "dtype": "bf16", "batch": batch,
           "layers": total_depth(config.depth), "tokens": n, "median_s": t.median_s, "min_s": t.min_s,
           "runs": t.runs, "tokens_per_s": batch * n / t.median_s, "flops": f, "flop_per_s": f / t.median_s,
           "frac_bf16_peak": bench.fraction(f / t.median_s), "peak_mem_mb": mem.mb}
    bench.log(f"ar {model_name} b{batch}: {t.median_s:.2f} s for {n} tokens, {mem.mb} MB")
    return row


def bench_train(bench: Bench, model_name: str, config: HourglassConfig, grid: tuple[int, int], batch: int,
                unroll: int) -> dict:
    """Training steps as the prior trainer runs them: bf16 autocast, fp32 weights, AdamW, clipping."""
    dev = bench.device
    g = torch.Generator(dev).manual_seed(0)
    with MemoryProbe(dev) as mem:
        torch.manual_seed(0)
        model = HourglassTransformer(config).to(dev).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        tokens = random_tokens(batch, *grid, config.vocab_size, generator=g, device=dev)
        logits_fn = model_logits_fn(model)

        def step() -> None:
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                out = unrolled_loss(logits_fn, tokens, config.vocab_size, steps=unroll, generator=g)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()

        # Two warm-up steps: the first allocates the optimiser state, and the second still ran
        # ~45 % slower than the steady state on a CPU (allocator growth), which a single timed run
        # after one warm-up step used to report as the training speed.
        step()
        step()
        sync(dev)
    t = time_runs(step, dev, bench.long_repeats)
    del model, opt
    model_f = 3 * flops(config, batch, *grid) * unroll
    row = {"case": "train", "model": model_name, "grid": list(grid), "dtype": "bf16-autocast", "batch": batch,
           "unroll": unroll, "median_s": t.median_s, "min_s": t.min_s, "runs": t.runs,
           "tokens_per_s": batch * grid[0] * grid[1] / t.median_s, "flops": model_f,
           "flop_per_s": model_f / t.median_s, "mfu": bench.fraction(model_f / t.median_s), "peak_mem_mb": mem.mb}
    bench.log(f"train {model_name} b{batch}: {t.median_s:.2f} s/step, MFU {100 * (row['mfu'] or 0):.1f} %, "
              f"{mem.mb} MB")
    return row


# ---------------------------------------------------------------------------------------------
# VQ-GAN: training throughput, encode / decode latency and memory


def vqgan_run_config(name: str) -> VQGANRunConfig:
    """`tiny` or the path of a VQ-GAN run config YAML (as `sundae-train-vqgan --config` takes)."""
    return TINY_VQGAN_RUN if name == "tiny" else load_yaml(name, VQGANRunConfig)


def bench_vqgan_train(bench: Bench, name: str, run: VQGANRunConfig, precision: str) -> dict:
    """Training steps as `sundae-train-vqgan` runs them once the GAN is on (`train_step`: generator
    step with LPIPS and the adaptive weight, then the discriminator step; Adam on fp32 weights) at
    the config's batch size and crop, under bf16 autocast ("bf16") or in plain fp32 ("fp32")."""
    dev, tc, crop = bench.device, run.train, run.data.crop
    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
    g = torch.Generator(dev).manual_seed(0)
    images = torch.rand(tc.batch_size, run.model.in_channels, crop, crop, generator=g, device=dev) * 2 - 1
    with MemoryProbe(dev) as mem:
        torch.manual_seed(0)
        model = VQGAN(run.model).to(dev).train()
        disc_config = DiscriminatorConfig(channels=tc.disc_channels, layers=tc.disc_layers)
        disc = PatchDiscriminator(disc_config).to(dev).train()
        lpips = load_lpips(tc.lpips_net, device=dev)
        opt_ae = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=tuple(tc.betas))
        opt_d = torch.optim.Adam(disc.parameters(), lr=tc.lr, betas=tuple(tc.betas))
        step = lambda: train_step(model, disc, lpips, opt_ae, opt_d, images, tc, gan_on=True,
                                  autocast=autocast)
        warm_up(step, dev)  # also allocates both optimisers' state
    t = time_runs(step, dev, bench.long_repeats)
    del model, disc, lpips, opt_ae, opt_d
    row = {"case": "vqgan-train", "config": name, "precision": "bf16-autocast" if precision == "bf16" else "fp32",
           "batch": tc.batch_size, "crop": crop, "lpips": tc.lpips_net, "median_s": t.median_s, "min_s": t.min_s,
           "runs": t.runs, "images_per_s": tc.batch_size / t.median_s, "peak_mem_mb": mem.mb}
    bench.log(f"vqgan train {name} {row['precision']} b{tc.batch_size} {crop}px: {t.median_s:.2f} s/step, "
              f"{row['images_per_s']:.1f} images/s, {mem.mb} MB")
    return row


def bench_vqgan_codec(bench: Bench, name: str, config: VQGANConfig, side: int) -> dict:
    """Encode and decode of one (side x side) image, bf16 weights under inference_mode.

    Memory: decode = peak above the level before the model was built (weights, including the fp32
    initialisation before the cast to bf16, + one decode: what a process that only decodes needs);
    encode = peak above the level with the model loaded."""
    dev, f = bench.device, config.factor
    g = torch.Generator(dev).manual_seed(0)
    images = torch.rand(1, config.in_channels, side, side, generator=g, device=dev) * 2 - 1
    tokens = torch.randint(0, config.n_embed, (1, side // f, side // f), generator=g, device=dev)
    with torch.inference_mode():
        with MemoryProbe(dev) as dec_mem:
            model = build(lambda: VQGAN(config), dev, torch.bfloat16)
            decode = lambda: model.decode(tokens)
            dec_warm = warm_up(decode, dev)
        with MemoryProbe(dev) as enc_mem:
            encode = lambda: model.encode(images)
            enc_warm = warm_up(encode, dev)
        dec = time_runs(decode, dev, repeats_for(dec_warm, bench.repeats, bench.budget_s))
        enc = time_runs(encode, dev, repeats_for(enc_warm, bench.repeats, bench.budget_s))
    params = sum(p.numel() for p in model.parameters())
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    del model
    enc_f, dec_f = encoder_flops(config, side, side), decoder_flops(config, side // f, side // f)
    row = {"case": "vqgan-codec", "model": name, "image": f"{side}x{side}", "tokens": [side // f, side // f],
           "factor": f, "dtype": "bf16", "params_m": round(params / 1e6, 2), "weights_mb": round(weights_mb, 1),
           "encode_s": enc.median_s, "encode_min_s": enc.min_s, "encode_runs": enc.runs,
           "decode_s": dec.median_s, "decode_min_s": dec.min_s, "decode_runs": dec.runs,
           "encode_flops": enc_f, "decode_flops": dec_f, "encode_flop_per_s": enc_f / enc.median_s,
           "decode_flop_per_s": dec_f / dec.median_s, "decode_frac_bf16_peak": bench.fraction(dec_f / dec.median_s),
           "decode_peak_mem_mb": dec_mem.mb, "encode_peak_mem_mb": enc_mem.mb,
           # the whole process at the decode's peak (interpreter, torch, model, activations)
           "decode_process_rss_mb": round(dec_mem.peak / 2**20, 1) if dev.type == "cpu" else None,
           "decode_fits_8gb": dec_mem.mb <= EIGHT_GB_MB}
    bench.log(f"vqgan codec {name} {side}px: encode {enc.median_s:.2f} s, decode {dec.median_s:.2f} s, "
              f"decode peak +{dec_mem.mb} MB, encode peak +{enc_mem.mb} MB")
    return row


def codec_models(name: str, run: VQGANRunConfig, codecs: list[str], side: int) -> list[tuple[str, VQGANConfig]]:
    """The (name, config) of each encode / decode case, checked against the image side."""
    models = {"config": (name, run.model), "megapixel": ("megapixel f=32", MEGAPIXEL_VQGAN)}
    out = [models[c] for c in codecs]
    for label, config in out:
        if side % config.factor:
            raise InputError(f"--vqgan-image {side} is not a multiple of the {label} VQ-GAN's factor "
                             f"{config.factor}")
    return out


def vqgan_section(bench: Bench, name: str, run: VQGANRunConfig, codecs: list[tuple[str, VQGANConfig]],
                  side: int) -> dict:
    train = [bench_vqgan_train(bench, name, run, precision) for precision in ("bf16", "fp32")]
    fp32_s = train[1]["median_s"]
    for r in train:
        r["speed_vs_fp32"] = fp32_s / r["median_s"]
    return {"train": train, "codec": [bench_vqgan_codec(bench, label, c, side) for label, c in codecs]}


# ---------------------------------------------------------------------------------------------
# Sampler: the cost of drawing proposals, against torch's defaults


def gumbel_max(logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (n v) -> indices (n,): argmax(logits / tau + G), G ~ Gumbel(0, 1) drawn as -log E,
    E ~ Exp(1); an exact categorical draw, with one random number per vocabulary entry."""
    noise = torch.empty(logits.shape, device=logits.device).exponential_(generator=generator).log_().neg_()
    return (logits.float() / temperature + noise).argmax(-1)


def proposal_samplers(generator: torch.Generator) -> dict[str, Callable[[torch.Tensor, float], torch.Tensor]]:
    """Ways to draw one index per row of (n v) logits at temperature tau; the first is the baseline."""
    return {"torch Categorical": lambda logits, tau: Categorical(logits=logits / tau).sample(),
            "inverse-CDF (ours)": lambda logits, tau: sample_categorical(logits, tau, generator),
            "Gumbel-max": lambda logits, tau: gumbel_max(logits, tau, generator)}


def bench_sampler(bench: Bench, model_name: str, grid: tuple[int, int], vocab: int, dtype_name: str) -> list[dict]:
    """Proposals over (h w) x vocab logits by each method, then our whole sampler step (denoise_step
    at proportion 0.5 on cached logits: update mask, proposals, scatter, change test)."""
    dev, n = bench.device, grid[0] * grid[1]
    g = torch.Generator(dev).manual_seed(0)
    logits = (2 * torch.randn(n, vocab, generator=g, device=dev)).to(DTYPES[dtype_name])
    cached = rearrange(logits, "(b h w) v -> b h w v", b=1, h=grid[0])
    tokens = random_tokens(1, *grid, vocab, generator=g, device=dev)
    cases = {name: (lambda draw=draw: draw(logits, SAMPLER_TAU)) for name, draw in proposal_samplers(g).items()}
    cases["denoise_step, p = 0.5 (ours)"] = lambda: denoise_step(lambda z, labels: cached, tokens, generator=g,
                                                                 temperature=SAMPLER_TAU, proportion=0.5)
    rows = []
    with torch.inference_mode():
        for method, fn in cases.items():
            warm_up(fn, dev)
            t = time_runs(fn, dev, bench.repeats)
            rows.append({"case": "sampler", "model": model_name, "method": method, "shape": [n, vocab],
                         "dtype": dtype_name, "tau": SAMPLER_TAU, "median_s": t.median_s, "min_s": t.min_s,
                         "runs": t.runs})
    for r in rows:
        r["speed_vs_categorical"] = rows[0]["median_s"] / r["median_s"]
    bench.log(f"sampler {model_name} {n}x{vocab} {dtype_name}: " + ", ".join(
        f"{r['method']} {r['median_s'] * 1e3:.2f} ms" for r in rows))
    return rows


# ---------------------------------------------------------------------------------------------
# Report


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def ratios(report: dict) -> list[dict]:
    """SUNDAE / AR latency per model, batch and T: measured full sampling at batch 1 where the
    sample section ran it, else T x the measured step latency."""
    out = []
    steps = {(r["model"], r["batch"]): r["median_s"] for r in report["step"] if r["case"] == "prior"
             and r["dtype"] == "bf16"}
    sampled = {}
    for r in sorted(report["sample"], key=lambda r: -r["prior_s"]):  # the fastest measured sample wins
        sampled[(r["model"], r["steps"])] = r["prior_s"]
    for ar in report["ar"]:
        for t in report["settings"]["sample_steps"]:
            measured = sampled.get((ar["model"], t)) if ar["batch"] == 1 else None
            est = steps.get((ar["model"], ar["batch"]))
            sundae = measured if measured is not None else (t * est if est is not None else None)
            if sundae is None:
                continue
            out.append({"model": ar["model"], "batch": ar["batch"], "steps": t, "sundae_s": sundae,
                        "sundae_source": "measured sample" if measured is not None else "T x step latency",
                        "ar_s": ar["median_s"], "ratio": sundae / ar["median_s"]})
    return out


def _table(title: str, rows: list[dict], columns: list[tuple[str, Callable[[dict], object]]]) -> list[str]:
    """A Markdown section: `## title` and one line per row; nothing when there are no rows."""
    if not rows:
        return []
    lines = [f"## {title}", "", "| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell(r)) for _, cell in columns) + " |" for r in rows]
    return lines + [""]


def markdown(report: dict) -> str:
    env, peak = report["environment"], report["peak_flop_per_s"]
    lines = [f"# SUNDAE benchmark ({env['device']}, {env['threads']} threads, torch {env['torch']})", "",
             f"- command: `{env['command']}`",
             f"- CPU: {env['cpu']}; load average before / after: {env['load_before']} / {env['load_after']}",
             f"- measured matmul peak: bf16 {_fmt(peak.get('bf16', 0) / 1e9, 0)} GFLOP/s, "
             f"fp32 {_fmt(peak.get('fp32', 0) / 1e9, 0)} GFLOP/s",
             f"- random weights; timings are medians of synchronised runs after a warm-up; memory is the "
             f"peak RSS above the level before each case (see `trainers/benchmark.py`); process high-water "
             f"{_fmt(report['max_rss_mb'], 0)} MB; total wall time {_fmt(report['wall_s'], 0)} s", ""]
    grid = lambda r: f"{r['grid'][0]}x{r['grid'][1]}"
    pct = lambda key: lambda r: _fmt(100 * (r[key] or 0))
    mb = lambda r: _fmt(r["peak_mem_mb"], 0)
    lines += _table("Denoising step (forward + sampler)", report["step"], [
        ("network", lambda r: f"{'hourglass' if r['case'] == 'prior' else 'vanilla'} {r['depth']}"),
        ("model", lambda r: r["model"]), ("grid", grid), ("dtype", lambda r: r["dtype"]),
        ("batch", lambda r: r["batch"]), ("step ms", lambda r: _fmt(r["median_s"] * 1e3)),
        ("sampler ms", lambda r: _fmt(r["sampler_s"] * 1e3)), ("tokens/s", lambda r: _fmt(r["tokens_per_s"], 0)),
        ("GFLOP", lambda r: _fmt(r["flops"] / 1e9)), ("GFLOP/s", lambda r: _fmt(r["flop_per_s"] / 1e9, 0)),
        ("% bf16 peak", pct("frac_bf16_peak")), ("% own-dtype peak", pct("frac_dtype_peak")), ("peak MB", mb)])
    lines += _table("Full sample, batch 1, bf16 (prior T steps + VQ-GAN decode)", report["sample"], [
        ("model", lambda r: r["model"]), ("output", lambda r: r["output"]), ("mode", lambda r: r.get("mode", "eager")),
        ("T", lambda r: r["steps"]), ("warm-up s", lambda r: _fmt(r.get("warm_up_s"), 1)),
        ("total s", lambda r: _fmt(r["median_s"], 2)), ("prior s", lambda r: _fmt(r["prior_s"], 2)),
        ("decode s", lambda r: _fmt(r["decode_s"], 2)), ("TFLOP", lambda r: _fmt(r["flops"] / 1e12, 2)),
        ("GFLOP/s", lambda r: _fmt(r["flop_per_s"] / 1e9, 0)), ("FLOP bound s", lambda r: _fmt(r["bound_s"], 2)),
        ("total / bound", lambda r: _fmt(r["over_bound"], 2)), ("peak MB", mb)])
    lines += _table("Autoregressive baseline (KV cache, bf16)", report["ar"], [
        ("model", lambda r: r["model"]), ("layers", lambda r: r["layers"]), ("tokens", lambda r: r["tokens"]),
        ("batch", lambda r: r["batch"]), ("AR s", lambda r: _fmt(r["median_s"], 2)),
        ("tokens/s", lambda r: _fmt(r["tokens_per_s"], 0)), ("GFLOP/s", lambda r: _fmt(r["flop_per_s"] / 1e9, 0)),
        ("peak MB", mb)])
    lines += _table("SUNDAE / AR latency", report["ratios"], [
        ("model", lambda r: r["model"]), ("batch", lambda r: r["batch"]), ("T", lambda r: r["steps"]),
        ("SUNDAE s", lambda r: _fmt(r["sundae_s"], 2)), ("source", lambda r: r["sundae_source"]),
        ("AR s", lambda r: _fmt(r["ar_s"], 2)), ("SUNDAE / AR", lambda r: _fmt(r["ratio"], 2))])
    lines += _table("Prior training (bf16 autocast, AdamW)", report["train"], [
        ("model", lambda r: r["model"]), ("grid", grid), ("batch", lambda r: r["batch"]),
        ("unroll", lambda r: r["unroll"]), ("s / step", lambda r: _fmt(r["median_s"], 2)),
        ("tokens/s", lambda r: _fmt(r["tokens_per_s"], 0)), ("model TFLOP / step", lambda r: _fmt(r["flops"] / 1e12, 2)),
        ("MFU % of bf16 peak", pct("mfu")), ("peak MB", mb)])
    lines += _table("VQ-GAN training step (generator with LPIPS + adaptive-weight GAN, then discriminator; Adam)",
                    report["vqgan_train"], [
        ("config", lambda r: r["config"]), ("precision", lambda r: r["precision"]), ("batch", lambda r: r["batch"]),
        ("crop", lambda r: r["crop"]), ("LPIPS", lambda r: r["lpips"]), ("s / step", lambda r: _fmt(r["median_s"], 2)),
        ("images/s", lambda r: _fmt(r["images_per_s"], 1)), ("speed vs fp32", lambda r: _fmt(r["speed_vs_fp32"], 2)),
        ("peak MB", mb)])
    lines += _table("VQ-GAN encode / decode, batch 1, bf16 weights, inference_mode", report["vqgan_codec"], [
        ("model", lambda r: r["model"]), ("image", lambda r: r["image"]),
        ("tokens", lambda r: f"{r['tokens'][0]}x{r['tokens'][1]}"), ("params M", lambda r: _fmt(r["params_m"], 2)),
        ("encode s", lambda r: _fmt(r["encode_s"], 3)), ("decode s", lambda r: _fmt(r["decode_s"], 3)),
        ("decode GFLOP", lambda r: _fmt(r["decode_flops"] / 1e9, 0)),
        ("decode GFLOP/s", lambda r: _fmt(r["decode_flop_per_s"] / 1e9, 0)),
        ("decode peak MB (model + decode)", lambda r: _fmt(r["decode_peak_mem_mb"], 0)),
        ("encode peak MB (above model)", lambda r: _fmt(r["encode_peak_mem_mb"], 0)),
        ("process RSS at decode MB", lambda r: _fmt(r["decode_process_rss_mb"], 0))])
    lines += _table(f"Sampler: one proposal per position (tau = {SAMPLER_TAU}), median of runs", report["sampler"], [
        ("model", lambda r: r["model"]), ("logits", lambda r: f"{r['shape'][0]} x {r['shape'][1]}"),
        ("dtype", lambda r: r["dtype"]), ("method", lambda r: r["method"]),
        ("ms", lambda r: _fmt(r["median_s"] * 1e3, 2)), ("min ms", lambda r: _fmt(r["min_s"] * 1e3, 2)),
        ("speed vs Categorical", lambda r: _fmt(r["speed_vs_categorical"], 2))])
    targets = report["targets"]
    if targets:
        lines += ["## Targets (issues 5 and 8)", ""] + [f"- {t}" for t in targets] + [""]
    return "\n".join(lines)


def targets(report: dict) -> list[str]:
    out = []
    for r in report["sample"]:
        if r["over_bound"] is not None:
            verdict = "meets" if r["over_bound"] <= 1.5 else "misses"
            out.append(f"{r['model']} full sample ({r.get('mode', 'eager')}) at T = {r['steps']}: {r['median_s']:.2f} s = "
                       f"{r['over_bound']:.2f}x its FLOP bound ({verdict} the 1.5x target)")
    for r in report["train"]:
        if r["mfu"] is not None:
            verdict = "meets" if r["mfu"] >= 0.35 else "misses"
            out.append(f"{r['model']} training MFU {100 * r['mfu']:.1f} % ({verdict} the 35 % target)")
    for r in report["ratios"]:
        faster = "SUNDAE faster" if r["ratio"] < 1 else "AR faster"
        out.append(f"{r['model']} batch {r['batch']}: SUNDAE T = {r['steps']} / AR = {r['ratio']:.2f} ({faster})")
    return out + vqgan_targets(report) + sampler_targets(report)


def vqgan_targets(report: dict) -> list[str]:
    out = []
    for r in report["vqgan_train"]:
        if r["precision"] != "fp32":
            out.append(f"VQ-GAN training ({r['config']}, batch {r['batch']}, {r['crop']} px): {r['images_per_s']:.1f} "
                       f"images/s in {r['precision']} = {r['speed_vs_fp32']:.2f}x fp32")
    for r in report["vqgan_codec"]:
        verdict = "fits" if r["decode_fits_8gb"] else "does not fit"
        process = (f"; the whole process peaked at {r['decode_process_rss_mb']:,.0f} MB"
                   if r["decode_process_rss_mb"] is not None else "")
        out.append(f"{r['model']} VQ-GAN {r['image']} decode: {r['decode_s']:.3f} s, peak "
                   f"+{r['decode_peak_mem_mb']:,.0f} MB for model and decode ({verdict} in 8 GB){process}")
    return out


def sampler_targets(report: dict) -> list[str]:
    """method.md's claim: a default Categorical draw costs as much as the network; ours?"""
    out = []
    steps = {(r["model"], r["dtype"]): r["median_s"] for r in report["step"]
             if r["case"] == "prior" and r["batch"] == 1}
    for dtype in dict.fromkeys(r["dtype"] for r in report["sampler"]):
        rows = {r["method"]: r for r in report["sampler"] if r["dtype"] == dtype}
        base, ours = rows["torch Categorical"], rows["inverse-CDF (ours)"]
        step = rows["denoise_step, p = 0.5 (ours)"]
        n, v = base["shape"]
        line = (f"proposals over {n} x {v} {dtype} logits: Categorical {base['median_s'] * 1e3:.2f} ms, ours "
                f"{ours['median_s'] * 1e3:.2f} ms ({ours['speed_vs_categorical']:.1f}x faster), Gumbel-max "
                f"{rows['Gumbel-max']['median_s'] * 1e3:.2f} ms; our whole sampler step "
                f"{step['median_s'] * 1e3:.2f} ms")
        network_step = steps.get((base["model"], "bf16"))
        if network_step:
            line += f" = {100 * step['median_s'] / network_step:.1f} % of the {base['model']} bf16 batch-1 step"
        out.append(line)
    return out


# ---------------------------------------------------------------------------------------------
# CLI


def _names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise InputError(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    return names


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{what} must be whole numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise InputError(f"{what} must be >= 1, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sundae-bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--quick", action="store_true",
                   help="reduced run: 3 repeats (1 for long cases), T = 20 and 10, training batch 2, "
                        "smaller peak matmuls")
    p.add_argument("--presets", default="ffhq256,ffhq1024",
                   help=f"priors for the step, AR and training sections (of {', '.join(MODELS)})")
    p.add_argument("--sample-preset", default="ffhq1024",
                   help="prior of the full-sample section; its decoder is the paper's for that preset "
                        "(ffhq1024: the f = 32 megapixel VQ-GAN); 'none' skips the section")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="which sections to run, comma-separated (the peak always runs)")
    p.add_argument("--dtypes", default="bf16,fp32", help="dtypes of the step section and of the sampler's logits")
    p.add_argument("--batches", default="1,8", help="batch sizes of the step and AR sections")
    p.add_argument("--sample-steps", help="T values of the full sample (default 100,50; --quick 20,10)")
    p.add_argument("--train-batch", type=int, help="training batch size (default 8; --quick 2)")
    p.add_argument("--unroll", type=int, default=2, help="unrolled training steps (default 2)")
    p.add_argument("--repeats", type=int, help="timed runs per short case (default 5; --quick 3)")
    p.add_argument("--long-repeats", type=int,
                   help="timed runs of full samples, AR generations and (prior and VQ-GAN) training steps "
                        "(default 3; --quick 1)")
    p.add_argument("--case-budget", type=float, default=60.0,
                   help="seconds a short case may spend on timed runs before repeats drop (to at least 3)")
    p.add_argument("--no-vanilla", action="store_true", help="skip the vanilla full-resolution baseline")
    p.add_argument("--compile", action="store_true",
                   help="also time the full sample with torch.compile'd prior and decoder (needs a C++ "
                        "compiler; compiling takes minutes and is reported as warm-up, not timed)")
    p.add_argument("--vqgan-config", default="configs/vqgan_emoji_f32.yaml",
                   help="VQ-GAN run config YAML (as sundae-train-vqgan --config takes) whose model, batch size, "
                        "crop, LPIPS net and discriminator the vqgan section trains; 'tiny' for a smoke-test model")
    p.add_argument("--vqgan-models", default=",".join(VQGAN_CODECS),
                   help="encode / decode cases of the vqgan section: 'config' (the --vqgan-config model), "
                        "'megapixel' (the paper's f = 32 model, sundae_core.presets.MEGAPIXEL_VQGAN); 'none'")
    p.add_argument("--vqgan-image", type=int, default=1024, help="side of the square image encoded and decoded")
    p.add_argument("--sampler-preset", default="ffhq1024",
                   help="preset whose (tokens x vocabulary) logits the sampler section draws from "
                        "(ffhq1024: 1024 x 8192)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--out", default="runs/bench", help="folder for bench.json and bench.md")
    return p


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        start_wall = time.perf_counter()
        if args.threads:
            torch.set_num_threads(args.threads)
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda but no CUDA device is available")
        quick = args.quick
        presets = _names(args.presets, "preset")
        sections = {s.strip() for s in args.sections.split(",") if s.strip()}
        bad = sections - set(SECTIONS)
        if bad:
            raise InputError(f"unknown section(s) {', '.join(sorted(bad))}; choose from {', '.join(SECTIONS)}")
        dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        if not dtypes or any(d not in DTYPES for d in dtypes):
            raise InputError(f"--dtypes must name some of {', '.join(DTYPES)}, got {args.dtypes!r}")
        batches = _ints(args.batches, "--batches")
        sample_steps = _ints(args.sample_steps or ("20,10" if quick else "100,50"), "--sample-steps")
        sample_preset = None if args.sample_preset == "none" else _names(args.sample_preset, "sample preset")[0]
        if sample_preset is not None and sample_preset not in DECODERS and sample_preset not in ("mnist", "fashionmnist"):
            raise InputError(f"no decoder is defined for {sample_preset}")
        codecs = [] if args.vqgan_models == "none" else [c.strip() for c in args.vqgan_models.split(",") if c.strip()]
        if any(c not in VQGAN_CODECS for c in codecs):
            raise InputError(f"--vqgan-models must name some of {', '.join(VQGAN_CODECS)} (or none), "
                             f"got {args.vqgan_models!r}")
        if args.vqgan_image < 1:
            raise InputError(f"--vqgan-image must be >= 1, got {args.vqgan_image}")
        sampler_preset = _names(args.sampler_preset, "sampler preset")[0]
        vqgan_name = Path(args.vqgan_config).stem
        vqgan_run = vqgan_run_config(args.vqgan_config) if "vqgan" in sections else None
        codec_cases = codec_models(vqgan_name, vqgan_run, codecs, args.vqgan_image) if vqgan_run else []
        bench = Bench(device=device, repeats=args.repeats or (3 if quick else 5),
                      long_repeats=args.long_repeats or (1 if quick else 3), budget_s=args.case_budget)
        report = {"environment": {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                                  "python": platform.python_version(), "cpu": _cpu_name(),
                                  "command": "sundae-bench " + " ".join(sys.argv[1:] if argv is None else argv),
                                  "load_before": [round(x, 2) for x in os.getloadavg()]},
                  "settings": {"quick": quick, "presets": presets, "sections": sorted(sections), "dtypes": dtypes,
                               "batches": list(batches), "sample_steps": list(sample_steps),
                               "sample_preset": sample_preset, "repeats": bench.repeats,
                               "long_repeats": bench.long_repeats, "unroll": args.unroll,
                               "vqgan_config": args.vqgan_config, "vqgan_models": codecs,
                               "vqgan_image": args.vqgan_image, "sampler_preset": sampler_preset},
                  "step": [], "sample": [], "ar": [], "train": [], "vqgan_train": [], "vqgan_codec": [],
                  "sampler": []}
        report["peak"] = measure_peak(bench, (1024, 2048) if quick else (2048, 4096))
        report["peak_flop_per_s"] = dict(bench.peak)
        if "step" in sections:
            for name in presets:
                c, grid = MODELS[name], GRIDS[name]
                for dtype in dtypes:
                    for b in batches:
                        report["step"].append(bench_step(bench, "prior", name, c, grid, dtype, b))
                        if not args.no_vanilla:
                            report["step"].append(bench_step(bench, "vanilla", name, vanilla_config(c), grid, dtype, b))
        if "sample" in sections and sample_preset is not None:
            c, grid = MODELS[sample_preset], GRIDS[sample_preset]
            rows = bench_sample(bench, sample_preset, c, grid, DECODERS.get(sample_preset), sample_steps)
            if args.compile:
                rows += bench_sample(bench, sample_preset, c, grid, DECODERS.get(sample_preset), sample_steps,
                                     compiled=True)
            vq = DECODERS.get(sample_preset)
            for r in rows:
                r["output"] = (f"{grid[0] * vq.factor}x{grid[1] * vq.factor}" if vq is not None
                               else f"{grid[0]}x{grid[1]}")
            report["sample"] = rows
        if "ar" in sections:
            for name in presets:
                for b in batches:
                    report["ar"].append(bench_ar(bench, name, MODELS[name], GRIDS[name], b))
        if "train" in sections:
            tb = args.train_batch or (2 if quick else 8)
            for name in presets:
                report["train"].append(bench_train(bench, name, MODELS[name], GRIDS[name], tb, args.unroll))
        if vqgan_run is not None:
            vq = vqgan_section(bench, vqgan_name, vqgan_run, codec_cases, args.vqgan_image)
            report["vqgan_train"], report["vqgan_codec"] = vq["train"], vq["codec"]
        if "sampler" in sections:
            for dtype in dtypes:
                report["sampler"] += bench_sampler(bench, sampler_preset, GRIDS[sampler_preset],
                                                   MODELS[sampler_preset].vocab_size, dtype)
        report["ratios"] = ratios(report)
        report["environment"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
        report["max_rss_mb"] = round(max_rss_bytes() / 2**20, 1)
        report["wall_s"] = round(time.perf_counter() - start_wall, 1)
        report["targets"] = targets(report)
        out = Path(args.out)
        text = markdown(report)
        atomic_write(out / "bench.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
        atomic_write(out / "bench.md", lambda tmp: Path(tmp).write_text(text))
        print(text)
        print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
        return 0

    return run_guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
