"""A training run's folder: config.yaml, state.safetensors (resume), model.safetensors (use),
log.jsonl (metrics), samples/*.png (grids), the *.prev.safetensors of the checkpoint before the
newest (run_state.save_checkpoint_pair) and .lock (the pid of the trainer using it). Shared by
both trainers.

A run folder never loses work: the config and data path are checked before the folder is
touched, a folder that is not a run folder is refused, a model without a state to resume from is
never overwritten by a model trained from zero, and two trainers never share one folder.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import yaml

from sundae_core import bounded_json
from sundae_core.checkpoint import atomic_write, remove_stale_temporaries
from sundae_core.cli import WARNINGS, run_guarded
from sundae_core.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from sundae_core.errors import InputError
from sundae_core.models import check_model_size

from . import distributed as dist
from .config_ranges import check_run_config
from .run_state import has_state, kept_folder

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there go unlocked
    fcntl = None

LOCK_NAME = ".lock"
# The files a run writes through atomic_write (glob patterns), whose temporaries a killed run may
# leave behind: the only temporaries a resumed run deletes.
OWN_FILES = ("config.yaml", "state*.safetensors", "model*.safetensors", "log.jsonl")
OWN_SAMPLES = ("*.png",)  # in samples/
OWN_KEPT = ("model_*.safetensors",)  # in kept/ (train.keep_every)


def resolve_config(cls, config_path: str | None, run_dir: Path, overrides: list[str]):
    """A new run takes --config (+ --set); a resumed run re-reads its own config.yaml. A model
    section over the size ceiling (sundae_core.limits), a train/data value out of its range
    (config_ranges.py) or a missing data folder is refused before anything is built."""
    config = _read_config(cls, config_path, run_dir, overrides)
    check_model_size(config.model, "the config's model section")
    check_run_config(config)
    check_data_path(config.data.path)
    return config


def check_data_path(path: str) -> None:
    """Both trainers read a folder (images, or a latent dataset); the trainer itself checks what
    is inside it."""
    if not path:
        raise ConfigError("data.path is not set: give the dataset folder, e.g. --set data.path=data/emoji")
    if not Path(path).is_dir():
        raise ConfigError(f"data.path {path} is not a folder (set data.path to the dataset folder)")


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


def read_log(run_dir: str | Path) -> list[dict]:
    """The rows of a run folder's log.jsonl, each a dict with an integer "step". A last line cut
    short (a trainer killed mid-write, or stopped by `timeout`) is skipped; any other line that is
    not a row means the file was edited or damaged, and is refused by its number rather than
    silently left out of a figure."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise InputError(f"{run_dir} has no log.jsonl: give a training run folder (a run that never "
                         "logged has none; see its output)")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        row = _parse_row(line)
        if row is None:
            if number == len(lines):
                break
            raise InputError(f"{path} line {number} is not a log row (a JSON object with an integer "
                             "\"step\"): the log is damaged; delete that line to use the rest")
        rows.append(row)
    return rows


def _parse_row(line: str) -> dict | None:
    try:
        row = bounded_json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step"), int) else None


def _row_step(line: str) -> int | None:
    row = _parse_row(line)
    return None if row is None else row["step"]


def check_run_folder(run_dir: Path) -> None:
    """Refuse, before anything is written, a --run-dir that training would damage: a file, a
    non-empty folder that is not a run folder, a run whose model has no state to resume from."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise InputError(f"--run-dir {run_dir} is a file, not a folder; choose a new --run-dir")
    if not (run_dir / "config.yaml").is_file():
        others = [p.name for p in run_dir.iterdir() if not _is_own_leftover(p.name)]
        if others:
            raise InputError(f"--run-dir {run_dir} is not empty (it holds {sorted(others)[0]}) and has no "
                             "config.yaml, so it is not a run folder; choose a new or empty --run-dir")
    model = run_dir / "model.safetensors"
    if os.path.lexists(model) and not has_state(run_dir / "state.safetensors"):
        raise InputError(f"{run_dir} holds a trained model.safetensors but no usable state.safetensors to "
                         "resume from, and training here would replace that model with one trained from "
                         f"zero; to go on, fine-tune from it in a new folder: --run-dir <new folder> --set "
                         f"train.init={model} (or choose a new --run-dir)")


def _is_own_leftover(name: str) -> bool:
    """What a run that failed before writing config.yaml may leave: its lock and a temporary."""
    return name == LOCK_NAME or (name.startswith(".config.yaml.") and name.endswith(".tmp"))


def sweep_own_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporaries of the run's own files that a run killed mid-save left behind."""
    return (remove_stale_temporaries(run_dir, OWN_FILES)
            + remove_stale_temporaries(run_dir / "samples", OWN_SAMPLES)
            + remove_stale_temporaries(kept_folder(run_dir), OWN_KEPT))


@contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold RUN/.lock (flock, exclusive) for the run's life; only the main process locks (with
    torchrun the other ranks share its folder). The lock file holds the pid of its holder, so a
    second trainer is refused with a line naming it. A new folder is created here, and removed
    again when the run fails before writing config.yaml, so a refused run leaves nothing behind."""
    if not dist.is_main():
        yield
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _take_lock(run_dir / LOCK_NAME)  # raises when another trainer holds it
    try:
        sweep_own_temporaries(run_dir)
        yield
    finally:
        if created and not (run_dir / "config.yaml").exists():
            _remove_if_only_leftovers(run_dir)  # still locked: no other trainer is using it
        if lock is not None:
            _release_lock(lock)


def _take_lock(path: Path) -> IO[str] | None:
    if fcntl is None:
        return None
    handle = open(path, "a+")  # never truncated before the lock is ours: it names the holder
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise InputError(f"{path.parent} is in use by another trainer (pid {holder}); wait for it to end "
                         "or stop it, or choose another --run-dir") from None
    except OSError as err:  # a file system without locks: train, but say so
        WARNINGS.warning(f"cannot lock {path} ({err.strerror}); make sure no other trainer uses this folder")
        return handle
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _release_lock(handle: IO[str]) -> None:
    # The file stays: deleting it would let a trainer that opened it just before lock a file
    # no longer in the folder while a third one locks a new one.
    handle.truncate(0)
    handle.close()  # closing releases the flock


def _remove_if_only_leftovers(run_dir: Path) -> None:
    try:
        leftovers = list(run_dir.iterdir())
        if all(_is_own_leftover(p.name) for p in leftovers):
            for p in leftovers:
                p.unlink()
            run_dir.rmdir()
    except OSError:
        pass  # another trainer arrived meanwhile: its folder now


def trainer_main(argv: list[str] | None, description: str, config_cls, train, done: str) -> int:
    """The CLI both trainers share: --config/--run-dir/--set/--no-progress, resume by re-running.

    `train(config, run_dir, progress) -> Path`; `done` is printed before the written path. The
    config, data path and run folder are checked before the folder is touched, and the folder is
    locked while `train` runs.
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
        dist.setup()  # train() sets up again, a no-op: the lock needs to know the main process
        main = dist.is_main()  # asked now: train() ends the process group, then every rank is "main"
        # every rank checked the folder before the main process writes to it; under torchrun a
        # refusal on any rank (the lock: rank 0's alone) stops them all, none waits for the rest
        dist.start_together(_refusal(lambda: check_run_folder(run_dir)))
        with ExitStack() as held:
            dist.start_together(_refusal(lambda: held.enter_context(run_folder_lock(run_dir))))
            path = train(config, run_dir, progress=not args.no_progress)
        if main:
            print(f"{done} {path}")
        return 0

    return run_guarded(body)


def _refusal(start: Callable[[], Any]) -> Exception | None:
    """What `start()` raised, or None: dist.start_together passes it on to every rank."""
    try:
        start()
    except Exception as err:  # anything: a rank that stops alone leaves the others waiting
        return err
    return None
