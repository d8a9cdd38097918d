"""What every command-line entry point shares: one-line errors instead of tracebacks, and
warnings of the "sundae" logger shown as `warning:` lines."""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import sys
from pathlib import Path
from typing import Any, Callable

from .checkpoint import atomic_write
from .cpu_memory import reuse_freed_memory
from .errors import SundaeError, one_line

WARNINGS = logging.getLogger("sundae")


class _WarningLines(logging.Handler):
    """Writes `warning: <message>` to the current sys.stderr (so redirections made later count)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{record.levelname.lower()}: {one_line(record.getMessage())}", file=sys.stderr)


def show_warnings() -> None:
    """Send the "sundae" logger's warnings to stderr, once per process (inside ComfyUI they go to
    its own log instead; the pack never calls this)."""
    if not any(isinstance(h, _WarningLines) for h in WARNINGS.handlers):
        WARNINGS.addHandler(_WarningLines())


def doc_summary(doc: str) -> str:
    """A module docstring's first paragraph as one line: a CLI's --help description (its first
    line alone cut some sentences in half)."""
    return " ".join(doc.strip().split("\n\n")[0].split())


def run_guarded(body: Callable[[], int | None], reuse_memory: bool = False) -> int:
    """Run a CLI body; a SundaeError (bad input, bad file) or a failing disk becomes one line on
    stderr and exit 1. reuse_memory: the whole body runs in cpu_memory.reuse_freed_memory (CLIs
    that decode or encode many megapixel images one after another)."""
    show_warnings()
    try:
        with reuse_freed_memory() if reuse_memory else contextlib.nullcontext():
            return int(body() or 0)
    except SundaeError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    except OSError as err:  # a read-only folder, a full disk: the environment, not a bug
        print(f"error: {one_line(describe_os_error(err))}", file=sys.stderr)
        return 1
    except MemoryError:
        print("error: out of memory; use smaller sizes or batches", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def describe_os_error(err: OSError) -> str:
    """'cannot use runs/a/log.jsonl: Permission denied' from an OSError, on one line."""
    reason = " ".join((err.strerror or str(err) or type(err).__name__).split())
    where = f"cannot use {err.filename}" if err.filename else "file system error"
    return f"{where}: {reason} (check the folder's permissions and free space)"


def write_json_report(path: str | Path, report: Any) -> Path:
    """The tail of every reporting CLI: `report` as indented JSON, written atomically (a reader
    never sees half a file), then `wrote <path>` on stdout."""
    path = Path(path)
    text = json.dumps(report, indent=2)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {path}")
    return path


def cpu_name() -> str:
    """The CPU's model name, for every table that reports a time (speeds differ by machine)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
