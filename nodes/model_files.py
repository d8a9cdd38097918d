"""Where the loaders find checkpoints: the `sundae` model folders.

Folders, in search order: inside ComfyUI, those registered for "sundae" (models/sundae, any
`sundae:` entry of extra_model_paths.yaml, then the embedded default folder, all registered by
the pack's __init__.py); elsewhere, the folders listed in $SUNDAE_MODEL_DIR (os.pathsep-separated)
then the embedded `sundae_core/default_models/`.

The loader COMBOs offer `default` plus every `.safetensors` file in those folders whose header
says it is of the right kind. `default` means `vqgan.safetensors` / `prior.safetensors` from the
first folder that has one, so dropping your own pair into a model folder replaces the embedded
models in every shipped workflow; that file is listed once, as `default`, not also under its own
name (which names the same file).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from sundae_core.checkpoint import KIND_KEY, read_metadata
from sundae_core.errors import CheckpointError, MissingAssetError, SundaeError
from sundae_core.models import DEFAULT_DIR, EMBEDDED, default_model_path, read_config

from .comfy_bridge import model_folders as comfy_model_folders

FOLDER_NAME = "sundae"
ENV_VAR = "SUNDAE_MODEL_DIR"
DEFAULT = EMBEDDED


def env_folders() -> list[Path]:
    return [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]


def model_folders() -> list[Path]:
    registered = comfy_model_folders(FOLDER_NAME)
    if registered is not None:
        return registered
    return env_folders() + [DEFAULT_DIR]


@lru_cache(maxsize=256)
def _kind(path: Path, mtime_ns: int, size: int) -> str | None:
    try:
        return read_metadata(path).get(KIND_KEY)
    except CheckpointError:
        return None  # not ours or unreadable: not offered (loading it by name explains why)


def list_models(kind: str, with_default: bool = True) -> list[str]:
    """COMBO options: `default`, then relative paths of checkpoints of `kind` in all folders.
    `<kind>.safetensors` at the top of a folder is what `default` names (the first folder's that
    has one wins either way), so it is not listed again under its own name. Without `default`
    (kinds that have none, as prior adapters): the files alone."""
    names, same_as_default = [], f"{kind}.safetensors" if with_default else None
    for folder in model_folders():
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.safetensors")):
            try:
                stat = path.stat()
            except OSError:  # a dangling symlink, a file gone meanwhile: not offered (choosing it says why)
                continue
            name = path.relative_to(folder).as_posix()
            if name != same_as_default and name not in names and _kind(path, stat.st_mtime_ns, stat.st_size) == kind:
                names.append(name)
    return [DEFAULT] + names if with_default else names


def resolve_model(name: str, kind: str) -> Path:
    """The file behind a COMBO value; MissingAssetError says where it was looked for."""
    folders = model_folders()
    wanted = f"{kind}.safetensors" if name == DEFAULT else name
    for folder in folders:
        # normpath, not resolve: `..` may not leave the folder, but symlinked model files (common
        # in ComfyUI setups) are fine
        root = Path(os.path.normpath(folder.absolute()))
        path = Path(os.path.normpath(root / wanted))
        if root in path.parents and path.is_file():
            return path
    if name == DEFAULT:
        return default_model_path(kind)  # raises MissingAssetError with install instructions
    raise MissingAssetError(
        f"{kind} checkpoint {name!r} not found in the sundae model folders "
        f"({', '.join(str(f) for f in folders)}); put it there or set ${ENV_VAR}")


def default_vqgan_factor() -> int:
    """The factor f of the VQ-GAN that `default` loads (32 for the embedded one), for widgets that
    step in multiples of it; 1 (no constraint) when it cannot be read: loading will say why."""
    try:
        path = resolve_model(DEFAULT, "vqgan")
        stat = path.stat()
        return _factor(path, stat.st_mtime_ns, stat.st_size)
    except (SundaeError, OSError):
        return 1


@lru_cache(maxsize=16)
def _factor(path: Path, mtime_ns: int, size: int) -> int:
    return read_config(path, "vqgan").factor
