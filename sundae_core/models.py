"""Build models from checkpoints (config embedded) and save them back; the embedded defaults."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import bounded_json
from .checkpoint import (CONFIG_KEY, KIND_KEY, check_state, load_checkpoint, read_metadata, save_checkpoint,
                         weights_fingerprint)
from .config import HourglassConfig, VQGANConfig, from_dict, to_dict
from .cpu_features import cpu_bf16_is_fast
from .errors import CheckpointError, ConfigError, InputError, MissingAssetError
from .hourglass import HourglassTransformer
from .limits import model_blocks_problem, model_bytes_problem
from .packed_linear import pack_for_cpu_inference
from .token_version import check_pair
from .vqgan import VQGAN

KINDS = {"vqgan": (VQGANConfig, VQGAN), "prior": (HourglassConfig, HourglassTransformer)}
TOKEN_VERSION_KEY = "sundae.token_version"  # header copy of the token version, for people and tools
DEFAULT_DIR = Path(__file__).parent / "default_models"


def default_model_path(kind: str) -> Path:
    """The embedded default checkpoint of `kind` ("vqgan" or "prior")."""
    path = DEFAULT_DIR / f"{kind}.safetensors"
    if not path.is_file():
        raise MissingAssetError(f"the embedded default {kind} ({path}) is missing; reinstall the package "
                                "from a full clone (the weights are committed to the repository)")
    return path


EMBEDDED = "default"  # what a CLI's --vqgan / --prior take to name the embedded model


def model_path(arg: str | Path | None, kind: str) -> Path:
    """A CLI's checkpoint argument as a path: absent or "default" names the embedded `kind`."""
    return default_model_path(kind) if arg in (None, "", EMBEDDED) else Path(arg)


def kind_of(model: nn.Module) -> str:
    for kind, (_, cls) in KINDS.items():
        if isinstance(model, cls):
            return kind
    raise TypeError(f"no checkpoint kind for {type(model).__name__}")


def save_model(path: str | Path, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    """Save weights (fp32 unless they are bf16 already) with the model's config embedded."""
    state = {k: v for k, v in model.state_dict().items()}
    metadata = dict(metadata or {})
    version = model.token_version if isinstance(model, VQGAN) else model.config.token_version
    if version:
        metadata[TOKEN_VERSION_KEY] = version
    save_checkpoint(path, state, kind=kind_of(model), config=to_dict(model.config), metadata=metadata)


def check_models_fit(vqgan: VQGAN, prior: HourglassTransformer, where: str = "") -> None:
    """InputError unless `prior` was trained on `vqgan`'s tokens: the same vocabulary and, when the
    prior records one, the same token version (sundae_core.token_version)."""
    if vqgan.vocab_size != prior.config.vocab_size:
        raise InputError(f"{where}the prior's vocabulary ({prior.config.vocab_size} tokens) is not the VQ-GAN's "
                         f"({vqgan.vocab_size}): these models were not trained together")
    check_pair(vqgan.token_version, prior.config.token_version, where)


def model_class(config: VQGANConfig | HourglassConfig) -> type[nn.Module]:
    return next(cls for config_cls, cls in KINDS.values() if isinstance(config, config_cls))


class _SkipRandomInit(TorchFunctionMode):
    """Random initialisers return their tensor untouched. On meta tensors they would change nothing,
    but torch runs them through its Python reference kernels, whose first use imports its compiler
    stack (over a second per process)."""

    SKIPPED = frozenset({"normal_", "uniform_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                         "xavier_uniform_", "xavier_normal_", "orthogonal_", "sparse_"})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in self.SKIPPED:
            return args[0] if args else kwargs.get("tensor")
        return func(*args, **kwargs)


def skeleton(config: VQGANConfig | HourglassConfig) -> nn.Module:
    """The model a config builds, on the meta device: shapes and dtypes only, nothing allocated."""
    with torch.device("meta"), _SkipRandomInit():
        return model_class(config)(config)


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers in float32 (the dtype models are built in)."""
    return sum(t.numel() * 4 for t in (*model.parameters(), *model.buffers()))


def check_model_size(config: VQGANConfig | HourglassConfig, what: str) -> nn.Module:
    """ConfigError when `config` would build a model over the size ceiling (sundae_core.limits);
    else its meta-device skeleton. Checked before any training or loading allocates it; an absurd
    block count (depth [1, 100000, 1]) is refused from the config alone, before the skeleton."""
    problem = model_blocks_problem(config, what)
    if problem:
        raise ConfigError(problem)
    model = skeleton(config)
    problem = model_bytes_problem(parameter_bytes(model), what)
    if problem:
        raise ConfigError(problem)
    return model


def build_with_weights(config: VQGANConfig | HourglassConfig, tensors: dict[str, torch.Tensor],
                       source: str | Path) -> nn.Module:
    """The model for `config` holding `tensors`. Before anything is allocated, an absurd config
    (a prior with dim 10**7) and weights that do not fit it (keys, shapes, integer dtype, NaN)
    are refused with one CheckpointError naming `source`."""
    try:
        check_state(check_model_size(config, f"{source}: the config"), tensors, source)
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    model = model_class(config)(config)
    model.load_state_dict(tensors, strict=True)
    return model


def read_config(path: str | Path, kind: str) -> VQGANConfig | HourglassConfig:
    """The config embedded in a checkpoint of `kind`, from its header only (no weights are read)."""
    meta = read_metadata(path)
    if meta.get(KIND_KEY) != kind:
        raise CheckpointError(f"{path}: is not a {kind!r} checkpoint")
    try:
        return from_dict(KINDS[kind][0], bounded_json.loads(meta.get(CONFIG_KEY, "{}")))
    except (ValueError, ConfigError) as err:
        raise CheckpointError(f"{path}: embedded config is invalid: {err}") from None


def load_model(path: str | Path, kind: str, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None) -> nn.Module:
    config_cls, _ = KINDS[kind]
    ckpt = load_checkpoint(path, kind=kind)
    try:
        config = from_dict(config_cls, ckpt.config)
    except ConfigError as err:
        raise CheckpointError(f"{path}: embedded config is invalid: {err}") from None
    model = build_with_weights(config, ckpt.tensors, path)
    if kind == "prior":  # taken from the file's own values, before any cast: what adapters name their base by
        model.weights_fingerprint = weights_fingerprint(ckpt.tensors)
    return for_inference(model, device, dtype)


def for_inference(model: nn.Module, device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None) -> nn.Module:
    """A model as every loaded one runs: eval mode, no gradients, on `device`, cast to `dtype`
    (a VQ-GAN's encoder stays float32: VQGAN.cast_for_inference) and laid out (inference_layout)."""
    model = model.eval().requires_grad_(False).to(device=device or "cpu")
    model = model.cast_for_inference(dtype) if isinstance(model, VQGAN) else model.to(dtype=dtype)
    return inference_layout(model)


def inference_layout(model: nn.Module) -> nn.Module:
    """A model laid out as every loaded one is for inference: a VQ-GAN's conv weights
    channels-last, as VQGAN.encode/decode lay out their inputs (vqgan.channels_last); a prior's
    linear weights packed once for oneDNN when bf16 on an AMX CPU (packed_linear.py)."""
    if isinstance(model, VQGAN):
        return model.to(memory_format=torch.channels_last)
    return pack_for_cpu_inference(model)


def load_vqgan(path: str | Path, device=None, dtype=None) -> VQGAN:
    return load_model(path, "vqgan", device, dtype)


def load_prior(path: str | Path, device=None, dtype=None) -> HourglassTransformer:
    return load_model(path, "prior", device, dtype)


def inference_dtype(device: str | torch.device) -> torch.dtype:
    """bf16 on GPUs that support it (else float16) and on CPUs with bf16 kernels (else float32);
    models are cast once, not autocast per call. Where the CPU has them, bf16 is the faster even
    without AMX: 16 steps of the embedded prior took 0.80 s an image against 1.11 s in float32 on a
    2-core AVX-512 AMD EPYC (session 28). Without them (AVX2-only x86) bf16 falls back to loops
    hundreds of times slower (cpu_features.py). A VQ-GAN's encoder stays float32 whatever this says
    (VQGAN.cast_for_inference)."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    if device.type == "cpu" and not cpu_bf16_is_fast():
        return torch.float32
    return torch.bfloat16
