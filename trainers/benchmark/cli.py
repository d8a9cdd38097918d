"""`sundae-bench`: speed of the SUNDAE prior against its baselines, measured in one run.

One command, one process, random weights (speed does not depend on training). Every case runs
in the compute dtype, the one models load in (models.inference_dtype): bf16, or fp32 on a CPU
without bf16 kernels (sundae_core/cpu_features.py), where bf16 would time torch's fallback loops;
the report names it. --threads takes
a comma list of torch CPU thread counts (default: torch's own, normally the machine's core count):
the sample section runs once at each, every other section at the first. Sections:
1. peak: the machine's matmul throughput in each of --dtypes (large square matmuls, measured in this
   run at the first thread count, so every utilisation figure is relative to what this machine did
   today);
2. step: one denoising step (network forward + the sampler) of each preset prior and of a
   vanilla transformer of the same total depth at full resolution, batch 1 and 8, in each of --dtypes;
   plus the sampler's own share (the step on cached logits);
3. sample: a full sample at batch 1 in the compute dtype at each thread count (row field `threads`): the prior
   for T steps (no self-stopping, so T is exact) and the VQ-GAN decode (the paper's f = 32
   megapixel decoder for FFHQ1024), each stage against its FLOP floor at the compute dtype's peak
   measured at that thread count just before the case (`peak_flop_per_s`): `prior_bound_s` = T x
   the prior forward's FLOPs / peak (`hourglass.flops`, the head at every position),
   `decode_bound_s` = the decoder's FLOPs / peak, `bound_s` their sum; `prior_over_bound`,
   `decode_over_bound` and `over_bound` (the whole sample) = measured / floor, the stages from the
   median run (`prior_s`, `decode_s`). Unless --no-profile, one profiled prior step (`denoise_step`
   through the sample's own logits function, proportion 0.5) and one profiled decode give
   `prior_outside_share` and `decode_outside_share`: the share of self CPU time outside matmul,
   convolution and attention kernels (bench_timing.FLOP_KERNELS; CPU only), the work compiling can
   fuse. --compile adds a compiled case per thread count (mode compiled); `warm_up_s` is the first
   call (2 steps and a decode; compiling, when compiled), never part of the timed figures;
4. ar: the reference approach, an autoregressive decoder-only transformer of the same width,
   heads and total depth generating the same token grid one token at a time with a KV cache,
   batch 1 and 8, compute dtype; SUNDAE / AR = SUNDAE sampling time at T / AR generation time;
5. train: prior training steps (bf16 autocast over fp32 weights, or fp32 where the compute dtype
   is, AdamW, clipping: what `sundae-train-prior` runs) with a 2-step unroll; MFU = 3 x forward
   FLOPs x unroll steps / step time / the compute dtype's peak.
6. vqgan: VQ-GAN training steps (`trainers.training.train_vqgan.train_step` past disc_start: the
   generator step with L1 + LPIPS + codebook loss + adaptive-weight PatchGAN term, then the
   discriminator step) at a run config's batch size and crop, bf16 autocast against fp32 (fp32
   alone where the compute dtype is), in images/s; and encode / decode of one 1024 x 1024 image
   (decoder weights in the compute dtype, inference_mode) by that
   config's model and by the paper's megapixel f = 32 VQ-GAN, with peak memory (issue 5: the
   megapixel decode must fit in 8 GB);
7. sampler: drawing one proposal per position over a preset's (tokens x vocabulary) logits
   (FFHQ1024: 1024 x 8192) with torch's Categorical, with our inverse-CDF `sample_categorical`
   and with Gumbel-max; and the whole sampler step (`denoise_step` on cached logits, proportion
   0.5), i.e. the cost that must be engineered (docs/architecture.md, "Sampler cost").

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

Modules: this CLI; bench_timing (timing and memory harness, matmul peak, profile share);
bench_ar (the vanilla and autoregressive baselines, FLOP formulas); bench_cases (the prior and
sampler cases); bench_vqgan (the VQ-GAN cases); bench_report (ratios, tables, targets).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from sundae_core.checkpoint import atomic_write
from sundae_core.cli import cpu_name, doc_summary, run_guarded, write_json_report
from sundae_core.errors import InputError

from .bench_ar import vanilla_config
from .bench_cases import (DECODERS, GRIDS, MODELS, bench_ar_generation, bench_sampler, bench_step, bench_train,
                          sample_section)
from .bench_report import markdown, ratios, targets
from .bench_timing import DTYPES, Bench, compute_dtype, max_rss_bytes, measure_peak
from .bench_vqgan import VQGAN_CODECS, codec_models, vqgan_run_config, vqgan_section

SECTIONS = ("step", "sample", "ar", "train", "vqgan", "sampler")


def _names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise InputError(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    return names


def positive_ints(text: str, flag: str) -> tuple[int, ...]:
    """'1,2' -> (1, 2): the parse rule of every comma-list count flag (--threads, --batches, ...) of
    sundae-bench and sundae-bench-train; anything else is an InputError naming the flag."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise InputError(f"{flag} takes whole numbers >= 1 separated by commas (e.g. 1,2), got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sundae-bench", description=doc_summary(__doc__),
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
    p.add_argument("--dtypes", help="dtypes of the step section and of the sampler's logits (default bf16,fp32; "
                                    "fp32 alone on a CPU without bf16 kernels, where bf16 runs ~300x slower)")
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
                        "compiler; compiling takes minutes and is reported as the first call, not timed)")
    p.add_argument("--no-profile", action="store_true",
                   help="skip the sample section's profiled prior step and decode (the shares of time "
                        "outside matmul, convolution and attention kernels)")
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
    p.add_argument("--threads",
                   help="torch CPU thread counts, comma-separated (e.g. 1,2): the sample section runs once "
                        "at each, the other sections at the first (default: torch's choice, normally the "
                        "machine's core count)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--out", default="runs/bench", help="folder for bench.json and bench.md")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        start_wall = time.perf_counter()
        threads = positive_ints(args.threads, "--threads") if args.threads is not None else (torch.get_num_threads(),)
        torch.set_num_threads(threads[0])
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda but no CUDA device is available")
        quick = args.quick
        presets = _names(args.presets, "preset")
        sections = {s.strip() for s in args.sections.split(",") if s.strip()}
        bad = sections - set(SECTIONS)
        if bad:
            raise InputError(f"unknown section(s) {', '.join(sorted(bad))}; choose from {', '.join(SECTIONS)}")
        compute = compute_dtype(device)
        dtype_list = args.dtypes if args.dtypes is not None else ("bf16,fp32" if compute == "bf16" else "fp32")
        dtypes = [d.strip() for d in dtype_list.split(",") if d.strip()]
        if not dtypes or any(d not in DTYPES for d in dtypes):
            raise InputError(f"--dtypes must name some of {', '.join(DTYPES)}, got {dtype_list!r}")
        batches = positive_ints(args.batches, "--batches")
        sample_steps = positive_ints(args.sample_steps or ("20,10" if quick else "100,50"), "--sample-steps")
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
                      long_repeats=args.long_repeats or (1 if quick else 3), budget_s=args.case_budget,
                      compute=compute)
        report = {"environment": {"device": str(device), "threads": list(threads), "cores": os.cpu_count(),
                                  "torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_name(),
                                  "compute_dtype": compute,
                                  "command": "sundae-bench " + " ".join(sys.argv[1:] if argv is None else argv),
                                  "load_before": [round(x, 2) for x in os.getloadavg()]},
                  "settings": {"quick": quick, "presets": presets, "sections": sorted(sections), "dtypes": dtypes,
                               "batches": list(batches), "sample_steps": list(sample_steps),
                               "sample_preset": sample_preset, "repeats": bench.repeats,
                               "long_repeats": bench.long_repeats, "unroll": args.unroll,
                               "vqgan_config": args.vqgan_config, "vqgan_models": codecs,
                               "vqgan_image": args.vqgan_image, "sampler_preset": sampler_preset,
                               "compile": args.compile, "profile": not args.no_profile},
                  "step": [], "sample": [], "ar": [], "train": [], "vqgan_train": [], "vqgan_codec": [],
                  "sampler": []}
        peak_sizes = (1024, 2048) if quick else (2048, 4096)
        bench.peak, report["peak"] = measure_peak(bench, peak_sizes, tuple(dict.fromkeys([compute, *dtypes])))
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
            report["sample"] = sample_section(bench, sample_preset, MODELS[sample_preset], GRIDS[sample_preset],
                                              DECODERS.get(sample_preset), sample_steps, threads, peak_sizes,
                                              compiled=args.compile, profile=not args.no_profile)
            torch.set_num_threads(threads[0])  # the later sections run at the first count
        if "ar" in sections:
            for name in presets:
                for b in batches:
                    report["ar"].append(bench_ar_generation(bench, name, MODELS[name], GRIDS[name], b))
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
        atomic_write(out / "bench.md", lambda tmp: Path(tmp).write_text(text))
        print(text)
        print(f"wrote {out / 'bench.md'}")
        write_json_report(out / "bench.json", report)
        return 0

    threads_before = torch.get_num_threads()
    try:
        return run_guarded(body)
    finally:
        torch.set_num_threads(threads_before)  # a caller in the same process (a test) keeps its own


if __name__ == "__main__":
    raise SystemExit(main())
