"""Resumable training state in one safetensors file: modules, optimizers, RNG states, step.

Written atomically (checkpoint.atomic_write), so a run killed at any moment resumes from the
last complete file. Optimizer hyperparameters go into the JSON metadata, tensors into the body,
and a sha256 of the tensors too: a damaged file is refused instead of resuming silently.
Each save keeps the file it replaces as state.prev.safetensors (model.prev.safetensors for the
model), and loading falls back to it when the newest file is damaged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from sundae_core.checkpoint import Checkpoint, atomic_write, load_checkpoint, save_checkpoint
from sundae_core.cli import WARNINGS
from sundae_core.errors import CheckpointError
from sundae_core.models import save_model

from . import distributed as dist
from .divergence import TrainingDiverged, first_non_finite

KIND = "train_state"
DIGEST_KEY = "sha256"  # of the tensors, see tensors_digest; files written before it have none


def previous_path(path: str | Path) -> Path:
    """state.safetensors -> state.prev.safetensors: where the file a save replaced is kept."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def has_state(path: str | Path) -> bool:
    """Whether a run can resume from `path` or its previous version (dangling links and link
    loops count as missing)."""
    return Path(path).is_file() or previous_path(path).is_file()


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer itself, no copy
    return h.hexdigest()


def _state_tensors(modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                   generators: dict[str, torch.Generator]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    groups = {}
    for name, m in modules.items():
        for k, v in m.state_dict().items():
            tensors[f"module/{name}/{k}"] = v
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        groups[name] = sd["param_groups"]
        for pid, st in sd["state"].items():
            for k, v in st.items():
                tensors[f"optim/{name}/{pid}/{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    for name, g in generators.items():
        tensors[f"rng/{name}"] = g.get_state()
    tensors["rng/torch_global"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout's stream on the GPU
        tensors["rng/torch_cuda"] = torch.cuda.get_rng_state()
    return tensors, groups


def save_state(path: str | Path, *, step: int, modules: dict[str, nn.Module],
               optimizers: dict[str, torch.optim.Optimizer], generators: dict[str, torch.Generator],
               config: dict) -> None:
    """Write the state; TrainingDiverged, writing nothing, when a tensor is NaN or infinite (a
    resumable file must never carry a diverged run)."""
    tensors, groups = _state_tensors(modules, optimizers, generators)
    broken = first_non_finite(tensors)
    if broken:
        raise TrainingDiverged(f"step {step}: {broken} holds NaN or infinite values, so {path} was not "
                               "written and the last checkpoint is kept; resume with a lower learning "
                               "rate (--set train.lr=<smaller value>)")
    tensors = {k: v.detach().to("cpu") for k, v in tensors.items()}
    save_checkpoint(path, tensors, kind=KIND, config=config,
                    metadata={"step": str(step), "param_groups": json.dumps(groups),
                              DIGEST_KEY: tensors_digest(tensors)})


def keep_previous(path: str | Path) -> None:
    """Make path.prev a copy of `path` while `path` stays in place, so that at every moment a
    complete newest file exists. A hard link costs nothing; where the file system has none, copy."""
    path = Path(path)
    if not path.is_file():
        return
    prev = previous_path(path)
    tmp = path.with_name(f".{prev.name}.link.tmp")  # the name the run folder's sweep removes
    try:
        tmp.unlink(missing_ok=True)
        os.link(path, tmp)
        os.replace(tmp, prev)
    except OSError:
        tmp.unlink(missing_ok=True)
        atomic_write(prev, lambda t: shutil.copyfile(path, t))


def save_checkpoint_pair(run_dir: Path, *, step: int, modules: dict[str, nn.Module],
                         optimizers: dict[str, torch.optim.Optimizer], generators: dict[str, torch.Generator],
                         config: dict, model: nn.Module, model_metadata: dict[str, str], keep: bool = False) -> None:
    """A run's checkpoint: state.safetensors (resume) then model.safetensors (use), each keeping the
    file it replaces as *.prev.safetensors. `model` is one of `modules` (the state's finiteness
    check covers it), so a non-finite model never replaces a finite one. `keep`: the model also
    stays as kept_path(run_dir, step) (train.keep_every)."""
    state = run_dir / "state.safetensors"
    keep_previous(state)
    save_state(state, step=step, modules=modules, optimizers=optimizers, generators=generators, config=config)
    keep_previous(run_dir / "model.safetensors")
    save_model(run_dir / "model.safetensors", model, metadata=model_metadata)
    if keep:
        kept = kept_path(run_dir, step)
        atomic_write(kept, lambda tmp: shutil.copyfile(run_dir / "model.safetensors", tmp))


def kept_folder(run_dir: Path) -> Path:
    """The folder of a run's kept models (train.keep_every)."""
    return Path(run_dir) / "kept"


def kept_path(run_dir: Path, step: int) -> Path:
    """Where train.keep_every keeps the model written at `step`: a run's model.safetensors is only
    its newest weights, and a decoder or prior run is judged (and averaged) over several steps."""
    return kept_folder(run_dir) / f"model_{step:06d}.safetensors"


def is_keep_step(steps_done: int, keep_every: int) -> bool:
    """Whether train.keep_every keeps the model after `steps_done` steps (0: it keeps none)."""
    return keep_every > 0 and steps_done % keep_every == 0


def kept_models(run_dir: Path) -> dict[int, Path]:
    """{step: path} of the models a run kept (train.keep_every), in step order."""
    named = ((p.stem.removeprefix("model_"), p) for p in kept_folder(run_dir).glob("model_*.safetensors"))
    return dict(sorted((int(step), p) for step, p in named if step.isdigit()))


def load_state(path: str | Path, *, modules: dict[str, nn.Module],
               optimizers: dict[str, torch.optim.Optimizer], generators: dict[str, torch.Generator],
               start_as: dict[str, str] | None = None) -> int:
    """Restore everything in place; returns the step to continue from. When `path` is missing,
    unreadable, damaged or not finite, its previous version is loaded instead, with a warning.
    `start_as` maps a module the state may lack to the module it then copies once restored: a
    run that turns its weight average on when it resumes starts the average at the resumed
    weights ({"ema": "model"})."""
    ckpt, path = _read_state_or_previous(Path(path))
    t = ckpt.tensors
    start_as = start_as or {}
    absent = [name for name in start_as if name in modules and not any(k.startswith(f"module/{name}/") for k in t)]
    for name, m in modules.items():
        if name in absent:
            continue
        prefix = f"module/{name}/"
        sd = {k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)}
        try:
            m.load_state_dict(sd, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{path}: {name} weights do not match this run's config: "
                                  f"{str(err).splitlines()[0]}") from None
    groups = json.loads(ckpt.metadata["param_groups"])
    for name, opt in optimizers.items():
        prefix = f"optim/{name}/"
        state: dict[int, dict] = {}
        for k, v in t.items():
            if k.startswith(prefix):
                pid, key = k[len(prefix):].split("/", 1)
                state.setdefault(int(pid), {})[key] = v
        # the moments and step counts resume; the hyperparameters are the config's (a run resumed
        # with --set train.weight_decay or train.betas trains with them; lr is set every step)
        asked = [{k: v for k, v in group.items() if k != "params"} for group in opt.param_groups]
        opt.load_state_dict({"state": state, "param_groups": groups[name]})
        for group, settings in zip(opt.param_groups, asked):
            group.update(settings)
    for name, g in generators.items():
        try:
            g.set_state(t[f"rng/{name}"])
        except RuntimeError:  # a CPU stream's state does not fit a GPU generator, nor the reverse
            raise CheckpointError(f"{path}: its {name} random stream was saved on another device than "
                                  f"this run's ({g.device}); resume with the run's train.device, or start "
                                  "a new --run-dir with --set train.init=<this run's model.safetensors>") from None
    torch.set_rng_state(t["rng/torch_global"])
    if "rng/torch_cuda" in t and torch.cuda.is_available():
        torch.cuda.set_rng_state(t["rng/torch_cuda"])
    for name in absent:
        modules[name].load_state_dict(modules[start_as[name]].state_dict())
    return int(ckpt.metadata["step"])


def _read_state_or_previous(path: Path) -> tuple[Checkpoint, Path]:
    """The newest state, or else (with a warning) the previous one; CheckpointError with the way
    forward when neither is usable."""
    prev = previous_path(path)
    try:
        return read_state(path), path
    except CheckpointError as err:
        newest = str(err)
    try:
        ckpt = read_state(prev)
    except CheckpointError as err:
        found = f"; {err}" if prev.is_file() else f"; there is no {prev.name} to fall back to"
        raise CheckpointError(f"{newest}{found}: start a new --run-dir (with --set train.init=<this run's "
                              "model.safetensors> to fine-tune from it)") from None
    aside = f" (the damaged file is kept as {_set_aside(path).name})" if os.path.lexists(path) else ""
    WARNINGS.warning(f"{newest}; resuming from the previous checkpoint {prev} instead{aside}")
    return ckpt, prev


def _set_aside(path: Path) -> Path:
    """Rename a damaged state out of the way, so the next save does not keep it as the previous
    version in place of the good one. Only the main process renames (the others read the same
    folder); the rename is atomic, so a rank reading meanwhile finds one file or the other."""
    aside = path.with_name(f"{path.stem}.damaged{path.suffix}")
    if dist.is_main():
        os.replace(path, aside)
    return aside


def read_state(path: str | Path) -> Checkpoint:
    """A state file checked whole: readable, its tensors matching the digest written with them,
    every float finite. CheckpointError otherwise, before any module is touched."""
    ckpt = load_checkpoint(path, kind=KIND)
    expected = ckpt.metadata.get(DIGEST_KEY)
    if expected is not None and tensors_digest(ckpt.tensors) != expected:
        raise CheckpointError(f"{path}: its tensors do not match the checksum written with them; "
                              "the file is damaged")
    broken = first_non_finite(ckpt.tensors)
    if broken:
        raise CheckpointError(f"{path}: {broken} holds NaN or infinite values; the run diverged before "
                              "this checkpoint was written")
    return ckpt


def init_weights(module: nn.Module, path: str | Path, kind: str) -> None:
    """Start a new run from a model file's weights (`train.init`): fine-tuning from shipped weights
    when a run folder is gone. The file's model config must be the run's, key for key; its dtype
    (the shipped bf16) becomes the run's float32."""
    from sundae_core.config import to_dict
    from sundae_core.models import load_model

    loaded = load_model(path, kind)
    mine, theirs = to_dict(module.config), to_dict(loaded.config)
    # class names are labels, not weights: a config without them may start from one with them
    mine.pop("class_names", None), theirs.pop("class_names", None)
    # nor is the token version: the run's dataset sets it (a prior fine-tuned on new tokens)
    mine.pop("token_version", None), theirs.pop("token_version", None)
    # nor is dropout: a regulariser of training, with no weights of its own
    for key in ("dropout", "attention_dropout_at"):
        mine.pop(key, None), theirs.pop(key, None)
    if mine != theirs:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise CheckpointError(f"train.init {path}: its model config differs from this run's in "
                              f"{', '.join(diff)}; set model.* to match the file or drop train.init")
    target = module.state_dict()
    with torch.no_grad():
        for name, tensor in loaded.state_dict().items():
            target[name].copy_(tensor.to(target[name].dtype))
