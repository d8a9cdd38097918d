"""The arithmetic of scripts/train_prior_gpu.sh: runs sized to a wall-clock budget, and which run won.

    python -m trainers.training.time_budget rate [--since EPOCH] RUN_DIR... -> "STEP_S FIRST_S"
    python -m trainers.training.time_budget steps LEFT STEP_S FIRST_S -> the step count for each run
    python -m trainers.training.time_budget best RUN_DIR...          -> the run with the lowest held-out loss
    python -m trainers.training.time_budget kept RUN_DIR COUNT       -> earlier kept models to bring back

Every figure comes from the trainer's own log.jsonl (one JSON object per line: training rows carry
"step_seconds", validation rows "val_loss", the first row the time to the first step).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sundae_core.checkpoint import read_metadata
from sundae_core.cli import run_guarded
from sundae_core.errors import CheckpointError, InputError

from .run_folder import read_log
from .run_state import kept_models

# seconds kept for validation, the sample grids and checkpoints of a budgeted run, and the share of
# the rest that is spent (the 5 % left over covers a step time that grows after the probe)
RESERVE_S, SPEND = 20.0, 0.95
MIN_STEPS = 100  # fewer than this would end before the first validation (every 250 steps) matters


def probe_rate(rows: list[dict], after_step: int = 10, wall_s: float | None = None) -> tuple[float, float]:
    """(wall seconds per step from the first training row at or after `after_step` to the last,
    seconds to the first step). Wall time, not the logged step_seconds: it counts data loading and
    logging too, which is what a budget pays for.

    The seconds to the first step are read from its own row (a compiled run logs one), else from
    the first training row less the steps before it; never from the log's first row, which may be
    the data's step-0 figures written before any step. `wall_s`, the probe process's whole wall
    time, also counts what the log cannot see (importing torch, starting CUDA, loading the models,
    the closing validation, sample grid and checkpoint): the probe's time less its steady steps."""
    steps = [r for r in rows if "step_seconds" in r]
    start = next((r for r in steps if r["step"] >= after_step), None)
    if start is None or steps[-1]["step"] == start["step"]:
        raise InputError(f"the probe logged no training steps after step {after_step}: give it more steps "
                         "(train.steps) or log them more often (train.log_every)")
    rate = (steps[-1]["time"] - start["time"]) / (steps[-1]["step"] - start["step"])
    first = next((r for r in rows if "first_step_seconds" in r), None)
    first_s = first["time"] if first else steps[0]["time"] - (steps[0]["step"] - 1) * rate
    if wall_s is not None:
        first_s = max(first_s, wall_s - (steps[-1]["step"] - 1) * rate)
    return rate, first_s


def budget_steps(left_s: float, step_s: float, first_s: float) -> int:
    """Steps that fit in `left_s` seconds after `first_s` to the first step, at `step_s` each."""
    if step_s <= 0:
        raise InputError(f"a step time must be positive, got {step_s}")
    return max(MIN_STEPS, int(SPEND * (left_s - first_s - RESERVE_S) / step_s))


def final_validation(run_dir: str | Path) -> dict[str, float]:
    """The last logged value of each validation figure (val_loss, val_hole_top1) of a run that
    left weights; {} for a run without weights or a log."""
    if not (Path(run_dir) / "model.safetensors").is_file() or not (Path(run_dir) / "log.jsonl").is_file():
        return {}
    return {key: row[key] for row in read_log(run_dir) for key in ("val_loss", "val_hole_top1") if key in row}


def best_run(run_dirs: list[str]) -> tuple[str | None, dict[str, dict[str, float]]]:
    """(the run with the lowest final held-out loss or None, every scored run's final figures)."""
    finals = {run: final for run in run_dirs if "val_loss" in (final := final_validation(run))}
    return (min(finals, key=lambda run: finals[run]["val_loss"]) if finals else None), finals


def model_step(path: Path) -> int | None:
    """The step a model file says it was written at, None when it cannot say (missing, damaged,
    or without a step in its metadata)."""
    try:
        return int(read_metadata(path)["step"])
    except (CheckpointError, KeyError, ValueError):
        return None


def earlier_kept(run_dir: str | Path, count: int) -> list[Path]:
    """Up to `count` of a run's kept models (train.keep_every), the latest ones, oldest first, leaving
    out the step its model.safetensors holds (that one comes back anyway). The held-out loss does
    not judge a generator (session 11) and a fixed budget may overfit before its end, so the steps
    come back for sundae-eval-default to choose among on the CPU."""
    final = model_step(Path(run_dir) / "model.safetensors")
    earlier = [path for step, path in kept_models(Path(run_dir)).items() if step != final]
    return earlier[-count:] if count > 0 else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.training.time_budget", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rate = sub.add_parser("rate", help="the slowest probe's seconds per step and to the first step")
    rate.add_argument("runs", nargs="+")
    rate.add_argument("--since", type=float, help="when the probes were launched (seconds since the epoch, "
                      "`date +%%s`): their wall time counts their start-up too")
    steps = sub.add_parser("steps", help="steps per run that fit the seconds left")
    steps.add_argument("left", type=float)
    steps.add_argument("step_s", type=float)
    steps.add_argument("first_s", type=float)
    best = sub.add_parser("best", help="the run with the lowest final held-out loss (empty if none)")
    best.add_argument("runs", nargs="+")
    kept = sub.add_parser("kept", help="up to COUNT kept models besides the final one, one path a line")
    kept.add_argument("run")
    kept.add_argument("count", type=int)
    args = parser.parse_args(argv)

    def body() -> int:
        if args.command == "rate":  # runs at once share the GPU: the slowest sets the pace
            wall_s = None if args.since is None else time.time() - args.since
            rates = [probe_rate(read_log(run), wall_s=wall_s) for run in args.runs]
            print(max(r for r, _ in rates), max(f for _, f in rates))
        elif args.command == "steps":
            print(budget_steps(args.left, args.step_s, args.first_s))
        elif args.command == "kept":
            for path in earlier_kept(args.run, args.count):
                print(path)
        else:
            winner, finals = best_run(args.runs)
            for run, final in finals.items():
                # the hole figure beside the loss: the loss alone misled in session 11
                hole = f", hole top-1 {final['val_hole_top1']:.4f}" if "val_hole_top1" in final else ""
                print(f"{Path(run).name}: final held-out loss {final['val_loss']:.4f}{hole}", file=sys.stderr)
            print(winner or "")
        return 0

    return run_guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
