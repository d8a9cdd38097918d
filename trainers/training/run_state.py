"""Resumable training state in one safetensors file: modules, optimizers, RNG states, step.

Written atomically (checkpoint.atomic_write), so a run killed at any moment resumes from the
last complete file. Optimizer hyperparameters go into the JSON metadata, tensors into the body.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from sundae_core.checkpoint import load_checkpoint, save_checkpoint
from sundae_core.errors import CheckpointError

KIND = "train_state"


def save_state(path: str | Path, *, step: int, modules: dict[str, nn.Module],
               optimizers: dict[str, torch.optim.Optimizer], generators: dict[str, torch.Generator],
               config: dict) -> None:
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
    save_checkpoint(path, tensors, kind=KIND, config=config,
                    metadata={"step": str(step), "param_groups": json.dumps(groups)})


def load_state(path: str | Path, *, modules: dict[str, nn.Module],
               optimizers: dict[str, torch.optim.Optimizer], generators: dict[str, torch.Generator]) -> int:
    """Restore everything in place; returns the step to continue from."""
    ckpt = load_checkpoint(path, kind=KIND)
    t = ckpt.tensors
    for name, m in modules.items():
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
        opt.load_state_dict({"state": state, "param_groups": groups[name]})
    for name, g in generators.items():
        g.set_state(t[f"rng/{name}"])
    torch.set_rng_state(t["rng/torch_global"])
    return int(ckpt.metadata["step"])


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
    if mine != theirs:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise CheckpointError(f"train.init {path}: its model config differs from this run's in "
                              f"{', '.join(diff)}; set model.* to match the file or drop train.init")
    target = module.state_dict()
    with torch.no_grad():
        for name, tensor in loaded.state_dict().items():
            target[name].copy_(tensor.to(target[name].dtype))
