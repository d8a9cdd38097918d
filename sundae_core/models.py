"""Build models from checkpoints (config embedded) and save them back; the embedded defaults."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .checkpoint import load_checkpoint, load_state_strict, save_checkpoint
from .config import HourglassConfig, VQGANConfig, from_dict, to_dict
from .errors import CheckpointError, ConfigError, MissingAssetError
from .hourglass import HourglassTransformer
from .vqgan import VQGAN

KINDS = {"vqgan": (VQGANConfig, VQGAN), "prior": (HourglassConfig, HourglassTransformer)}
DEFAULT_DIR = Path(__file__).parent / "default_models"


def default_model_path(kind: str) -> Path:
    """The embedded default checkpoint of `kind` ("vqgan" or "prior")."""
    path = DEFAULT_DIR / f"{kind}.safetensors"
    if not path.is_file():
        raise MissingAssetError(f"the embedded default {kind} ({path}) is missing; reinstall the package "
                                "from a full clone (the weights are committed to the repository)")
    return path


def kind_of(model: nn.Module) -> str:
    for kind, (_, cls) in KINDS.items():
        if isinstance(model, cls):
            return kind
    raise TypeError(f"no checkpoint kind for {type(model).__name__}")


def save_model(path: str | Path, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    """Save weights (fp32 unless they are bf16 already) with the model's config embedded."""
    state = {k: v for k, v in model.state_dict().items()}
    save_checkpoint(path, state, kind=kind_of(model), config=to_dict(model.config), metadata=metadata)


def load_model(path: str | Path, kind: str, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None) -> nn.Module:
    config_cls, model_cls = KINDS[kind]
    ckpt = load_checkpoint(path, kind=kind)
    try:
        config = from_dict(config_cls, ckpt.config)
    except ConfigError as err:
        raise CheckpointError(f"{path}: embedded config is invalid: {err}") from None
    model = model_cls(config)
    load_state_strict(model, ckpt.tensors, path)
    model.eval().requires_grad_(False)
    return model.to(device=device or "cpu", dtype=dtype)


def load_vqgan(path: str | Path, device=None, dtype=None) -> VQGAN:
    return load_model(path, "vqgan", device, dtype)


def load_prior(path: str | Path, device=None, dtype=None) -> HourglassTransformer:
    return load_model(path, "prior", device, dtype)


def inference_dtype(device: str | torch.device) -> torch.dtype:
    """bf16 on CPU (AMX) and on GPUs that support it; models are cast once, not autocast per call."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16
