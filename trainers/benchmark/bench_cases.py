"""The benchmark's prior cases: one denoising step (and a vanilla transformer's), a full sample
with its decode, AR generation, prior training steps, and the sampler's proposal draw against
torch's Categorical and Gumbel-max."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from einops import rearrange
from torch.distributions import Categorical

from sundae_core.config import HourglassConfig, VQGANConfig
from sundae_core.cpu_memory import reuse_freed_memory
from sundae_core.hourglass import HourglassTransformer, flops
from sundae_core.models import for_inference
from sundae_core.presets import MEGAPIXEL_VQGAN, PRESET_GRIDS, PRESETS
from sundae_core.sampler import (SamplerSettings, denoise_step, model_logits_fn, random_tokens, sample,
                                 sample_categorical)
from sundae_core.unroll import unrolled_loss

from .bench_ar import ARDecoder, ar_flops, decoder_flops
from .bench_timing import (DTYPES, Bench, MemoryProbe, build, measure_peak, outside_share, repeats_for, sync,
                           time_runs, training_precision, warm_up)
from .bench_vqgan import TINY_VQGAN, build_inference_vqgan

# A model small enough for tests and smoke runs; not a paper configuration.
TINY = HourglassConfig(vocab_size=64, dim=32, heads=2, depth=(1, 2, 1))
MODELS = {**PRESETS, "tiny": TINY}
GRIDS = {**PRESET_GRIDS, "tiny": (8, 8)}
# The decoder each preset's full sample is decoded with (the taming f = 16 VQ-GAN for the 256 px
# presets, the paper's f = 32 model for FFHQ1024; MNIST-style priors model pixels directly).
DECODERS = {"ffhq1024": MEGAPIXEL_VQGAN, "ffhq256": VQGANConfig(), "celeba": VQGANConfig(),
            "imagenet": VQGANConfig(), "tiny": TINY_VQGAN}
SAMPLER_TAU = 0.8  # a temperature other than 1: every method pays for the division, as in sampling


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
                 vq: VQGANConfig | None, steps_list: tuple[int, ...], peak_flop_per_s: float,
                 compiled: bool = False, profile: bool = True) -> list[dict]:
    """Full samples at batch 1 in the compute dtype (bench.compute, as models load) at torch's
    current thread count: T prior steps + decode, each stage and the whole against its FLOP floor at
    `peak_flop_per_s` (the compute dtype's matmul peak measured at this thread count). compiled: the
    prior runs through torch.compile, the decoder stays eager as in the CLIs
    (sundae_core/compiled.py); the compile happens in the first (warm-up) call and is reported, not
    timed. profile: after the timed runs, one profiled prior step (`denoise_step`, proportion 0.5,
    through the same logits function) and one profiled decode give the share of self CPU time
    outside matmul, convolution and attention kernels (bench_timing.outside_share)."""
    dev = bench.device
    prior_f = flops(config, 1, *grid)
    dec_f = decoder_flops(vq, *grid) if vq is not None else 0
    floor = lambda f: f / peak_flop_per_s if peak_flop_per_s and f else None
    over = lambda seconds, bound: seconds / bound if bound else None
    rows = []
    with MemoryProbe(dev) as mem:
        torch.manual_seed(0)
        prior = for_inference(HourglassTransformer(config), dev, bench.compute_dtype)  # as loaded
        vqgan = build_inference_vqgan(vq, dev, bench.compute_dtype) if vq is not None else None
        logits_fn = model_logits_fn(prior, compile=compiled)
        decode = None if vqgan is None else vqgan.decode  # eager in both modes (compiled.py)

        def run(steps: int) -> tuple[float, float]:
            g = torch.Generator(dev).manual_seed(0)
            start = time.perf_counter()
            # one memory scope around sampling and decoding, as sundae-run runs a workflow
            # (graph/execute.py): the decode reuses the sampler's freed memory. Inside ComfyUI each
            # node has its own scope, so there the decode faults its memory in anew (README)
            with torch.inference_mode(), reuse_freed_memory():
                z = random_tokens(1, *grid, config.vocab_size, generator=g, device=dev)
                out = sample(logits_fn, z, SamplerSettings(steps=steps, self_stop=False), generator=g)
                sync(dev)
                mid = time.perf_counter()
                if decode is not None:
                    decode(out.tokens)
                sync(dev)
            return mid - start, time.perf_counter() - mid

        warm_start = time.perf_counter()
        run(2)  # warm-up: the same path (sampler, both networks) at two steps; compiles if compiled
        warm_s = time.perf_counter() - warm_start
    threads = torch.get_num_threads()
    for steps in steps_list:
        parts = [run(steps) for _ in range(max(1, bench.long_repeats))]
        totals = [a + b for a, b in parts]
        i = totals.index(statistics.median_low(totals))
        median = statistics.median(totals)
        total_f = steps * prior_f + dec_f
        prior_bound, decode_bound, bound = floor(steps * prior_f), floor(dec_f), floor(total_f)
        row = {"case": "sample", "model": model_name, "grid": list(grid), "steps": steps, "batch": 1,
               "dtype": bench.compute, "decoder": "pixels" if vq is None else f"f={vq.factor} ch={vq.ch}",
               "mode": "compiled" if compiled else "eager", "threads": threads, "peak_flop_per_s": peak_flop_per_s,
               "warm_up_s": warm_s, "median_s": median, "min_s": min(totals), "runs": [round(x, 4) for x in totals],
               "prior_s": parts[i][0], "decode_s": parts[i][1], "flops": total_f, "prior_flops": steps * prior_f,
               "decode_flops": dec_f, "flop_per_s": total_f / median,
               "frac_peak": round(total_f / median / peak_flop_per_s, 4) if peak_flop_per_s else None,
               "bound_s": bound, "prior_bound_s": prior_bound, "decode_bound_s": decode_bound,
               "over_bound": over(median, bound), "prior_over_bound": over(parts[i][0], prior_bound),
               "decode_over_bound": over(parts[i][1], decode_bound), "peak_mem_mb": mem.mb}
        rows.append(row)
        bench.log(f"sample {model_name} {row['mode']} {threads} threads T={steps}: {median:.2f} s "
                  f"(prior {row['prior_s']:.2f} s, decode {row['decode_s']:.2f} s), "
                  f"{row['over_bound'] or 0:.2f}x the FLOP floor")
    if profile and dev.type == "cpu":
        g = torch.Generator(dev).manual_seed(0)
        with torch.inference_mode():  # as in run(): a compiled graph would recompile for other tokens
            z = random_tokens(1, *grid, config.vocab_size, generator=g, device=dev)
            shares = {"prior_outside_share": outside_share(
                lambda: denoise_step(logits_fn, z, generator=g, temperature=1.0, proportion=0.5))}
            if decode is not None:
                shares["decode_outside_share"] = outside_share(lambda: decode(z))
        for row in rows:
            row.update(shares)
        bench.log(f"sample {model_name} {rows[0]['mode']} {threads} threads, self time outside mm/conv/attn: "
                  + ", ".join(f"{k.split('_')[0]} {100 * v:.0f} %" for k, v in shares.items()))
    del prior, vqgan
    return rows


def sample_section(bench: Bench, model_name: str, config: HourglassConfig, grid: tuple[int, int],
                   vq: VQGANConfig | None, steps_list: tuple[int, ...], threads: tuple[int, ...],
                   peak_sizes: tuple[int, ...], compiled: bool = False, profile: bool = True) -> list[dict]:
    """bench_sample at each thread count (eager, then compiled if asked), each case right after a
    matmul peak in the compute dtype measured at that thread count (bench_timing.measure_peak over
    peak_sizes)."""
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        for mode_compiled in (False, True) if compiled else (False,):
            peak = measure_peak(bench, peak_sizes, (bench.compute,))[0][bench.compute]
            rows += bench_sample(bench, model_name, config, grid, vq, steps_list, peak, compiled=mode_compiled,
                                 profile=profile)
    for r in rows:
        r["output"] = f"{grid[0] * vq.factor}x{grid[1] * vq.factor}" if vq is not None else f"{grid[0]}x{grid[1]}"
    return rows


def bench_ar_generation(bench: Bench, model_name: str, config: HourglassConfig, grid: tuple[int, int],
                        batch: int) -> dict:
    """The AR baseline generating the grid token by token, with the prior's width, heads and depth."""
    dev = bench.device
    n = grid[0] * grid[1]
    g = torch.Generator(dev).manual_seed(0)
    with MemoryProbe(dev) as mem:
        model = build(lambda: ARDecoder(config.vocab_size, config.dim, config.heads, config.depth_levels().total, n,
                                        config.mlp_ratio), dev, bench.compute_dtype)
        model.generate(batch, steps=min(n, 16), generator=g)  # warm-up; the cache is allocated in full
    t = time_runs(lambda: model.generate(batch, generator=g), dev, bench.long_repeats)
    del model
    f = ar_flops(config, batch, n)
    row = {"case": "ar", "model": model_name, "grid": list(grid), "dtype": bench.compute, "batch": batch,
           "layers": config.depth_levels().total, "tokens": n, "median_s": t.median_s, "min_s": t.min_s,
           "runs": t.runs, "tokens_per_s": batch * n / t.median_s, "flops": f, "flop_per_s": f / t.median_s,
           "frac_peak": bench.fraction(f / t.median_s), "peak_mem_mb": mem.mb}
    bench.log(f"ar {model_name} b{batch}: {t.median_s:.2f} s for {n} tokens, {mem.mb} MB")
    return row


def bench_train(bench: Bench, model_name: str, config: HourglassConfig, grid: tuple[int, int], batch: int,
                unroll: int) -> dict:
    """Training steps as the prior trainer runs them: bf16 autocast (fp32 on a CPU without bf16
    kernels, as the trainer falls back), fp32 weights, AdamW, clipping."""
    dev = bench.device
    g = torch.Generator(dev).manual_seed(0)
    with MemoryProbe(dev) as mem:
        torch.manual_seed(0)
        model = HourglassTransformer(config).to(dev).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        tokens = random_tokens(batch, *grid, config.vocab_size, generator=g, device=dev)
        logits_fn = model_logits_fn(model)

        def step() -> None:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bench.compute == "bf16"):
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
    row = {"case": "train", "model": model_name, "grid": list(grid), "dtype": training_precision(bench.compute),
           "batch": batch,
           "unroll": unroll, "median_s": t.median_s, "min_s": t.min_s, "runs": t.runs,
           "tokens_per_s": batch * grid[0] * grid[1] / t.median_s, "flops": model_f,
           "flop_per_s": model_f / t.median_s, "mfu": bench.fraction(model_f / t.median_s), "peak_mem_mb": mem.mb}
    bench.log(f"train {model_name} b{batch}: {t.median_s:.2f} s/step, MFU {100 * (row['mfu'] or 0):.1f} %, "
              f"{mem.mb} MB")
    return row


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
