"""What a running workflow knows about its surroundings: folders, the prompt, progress hooks.

ComfyUI's core nodes read their folders from the global `folder_paths` module; the built-in
replicas read them from the context of the run in progress instead, kept in a ContextVar so that
runs in different threads never see each other's folders. Outside a run, nodes fall back to
ComfyUI-like folders under the working directory.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator


@dataclass
class RunWrites:
    """What one run has written so far, so its cost per image stays flat however many it saves
    (image_files): the bytes of PNG text chunks (prompt, workflow), capped per run; each embedded
    object's JSON, made once per run (keyed by id, the object kept alive beside it); the text keys
    already reported left out; and per folder, the highest `<stem>_<counter>_.png` counter of each
    stem, read from the folder once per run instead of once per saved batch."""

    text_bytes: int = 0
    encoded: dict[int, tuple[Any, str]] = field(default_factory=dict)
    left_out: set[str] = field(default_factory=set)
    counters: dict[Path, dict[str, int]] = field(default_factory=dict)


@dataclass
class RunContext:
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    prompt: dict[str, Any] = field(default_factory=dict)  # the API prompt, embedded by SaveImage
    workflow: dict[str, Any] | None = None  # the UI workflow when the run started from one
    on_progress: Callable[[int, int], None] | None = None  # (value, total) of the running node
    writes: RunWrites = field(default_factory=RunWrites)

    def write_anchor(self, folder: Path) -> Path:
        """The folder whose resolved path every file written into `folder` must stay inside: the
        output folder for any folder named below it (the default temp folder, output/temp, so a
        `temp` symlink out of the output folder is refused like a SaveImage prefix through one),
        else `folder` itself (a temp folder the caller chose elsewhere)."""
        folder, output = Path(folder).absolute(), Path(self.output_dir).absolute()
        return output if folder == output or output in folder.parents else folder


_current: ContextVar[RunContext | None] = ContextVar("sundae_run_context", default=None)


def current_or_default() -> RunContext:
    """The active run's context, or ComfyUI-like folders under the working directory."""
    context = _current.get()
    if context is not None:
        return context
    cwd = Path.cwd()
    return RunContext(input_dir=cwd / "input", output_dir=cwd / "output", temp_dir=cwd / "output" / "temp")


@contextmanager
def active(context: RunContext) -> Iterator[RunContext]:
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def report_progress(value: int, total: int) -> None:
    """Progress of the node running now (a sampler's steps); does nothing outside a run."""
    context = _current.get()
    if context is not None and context.on_progress is not None:
        context.on_progress(value, total)
