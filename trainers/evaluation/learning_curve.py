"""`sundae-learning-curve`: a prior run's learning curve from its log.jsonl, as a plot and a table.

    sundae-learning-curve ~/sundae/runs/prior_v2 --out docs/images/prior_learning_curve.png

Panels against training steps: training loss (the logged rows, averaged over each validation
interval), held-out unrolled loss, held-out block loss (every sample a filled hole) and first-step
training accuracy. The Markdown table printed beside it adds the wall-clock minutes of the run
(the log's `time`, which restarts at 0 when a run resumes, so minutes are summed per stretch) and
the step minutes: each logged step's time times the steps since the previous row, i.e. the time
spent in training steps only, without validations, sample grids, compiles, and pauses (a run
stopped with `kill -STOP` while a timing ran) that wall-clock minutes include.

The plot's axis is training samples seen (steps times the run's train.batch_size, from its
config.yaml), not steps: the campaign's CPU stretches step over 16 samples, a GPU stretch over
256, and only samples put them on one axis. Each point names the device its minutes were spent on.

A campaign outlives its run folders (a new machine starts without them, and the run goes on as a
fine-tune from the committed weights, its steps counted again from 0). So the curve's points are
kept in the repository (`--history docs/campaign/prior_curve.jsonl`, one point per line): the run
given continues that history from `--from-step` (default: the history's last step), its steps and
minutes shifted to follow it, and `--save-history` writes the joined points back for the next
session.

    sundae-learning-curve ~/sundae/runs/prior_v3 --history docs/campaign/prior_curve.jsonl \
        --from-step 3470 --save-history docs/campaign/prior_curve.jsonl --out docs/images/prior_learning_curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from sundae_core import bounded_json
from sundae_core.checkpoint import atomic_write
from sundae_core.cli import doc_summary, run_guarded
from sundae_core.errors import InputError
from sundae_core.grid import save_png

from ..training.run_folder import read_log
from .line_plot import Panel, draw_panels


def read_run_settings(run_dir: Path) -> tuple[int, str]:
    """(train.batch_size, train.device) of a run folder's config.yaml."""
    path = run_dir / "config.yaml"
    try:
        train = (yaml.safe_load(path.read_text()) or {}).get("train", {})
        return int(train["batch_size"]), str(train.get("device", "cpu"))
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError):
        raise InputError(f"{path}: missing or without train.batch_size; give a prior run folder") from None


def curve(rows: list[dict], batch_size: int = 16, device: str = "cpu") -> list[dict]:
    """One point per validation: step, training samples seen (step x batch_size), minutes so far
    (on `device`), mean training loss / accuracy since the previous validation, held-out loss and
    block loss."""
    points, minutes, last_time, window = [], 0.0, 0.0, []
    step_minutes, last_step = 0.0, 0
    for row in rows:
        if "step_seconds" in row:
            step_minutes += max(0, row["step"] - last_step) * float(row["step_seconds"]) / 60
            last_step = row["step"]
        time = float(row.get("time", 0.0))
        if time < last_time:  # a resumed run's clock starts again at 0
            last_time = 0.0
        minutes += (time - last_time) / 60
        last_time = time
        if "loss" in row:
            window.append(row)
        if "val_loss" in row:
            mean = lambda key: sum(r[key] for r in window) / len(window) if window else float("nan")
            points.append({"step": row["step"], "samples": row["step"] * batch_size, "device": device,
                           "minutes": round(minutes, 1),
                           "step_minutes": round(step_minutes, 1), "train_loss": round(mean("loss"), 4),
                           "train_accuracy": round(mean("accuracy"), 4), "val_loss": round(row["val_loss"], 4),
                           "val_block_loss": round(row.get("val_block_loss", float("nan")), 4)})
            window = []
    return points


POINT_KEYS = ("step", "minutes", "step_minutes", "train_loss", "train_accuracy", "val_loss", "val_block_loss")
# Points written before samples were counted are the CPU campaign's, every step of 16 samples.
OLD_BATCH_SIZE = 16
SAVED_KEYS = POINT_KEYS + ("samples", "device")


def read_history(path: Path) -> list[dict]:
    """The campaign's earlier points (`curve`'s dicts, one JSON object per line), in step order."""
    if not path.is_file():
        raise InputError(f"--history {path}: no such file; leave --history out to start a new curve")
    points = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            point = bounded_json.loads(line)
        except ValueError as err:
            raise InputError(f"--history {path}, line {number}: not JSON ({err})") from None
        missing = [k for k in POINT_KEYS if not isinstance(point, dict) or k not in point]
        if missing:
            raise InputError(f"--history {path}, line {number}: lacks {', '.join(missing)}")
        points.append({"samples": point["step"] * OLD_BATCH_SIZE, "device": "cpu", **point})
    if [p["step"] for p in points] != sorted(p["step"] for p in points):
        raise InputError(f"--history {path}: steps are not in increasing order")
    return points


def start_step(history: list[dict], from_step: int | None) -> int:
    """The campaign step a continued run's step 0 is: --from-step, else the history's last step."""
    if from_step is not None:
        return from_step
    return history[-1]["step"] if history else 0


def continue_history(history: list[dict], points: list[dict], from_step: int | None) -> list[dict]:
    """History, then the run's points moved to follow it: a fine-tune's step s is campaign step
    from_step + s, and its samples and minutes add to the history's last. History points past
    from_step (a run that went on after the weights the fine-tune started from) are dropped."""
    start = start_step(history, from_step)
    kept = [p for p in history if p["step"] <= start]
    minutes = kept[-1]["minutes"] if kept else 0.0
    step_minutes = kept[-1]["step_minutes"] if kept else 0.0
    samples = kept[-1]["samples"] if kept else 0
    moved = [{**p, "step": p["step"] + start, "samples": p["samples"] + samples,
              "minutes": round(p["minutes"] + minutes, 1),
              "step_minutes": round(p["step_minutes"] + step_minutes, 1)} for p in points]
    return kept + moved


def markdown(points: list[dict]) -> str:
    lines = ["| step | samples (k) | device | wall minutes | step minutes | training loss | training accuracy | "
             "held-out loss | held-out block loss |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {p['step']} | {p['samples'] / 1000:.0f} | {p['device']} | {p['minutes']} | {p['step_minutes']} | "
              f"{p['train_loss']:.3f} | {p['train_accuracy']:.3f} | {p['val_loss']:.3f} | {p['val_block_loss']:.3f} |"
              for p in points]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sundae-learning-curve", description=doc_summary(__doc__))
    parser.add_argument("run_dir", help="a prior run folder (holding log.jsonl)")
    parser.add_argument("--out", default="learning_curve.png", help="where the plot goes (PNG)")
    parser.add_argument("--history", help="earlier points of the campaign (JSON lines) that this run continues")
    parser.add_argument("--from-step", type=int, help="the campaign step the run's step 0 continues from "
                        "(the step of the weights it was fine-tuned from; default: the history's last step)")
    parser.add_argument("--save-history", help="write the joined points here (JSON lines) for the next session")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.from_step is not None and args.from_step < 0:
            raise InputError(f"--from-step {args.from_step}: give a step >= 0")
        points = curve(read_log(Path(args.run_dir)), *read_run_settings(Path(args.run_dir)))
        if not points:
            raise InputError(f"{args.run_dir}/log.jsonl has no validation rows yet")
        heading = f"learning curve of {Path(args.run_dir).name}"
        if args.history or args.from_step is not None:
            history = read_history(Path(args.history)) if args.history else []
            points = continue_history(history, points, args.from_step)
            heading += f" from step {start_step(history, args.from_step)}" + (f", after {Path(args.history).name}" if args.history else "")
        if args.save_history:
            text = "".join(json.dumps({k: p[k] for k in SAVED_KEYS}) + "\n" for p in points)
            atomic_write(args.save_history, lambda tmp: Path(tmp).write_text(text))
        seen = [p["samples"] / 1000 for p in points]
        panels = [Panel(title, seen, [p[key] for p in points], xlabel="training samples seen (thousands, log)",
                        log_x=True)
                  for title, key in (("training loss", "train_loss"), ("held-out loss", "val_loss"),
                                     ("held-out block loss", "val_block_loss"),
                                     ("training accuracy (step 1)", "train_accuracy"))]
        save_png(draw_panels(panels, title=heading), Path(args.out))
        print(markdown(points))
        print(f"wrote {args.out}")
        return 0

    return run_guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
