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
class RunContext:
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    prompt: dict[str, Any] = field(default_factory=dict)  # the API prompt, embedded by SaveImage
    workflow: dict[str, Any] | None = None  # the UI workflow when the run started from one
    on_progress: Callable[[int, int], None] | None = None  # (value, total) of the running node


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
