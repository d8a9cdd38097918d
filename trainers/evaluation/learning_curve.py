"""`sundae-learning-curve`: a prior run's learning curve from its log.jsonl, as a plot and a table.

    sundae-learning-curve ~/sundae/runs/prior_v2 --out docs/images/prior_learning_curve.png

Panels against training steps: training loss (the logged rows, averaged over each validation
interval), held-out unrolled loss, held-out block loss (every sample a filled hole) and first-step
training accuracy. The Markdown table printed beside it adds the wall-clock minutes of the run
(the log's `time`, which restarts at 0 when a run resumes, so minutes are summed per stretch) and
the step minutes: each logged step's time times the steps since the previous row, i.e. the time
spent in training steps only, without validations, sample grids, compiles, and pauses (a run
stopped with `kill -STOP` while a timing ran) that wall-clock minutes include.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sundae_core import bounded_json
from sundae_core.cli import run_guarded
from sundae_core.errors import InputError
from sundae_core.grid import save_png

from .line_plot import Panel, draw_panels


def read_log(run_dir: Path) -> list[dict]:
    path = run_dir / "log.jsonl"
    if not path.is_file():
        raise InputError(f"{run_dir} has no log.jsonl: give a prior run folder")
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = bounded_json.loads(line)
        except ValueError:
            continue  # a torn last line of a killed run
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def curve(rows: list[dict]) -> list[dict]:
    """One point per validation: step, minutes so far, mean training loss / accuracy since the
    previous validation, held-out loss and block loss."""
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
            points.append({"step": row["step"], "minutes": round(minutes, 1),
                           "step_minutes": round(step_minutes, 1), "train_loss": round(mean("loss"), 4),
                           "train_accuracy": round(mean("accuracy"), 4), "val_loss": round(row["val_loss"], 4),
                           "val_block_loss": round(row.get("val_block_loss", float("nan")), 4)})
            window = []
    return points


def markdown(points: list[dict]) -> str:
    lines = ["| step | wall minutes | step minutes | training loss | training accuracy | held-out loss | "
             "held-out block loss |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {p['step']} | {p['minutes']} | {p['step_minutes']} | {p['train_loss']:.3f} | {p['train_accuracy']:.3f} | "
              f"{p['val_loss']:.3f} | {p['val_block_loss']:.3f} |" for p in points]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sundae-learning-curve", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a prior run folder (holding log.jsonl)")
    parser.add_argument("--out", default="learning_curve.png", help="where the plot goes (PNG)")
    args = parser.parse_args(argv)

    def body() -> int:
        points = curve(read_log(Path(args.run_dir)))
        if not points:
            raise InputError(f"{args.run_dir}/log.jsonl has no validation rows yet")
        steps = [p["step"] for p in points]
        panels = [Panel(title, steps, [p[key] for p in points], xlabel="step")
                  for title, key in (("training loss", "train_loss"), ("held-out loss", "val_loss"),
                                     ("held-out block loss", "val_block_loss"),
                                     ("training accuracy (step 1)", "train_accuracy"))]
        save_png(draw_panels(panels, title=f"learning curve of {Path(args.run_dir).name}"), Path(args.out))
        print(markdown(points))
        print(f"wrote {args.out}")
        return 0

    return run_guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
