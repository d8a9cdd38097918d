"""Everything this pack takes from ComfyUI, in one place, imported lazily.

Outside ComfyUI (the built-in executor, tests, scripts) every function here falls back to a
plain behaviour: the device is cuda if available else cpu, model folders come from the caller,
progress goes to the built-in executor's progress bar (or nowhere), previews are skipped,
nothing can interrupt and warnings go to the "sundae" logger (the CLIs print them). No `comfy`
module is imported when this module is imported.
"""

from __future__ import annotations

import importlib
import logging
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch

from sundae_core.graph.context import report_progress

# Previews may cost at most this share of a node's sampling time: decoding a megapixel preview
# every step once made a 9 s inpainting take 47 s.
PREVIEW_SHARE = 0.10
PREVIEW_EVERY_S = 1.0  # and come at most this often, however cheap
PREVIEW_MAX_SIZE = 512  # ComfyUI's --preview-size default, used when it cannot be read

log = logging.getLogger("sundae")


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


def register_model_folders(name: str, folders: list[Path],
                           extensions: frozenset[str] = frozenset({".safetensors"})) -> bool:
    """Add folders to ComfyUI's model type `name` (for its COMBOs) and list only files with these
    extensions in it (ComfyUI's default for a new type is every file: /api/models/sundae listed
    MODEL_CARD.md); False outside ComfyUI."""
    folder_paths = _optional_module("folder_paths")
    if folder_paths is None:
        return False
    known = set(model_folders(name) or [])
    for folder in folders:
        if Path(folder) not in known:
            folder_paths.add_model_folder_path(name, str(folder))
    table = getattr(folder_paths, "folder_names_and_paths", None)
    if isinstance(table, dict) and name in table:
        table[name] = (table[name][0], set(extensions))
        getattr(folder_paths, "filename_list_cache", {}).pop(name, None)  # a listing made before
    return True


def preview_settings() -> tuple[bool, int]:
    """(previews on, largest side) from ComfyUI's --preview-method and --preview-size; previews are
    off when the method is "none" (ComfyUI's default). Outside ComfyUI: (True, PREVIEW_MAX_SIZE)."""
    cli_args = _optional_module("comfy.cli_args")
    args = getattr(cli_args, "args", None)
    if args is None:
        return True, PREVIEW_MAX_SIZE
    method = getattr(args, "preview_method", None)
    enabled = str(getattr(method, "value", method)).lower() not in ("none", "nopreviews")
    size = getattr(args, "preview_size", PREVIEW_MAX_SIZE)
    return enabled, size if isinstance(size, int) and size > 0 else PREVIEW_MAX_SIZE


def warn(message: str) -> None:
    """A warning for the user: ComfyUI's log inside ComfyUI, a `warning:` line in the CLIs."""
    log.warning(message)


def interrupt_point() -> None:
    """Raise ComfyUI's interruption exception if the user pressed cancel; no-op outside ComfyUI."""
    management = _optional_module("comfy.model_management")
    if management is not None:
        management.throw_exception_if_processing_interrupted()


class Progress:
    """Step progress of one node: ComfyUI's progress bar with throttled previews, or the executor's.

    `preview(tokens) -> PIL.Image` is only called inside ComfyUI with previews on (a node without a
    preview function sends none: that is how a workflow turns them off). A preview is decoded only
    when every preview so far plus this one stays within PREVIEW_SHARE of the time spent sampling,
    and at most every PREVIEW_EVERY_S. This one's cost is estimated by the last preview's; before
    any, by the decode time the preview function measured earlier (`preview.expected_seconds
    (tokens)`, see pixels.PreviewDecoder), and only when nothing was ever measured by the first
    step's time. No preview is decoded at the last step (the step count, or sampling that stopped
    itself): VQ Decode decodes those very tokens next. `finish()` fills the bar when sampling
    stops early.
    """

    def __init__(self, total: int, preview: Callable[[torch.Tensor], Any] | None = None):
        self.total = total
        utils = _optional_module("comfy.utils")
        self.bar = utils.ProgressBar(total) if utils is not None else None
        enabled, self.preview_size = preview_settings()
        self.preview = preview if self.bar is not None and enabled else None
        self.started = time.monotonic()
        self.first_step: float | None = None  # seconds the first step took
        self.preview_time = 0.0  # seconds spent decoding previews so far
        self.preview_cost: float | None = None  # seconds the last preview took
        self.last_preview: float | None = None

    def update(self, value: int, tokens: torch.Tensor | None = None) -> None:
        """Progress to `value` of `total` steps; `tokens`: the state to preview (None: no preview)."""
        interrupt_point()
        if self.bar is None:
            report_progress(value, self.total)
            return
        last = value >= self.total
        image = self._preview(tokens) if tokens is not None and self.preview is not None and not last else None
        self.bar.update_absolute(value, self.total, image)

    def finish(self) -> None:
        """Show the bar full: sampling that stops itself early ends short of `total`."""
        if self.bar is None:
            report_progress(self.total, self.total)
        else:
            self.bar.update_absolute(self.total, self.total, None)

    def _preview(self, tokens: torch.Tensor) -> tuple | None:
        now = time.monotonic()
        sampling = now - self.started - self.preview_time
        if self.first_step is None:
            self.first_step = sampling
        if self.last_preview is not None and now - self.last_preview < PREVIEW_EVERY_S:
            return None
        estimate = self.preview_cost if self.preview_cost is not None else self._measured(tokens)
        if self.preview_time + estimate > PREVIEW_SHARE * sampling:
            return None
        picture = self.preview(tokens)
        self.last_preview = time.monotonic()
        self.preview_cost = self.last_preview - now
        self.preview_time += self.preview_cost
        return ("JPEG", picture, self.preview_size)

    def _measured(self, tokens: torch.Tensor) -> float:
        known = getattr(self.preview, "expected_seconds", None)
        seconds = known(tokens) if callable(known) else None
        return seconds if seconds is not None else self.first_step

    def sampler_callback(self, info: dict) -> None:
        """Adapter for sundae_core.sampler.sample's `callback(info)`; a step after which every sample
        has stopped itself is the last: no preview of it."""
        stopped = self.preview is not None and "active" in info and not bool(info["active"].any())
        self.update(info["step"], None if stopped else info["tokens"])
