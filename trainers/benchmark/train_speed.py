"""`sundae-bench-train`: how fast the prior trainer's own step runs on this machine, and why.

Times the step `sundae-train-prior` runs (trainers/training/prior_step.py: unrolled loss with the
run config's batch, unroll and block corruption, label dropout, backward, clipping, AdamW) on a run
config's model (default configs/prior_emoji.yaml, the shipped prior), with random tokens:
- eager and compiled (`train.compile`), in one process at each --threads count;
- with --ranks 2: torchrun with 2 ranks of one thread each, the global batch split between them
  and gradients averaged, as `torchrun ... train_prior` runs;
- MFU = FLOPs of one step (counted by torch's FlopCounterMode on the eager step: forward and
  backward, attention included) / step time / the matmul peak in the step's dtype (bf16 under
  `train.bf16`; fp32 on a CPU without bf16 kernels, where the trainer falls back to it) measured
  in this run at the same thread count;
- the share of a step's time outside matmul, convolution and attention kernels (torch profiler,
  self time; `bench_timing.outside_share`): the work compiling fuses.
With --device cuda the same step runs on a GPU: the peak is the GPU's bf16 matmul, measured in the
same run; the profile gives the share of the step's wall time the GPU is busy (the rest is the host
launching kernels or waiting on a sync) and, of the busy time, the share outside FLOP kernels; the
ops taking the most GPU time are listed. --threads and --ranks do not apply there.
The CPU (or GPU) model, torch version, thread counts and the load before and after go in the report.
Outputs in --out: train_speed.json and train_speed.md (the table; also printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from sundae_core.checkpoint import atomic_write
from sundae_core.cli import doc_summary, run_guarded, write_json_report
from sundae_core.config import apply_overrides, load_yaml
from sundae_core.errors import InputError
from sundae_core.hourglass import HourglassTransformer
from sundae_core.sampler import random_tokens

from ..training import distributed as dist
from ..training.device import autocast_bf16
from ..training.prior_step import make_optimizer, make_step_loss, train_step
from ..training.train_prior import PriorRunConfig
from .bench_timing import gpu_profile, matmul_peak, outside_share, time_runs, warm_up
from .cli import cpu_name, positive_ints


class Case:
    """One model, optimiser and batch, stepping exactly as the trainer does."""

    def __init__(self, config: PriorRunConfig, compile: bool, batch: int, grid: int = 32,
                 device: torch.device = torch.device("cpu")):
        tc, mc = config.train, config.model
        torch.manual_seed(0)
        self.device = device
        self.model = HourglassTransformer(mc).train().to(device)
        self.opt = make_optimizer(self.model, 1e-5, tc.weight_decay, tc.betas, fused=tc.fused_optimizer)
        self.step_loss = make_step_loss(self.model, bf16=tc.bf16, compile=compile)
        g = torch.Generator().manual_seed(0)
        self.tokens = random_tokens(batch, grid, grid, mc.vocab_size, generator=g).to(device)
        self.labels = torch.randint(0, mc.num_classes, (batch,), generator=g).to(device) if mc.num_classes else None
        self.noise = torch.Generator(device).manual_seed(1)
        self.tc = config.train

    def step(self) -> None:
        train_step(self.model, self.opt, self.step_loss, self.tokens, self.labels, self.tc, self.noise,
                   sync=dist.average_gradients)


def count_flops(case: Case) -> int:
    with FlopCounterMode(display=False) as counter:
        case.step()
    return counter.get_total_flops()


def time_case(case: Case, repeats: int) -> tuple[float, float]:
    """(first step seconds, including any compiling; median of `repeats` later steps), each
    synchronised with the device."""
    first = warm_up(case.step, case.device)
    warm_up(case.step, case.device)  # the optimiser state and allocator settle
    return first, time_runs(case.step, case.device, repeats).median_s


# The matmul every MFU is taken against: (n, best of runs) on each kind of device
PEAK_MATMUL = {"cpu": (4096, 12), "cuda": (8192, 20)}


def peak_dtype(config: PriorRunConfig) -> str:
    return "bf16" if config.train.bf16 else "fp32"


def run_case(config: PriorRunConfig, compile: bool, threads: int, repeats: int, flops: int | None,
             profile_share: bool, device: torch.device = torch.device("cpu"),
             peak_matmul: tuple[int, int] | None = None) -> dict:
    torch.set_num_threads(threads)
    n, runs = peak_matmul or PEAK_MATMUL[device.type]
    peak = matmul_peak(threads, n, runs, device, peak_dtype(config))
    case = Case(config, compile, config.train.batch_size, device=device)
    first, median = time_case(case, repeats)
    flops = flops or count_flops(Case(config, False, config.train.batch_size, device=device))
    row = {"mode": "compiled" if compile else "eager", "processes": 1, "threads": threads,
           "batch": config.train.batch_size, "first_step_s": round(first, 2), "step_s": round(median, 3),
           "images_per_s": round(config.train.batch_size / median, 2), "flops_per_step": flops,
           "peak_flop_per_s": round(peak), "mfu": round(flops / median / peak, 4)}
    if profile_share and device.type == "cuda":
        row.update(gpu_profile(case.step, device))
    elif profile_share:
        row["outside_matmul_share"] = round(outside_share(case.step), 3)
    return row


def worker(config: PriorRunConfig, compile: bool, repeats: int, out: Path) -> None:
    """One torchrun rank: its share of the global batch, gradients averaged over ranks."""
    rank, world = dist.setup()
    torch.set_num_threads(1)
    peak = matmul_peak(1, dtype=peak_dtype(config)) if rank == 0 else 0.0
    dist.barrier()
    case = Case(config, compile, config.train.batch_size // world)
    first, median = time_case(case, repeats)
    if rank == 0:
        out.write_text(json.dumps({"first_step_s": first, "step_s": median, "peak_per_rank": peak}))
    dist.cleanup()


def run_ranks(args, config: PriorRunConfig, compile: bool, flops: int) -> dict:
    result = Path(args.out) / f".ranks_{'compiled' if compile else 'eager'}.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    # the workers step the config as overridden here (--set), not the file's
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.ranks),
               "-m", "trainers.benchmark.train_speed", "--worker", str(result), "--config", args.config,
               "--repeats", str(args.repeats), *(x for kv in args.set for x in ("--set", kv))]
    command += ["--compiled-worker"] if compile else []
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    got = json.loads(result.read_text())
    result.unlink()
    peak = got["peak_per_rank"] * args.ranks  # ranks run on their own cores
    b = config.train.batch_size
    return {"mode": "compiled" if compile else "eager", "processes": args.ranks, "threads": 1, "batch": b,
            "first_step_s": round(got["first_step_s"], 2), "step_s": round(got["step_s"], 3),
            "images_per_s": round(b / got["step_s"], 2), "flops_per_step": flops, "peak_flop_per_s": round(peak),
            "mfu": round(flops / got["step_s"] / peak, 4)}


def percent(row: dict, key: str) -> str:
    return f"{100 * row[key]:.0f} %" if key in row else "-"


def markdown(report: dict) -> str:
    env = report["environment"]
    where = env.get("gpu") or env["cpu"]
    lines = [f"Prior training step, `{report['config']}` (batch {report['batch']}, unroll {report['unroll']}, "
             f"block corruption {report['block_corruption']}), {where}, torch {env['torch']}",
             "", "| mode | processes x threads | step (s) | images/s | first step (s) | MFU | outside matmul+attention "
             "| GPU busy |", "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['mode']} | {r['processes']} x {r['threads']} | {r['step_s']:.3f} | {r['images_per_s']:.1f} | "
                     f"{r['first_step_s']:.1f} | {100 * r['mfu']:.1f} % | {percent(r, 'outside_matmul_share')} | "
                     f"{percent(r, 'gpu_busy_share')} |")
    for r in report["rows"]:
        if r.get("top_ops"):
            lines += ["", f"GPU time by op, {r['mode']} (self time of one step, ms):", "",
                      "| op | ms | share |", "|---|---|---|"]
            lines += [f"| `{op['op']}` | {op['ms']:.2f} | {100 * op['share']:.1f} % |" for op in r["top_ops"]]
    lines.append("")
    lines.append(f"FLOPs per step (counted): {report['rows'][0]['flops_per_step'] / 1e9:.0f} G; matmul peak "
                 f"({report.get('peak_dtype', 'bf16')}, {report['peak_matmul'][0]}^3, "
                 f"best of {report['peak_matmul'][1]}) measured beside each "
                 "case at its thread count; load before "
                 f"{env['load_before']}, after {env['load_after']}")
    return "\n".join(lines)


def bench_device(name: str) -> torch.device:
    if name not in ("cpu", "cuda"):
        raise InputError(f"--device takes cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: this torch sees no GPU (torch.cuda.is_available() is False); "
                         "run on a machine with one, or leave --device at cpu")
    return torch.device(name)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sundae-bench-train", description=doc_summary(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", default="configs/prior_emoji.yaml", help="prior run config (model + train sections)")
    p.add_argument("--threads", default="1,2", help="thread counts of the one-process cases (default 1,2)")
    p.add_argument("--modes", default="eager,compiled", help="eager and/or compiled (default both)")
    p.add_argument("--ranks", type=int, default=2, help="torchrun ranks of one thread each (0 = skip; default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per case after two warm-up steps (default 5)")
    p.add_argument("--no-profile", action="store_true", help="skip the profiled step (outside-matmul share)")
    p.add_argument("--device", default="cpu", help="cpu or cuda: where the step runs (default cpu)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, as the trainer's --set (e.g. train.batch_size=256)")
    p.add_argument("--out", default="runs/bench_train", help="folder for train_speed.json and .md")
    p.add_argument("--peak-size", type=int,
                   help="side of the square matmul whose best time is the MFU's peak (default 4096 on a CPU, "
                        "8192 on a GPU; smaller runs sooner and may read a lower peak)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--compiled-worker", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        config = apply_overrides(load_yaml(args.config, PriorRunConfig), args.set)
        device = bench_device(args.device)
        # as the trainer does: bf16 autocast falls back to fp32 on a CPU without bf16 kernels (the
        # torchrun workers' own notes go to their captured output)
        config = dataclasses.replace(config, train=dataclasses.replace(
            config.train, bf16=autocast_bf16(device, config.train.bf16)))
        if args.worker:
            worker(config, args.compiled_worker, args.repeats, Path(args.worker))
            return 0
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        if not modes or set(modes) - {"eager", "compiled"}:
            raise InputError(f"--modes takes eager and/or compiled, got {args.modes!r}")
        threads = positive_ints(args.threads, "--threads")
        if args.repeats < 1 or args.ranks < 0:
            raise InputError(f"--repeats must be >= 1 and --ranks >= 0, got {args.repeats} and {args.ranks}")
        tc = config.train
        report = {"config": args.config, "batch": tc.batch_size, "unroll": tc.unroll_steps,
                  "block_corruption": tc.block_corruption,
                  "environment": {"cpu": cpu_name(), "torch": torch.__version__, "cores": os.cpu_count(),
                                  "load_before": [round(x, 2) for x in os.getloadavg()]},
                  "rows": []}
        if args.peak_size is not None and args.peak_size < 64:
            raise InputError(f"--peak-size must be >= 64, got {args.peak_size}")
        report["peak_matmul"] = ((args.peak_size, PEAK_MATMUL[device.type][1]) if args.peak_size
                                 else PEAK_MATMUL[device.type])
        report["peak_dtype"] = peak_dtype(config)
        if device.type == "cuda":  # one process drives the GPU; its host thread count barely matters
            report["environment"]["gpu"] = torch.cuda.get_device_name(device)
            threads = [torch.get_num_threads()]
        flops = None
        for mode in modes:
            for n in threads:
                row = run_case(config, mode == "compiled", n, args.repeats, flops, not args.no_profile, device,
                               tuple(report["peak_matmul"]))
                flops = row["flops_per_step"]
                report["rows"].append(row)
                print(json.dumps(row), flush=True)
            if args.ranks > 1 and device.type == "cpu":
                report["rows"].append(run_ranks(args, config, mode == "compiled", flops))
                print(json.dumps(report["rows"][-1]), flush=True)
        report["environment"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
        out = Path(args.out)
        text = markdown(report)
        atomic_write(out / "train_speed.md", lambda tmp: Path(tmp).write_text(text))
        write_json_report(out / "train_speed.json", report)
        print(text)
        return 0

    return run_guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
