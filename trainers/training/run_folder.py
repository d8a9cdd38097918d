"""A training run's folder: config.yaml, state.safetensors (resume), model.safetensors (use),
log.jsonl (metrics), samples/*.png (grids). Shared by both trainers."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import yaml

from sundae_core import bounded_json
from sundae_core.checkpoint import atomic_write
from sundae_core.cli import run_guarded
from sundae_core.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from sundae_core.models import check_model_size

from . import distributed as dist


def resolve_config(cls, config_path: str | None, run_dir: Path, overrides: list[str]):
    """A new run takes --config (+ --set); a resumed run re-reads its own config.yaml. A model
    section over the size ceiling (sundae_core.limits) is refused before anything is built."""
    config = _read_config(cls, config_path, run_dir, overrides)
    check_model_size(config.model, "the config's model section")
    return config


def _read_config(cls, config_path: str | None, run_dir: Path, overrides: list[str]):
    saved = run_dir / "config.yaml"
    if saved.is_file():
        # The saved config already holds the first run's --set values, so compare with overrides
        # applied to both: re-running the same command (or extending train.steps) resumes.
        config = apply_overrides(load_yaml(saved, cls), overrides)
        if config_path and to_dict(apply_overrides(load_yaml(config_path, cls), overrides)) != to_dict(config):
            raise ConfigError(f"{run_dir} already holds a run with another config; resume it without "
                              "--config or choose a new --run-dir")
        return config
    if config_path:
        config = load_yaml(config_path, cls)
    else:
        config = from_dict(cls, {})
    return apply_overrides(config, overrides) if overrides else config


def write_config(run_dir: Path, config) -> None:
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    atomic_write(run_dir / "config.yaml", lambda tmp: Path(tmp).write_text(text))


class MetricLog:
    """log.jsonl, one JSON row per write. A resumed run passes the step its checkpoint holds, so
    the rows a killed run logged past that checkpoint (and a torn last line) are dropped before
    those steps are logged again; only the main process rewrites the file."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.path = run_dir / "log.jsonl"
        self.start = time.time()
        if resume_step is not None and dist.is_main():
            trim_log(self.path, resume_step)

    def write(self, step: int, **metrics: Any) -> None:
        row = {"step": step, "time": round(time.time() - self.start, 2)}
        row.update({k: (round(float(v), 6) if isinstance(v, (int, float)) or hasattr(v, "item") else v)
                    for k, v in metrics.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def trim_log(path: Path, step: int) -> int:
    """Keep the rows of `path` up to `step` (rows that do not parse are dropped); returns how many
    rows were removed. The file is replaced atomically, so a kill meanwhile loses nothing."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    kept = [line for line in lines if (row_step := _row_step(line)) is not None and row_step <= step]
    if len(kept) < len(lines):
        text = "".join(line + "\n" for line in kept)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return len(lines) - len(kept)


def _row_step(line: str) -> int | None:
    try:
        row = bounded_json.loads(line)
    except ValueError:
        return None
    step = row.get("step") if isinstance(row, dict) else None
    return step if isinstance(step, int) else None


def trainer_main(argv: list[str] | None, description: str, config_cls, train, done: str) -> int:
    """The CLI both trainers share: --config/--run-dir/--set/--no-progress, resume by re-running.

    `train(config, run_dir, progress) -> Path`; `done` is printed before the written path.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML with model/data/train sections (new runs)")
    parser.add_argument("--run-dir", required=True, help="run folder; an existing one is resumed")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.steps=100 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    def body() -> int:
        run_dir = Path(args.run_dir)
        config = resolve_config(config_cls, args.config, run_dir, args.set)
        path = train(config, run_dir, progress=not args.no_progress)
        if dist.is_main():
            print(f"{done} {path}")
        return 0

    return run_guarded(body)
