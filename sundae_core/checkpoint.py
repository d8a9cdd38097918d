"""Safetensors checkpoints that carry their own config, written atomically, loaded strictly.

Metadata keys (all strings, as safetensors requires):
  sundae.kind     "vqgan" | "prior" | any trainer state kind
  sundae.format   integer format version; files newer than FORMAT_VERSION are refused
  sundae.config   the model config as JSON
plus any extra string metadata the writer adds (training step, data, ...).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from . import bounded_json
from .errors import CheckpointError

FORMAT_VERSION = 1
FINGERPRINT_DIGITS = 16
KIND_KEY, FORMAT_KEY, CONFIG_KEY = "sundae.kind", "sundae.format", "sundae.config"


@dataclass(frozen=True)
class Checkpoint:
    tensors: dict[str, torch.Tensor]
    kind: str
    config: dict[str, Any]
    metadata: dict[str, str]


def atomic_write(path: str | Path, write) -> None:
    """Call write(tmp_path) then rename over `path`, so readers never see a half-written file.

    A failure (read-only folder, full disk) leaves any previous `path` intact and no temporary
    behind; an OSError names `path`, not the temporary.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _naming(err, path) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        # mkstemp makes 0600 (and safetensors' writer re-creates the file 0600): after writing,
        # give the file normal permissions
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(err, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _naming(err: OSError, path: Path) -> OSError:
    """The same error (same subclass, e.g. PermissionError) naming the target, not the temporary."""
    return OSError(err.errno, err.strerror, str(path)) if err.errno is not None else err


def remove_stale_temporaries(folder: str | Path, names: Iterable[str]) -> list[Path]:
    """Delete the temporaries that atomic_write calls killed mid-write left in `folder` for the
    files whose names match the glob patterns `names` (e.g. "state*.safetensors"). Nothing else
    and no subfolder: the folder may hold hidden .tmp files of other programs."""
    folder = Path(folder)
    stale = sorted({p for name in names for p in folder.glob(f".{name}.*.tmp") if not p.is_dir()})
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], *, kind: str,
                    config: dict[str, Any] | None = None,
                    metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` with kind, format version and config in the header, atomically."""
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update({KIND_KEY: kind, FORMAT_KEY: str(FORMAT_VERSION),
                 CONFIG_KEY: json.dumps(config or {}, sort_keys=True)})
    # safetensors refuses shared or non-contiguous storage; checkpoints are small enough to copy.
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}

    def write(tmp: str) -> None:
        try:
            save_file(flat, tmp, metadata=meta)
        except SafetensorError as err:  # a full disk surfaces here, not as an OSError
            raise CheckpointError(f"cannot write {path}: {str(err).splitlines()[0]}; any previous "
                                  "version of the file is unchanged") from None

    atomic_write(path, write)


def read_metadata(path: str | Path) -> dict[str, str]:
    path = existing_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(_unreadable(path, err)) from None


def load_checkpoint(path: str | Path, *, kind: str | None = None,
                    device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint; with `kind`, refuse files of any other kind."""
    path = existing_file(path)
    meta = read_metadata(path)
    found = meta.get(KIND_KEY)
    if found is None:
        raise CheckpointError(
            f"{path}: a safetensors file without sundae metadata (not written by this project); "
            "import reference VQ-GAN checkpoints with `sundae-import-vqgan`")
    if kind is not None and found != kind:
        raise CheckpointError(f"{path}: is a {found!r} checkpoint, but a {kind!r} checkpoint is needed here")
    try:
        version = int(meta.get(FORMAT_KEY, "0"))
    except ValueError:
        raise CheckpointError(f"{path}: format version {meta.get(FORMAT_KEY)!r} is not a number") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version} is newer than this code understands ({FORMAT_VERSION}); "
            "upgrade sundae")
    try:
        config = bounded_json.loads(meta.get(CONFIG_KEY, "{}"))
    except bounded_json.JSONShapeError as err:
        raise CheckpointError(f"{path}: the embedded config is refused: {err}") from None
    except ValueError:
        raise CheckpointError(f"{path}: the embedded config is not valid JSON") from None
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(_unreadable(path, err)) from None
    return Checkpoint(tensors, found, config, meta)


def check_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights that do not fit `module` exactly: keys, shapes, an integer dtype where the
    module holds floats, NaN or infinite values. `module` may live on the meta device (nothing
    allocated), so a file can be checked against its config before the model is built."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s) e.g. {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[0]}")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} shape mismatch(es) e.g. {k}: file {tuple(tensors[k].shape)} "
                        f"vs model {tuple(own[k].shape)}")
    if problems:
        raise CheckpointError(f"{path}: weights do not match the embedded config: " + "; ".join(problems))
    floats = sorted(k for k in own if own[k].is_floating_point())
    integers = [k for k in floats if not tensors[k].is_floating_point()]
    if integers:
        raise CheckpointError(f"{path}: weight {integers[0]} is stored as {tensors[integers[0]].dtype}, not "
                              f"floating point ({len(integers)} such); the file is damaged or not a model")
    broken = [k for k in floats if not bool(torch.isfinite(tensors[k]).all())]
    if broken:
        raise CheckpointError(f"{path}: weight {broken[0]} holds NaN or infinite values ({len(broken)} such "
                              "tensor(s)); the training run that wrote it diverged: use an earlier checkpoint")


def load_state_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load weights requiring exactly the module's keys and shapes, finite floats; explain any mismatch."""
    check_state(module, tensors, path)
    module.load_state_dict(tensors, strict=True)


def weights_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A short hash of a model's weights (a state dict), the same whether they are held in
    float32 or bf16: every tensor is hashed as its bf16 rounding. Not for float16 copies (values
    under 2^-14 lose bits there): load_model records a prior's from the file before any cast, and
    that record is what a prior adapter's base is checked against (sundae_core/adapters.py)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu", torch.bfloat16).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()[:FINGERPRINT_DIGITS]


def existing_file(path: str | Path, what: str = "checkpoint") -> Path:
    """`path` as a Path, or a CheckpointError saying it does not exist or is not a file; the one
    check every weight loader (safetensors here, pickles in trainers/checkpoints/safe_pickle.py) makes first."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{what} {path} is not a file")
    return path


def _unreadable(path: Path, err: Exception) -> str:
    size = path.stat().st_size
    return (f"{path}: not a readable safetensors file ({size} bytes; truncated or not safetensors: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__})")
