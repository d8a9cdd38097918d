"""Everything this pack takes from ComfyUI, in one place, imported lazily.

Outside ComfyUI (the built-in executor, tests, scripts) every function here falls back to a
plain behaviour: the device is cuda if available else cpu, model folders come from the caller,
progress goes to the built-in executor's progress bar (or nowhere), previews are skipped and
nothing can interrupt. No `comfy` module is imported when this module is imported.
"""

from __future__ import annotations

import importlib
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch

from sundae_core.graph.context import report_progress

PREVIEW_EVERY_S = 1.0  # decoding a megapixel preview every step would slow sampling down
PREVIEW_MAX_SIZE = 512


@lru_cache(maxsize=None)
def _optional_module(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def torch_device() -> torch.device:
    """ComfyUI's device choice (honours --cpu etc.); else cuda when available, else cpu."""
    management = _optional_module("comfy.model_management")
    if management is not None:
        return management.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_folders(name: str) -> list[Path] | None:
    """Folders ComfyUI registered for model type `name`; None outside ComfyUI or if unregistered."""
    folder_paths = _optional_module("folder_paths")
    if folder_paths is None:
        return None
    try:
        return [Path(p) for p in folder_paths.get_folder_paths(name)]
    except KeyError:
        return None


def register_model_folders(name: str, folders: list[Path]) -> bool:
    """Add folders to ComfyUI's model type `name` (for its COMBOs); False outside ComfyUI."""
    folder_paths = _optional_module("folder_paths")
    if folder_paths is None:
        return False
    known = set(model_folders(name) or [])
    for folder in folders:
        if Path(folder) not in known:
            folder_paths.add_model_folder_path(name, str(folder))
    return True


def interrupt_point() -> None:
    """Raise ComfyUI's interruption exception if the user pressed cancel; no-op outside ComfyUI."""
    management = _optional_module("comfy.model_management")
    if management is not None:
        management.throw_exception_if_processing_interrupted()


class Progress:
    """Step progress of one node: ComfyUI's progress bar with throttled previews, or the executor's.

    `preview(tokens) -> PIL.Image` is only called inside ComfyUI, at most every PREVIEW_EVERY_S
    (a node without a preview function sends none: that is how a workflow turns them off).
    """

    def __init__(self, total: int, preview: Callable[[torch.Tensor], Any] | None = None):
        self.total = total
        utils = _optional_module("comfy.utils")
        self.bar = utils.ProgressBar(total) if utils is not None else None
        self.preview = preview if self.bar is not None else None
        self.last_preview = 0.0

    def update(self, value: int, tokens: torch.Tensor | None = None) -> None:
        interrupt_point()
        if self.bar is None:
            report_progress(value, self.total)
            return
        image = None
        now = time.monotonic()
        if self.preview is not None and tokens is not None and now - self.last_preview >= PREVIEW_EVERY_S:
            self.last_preview = now
            image = ("JPEG", self.preview(tokens), PREVIEW_MAX_SIZE)
        self.bar.update_absolute(value, self.total, image)

    def sampler_callback(self, info: dict) -> None:
        """Adapter for sundae_core.sampler.sample's `callback(info)`."""
        self.update(info["step"], info["tokens"])
