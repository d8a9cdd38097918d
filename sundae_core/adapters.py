"""Prior adapters: a fine-tune of a prior kept as the change of its weights, small enough to ship
beside the prior it was made from (the LoRA idea, applied after training).

A specialist fine-tune (an inpainting one: the embedded prior trained on hidden holes) moves every
weight, and a second full prior would double the embedded weights. Its change is nearly low-rank:
each weight matrix's change `tuned - base` is kept as two factors from its SVD,
`up (o r) @ down (r i)`, and the few small tensors (norms, biases, the class table) whole. On
session 35's hole fine-tune, rank 16 (2.2 MB in bf16 against the prior's 24 MB) kept 0.047 of its
0.053 gain in hidden-hole top-1 (docs/campaign/history.md, session 37).

Applying one builds a new prior with `base + strength x change`; the base is not touched, so one
loaded prior serves workflows with and without it. An adapter names its base by a fingerprint of
the base's weights (`checkpoint.weights_fingerprint`) and is refused on any other prior: the
change of one prior's weights means nothing for another's. Adapters of one base stack (each is
checked against the base the first was applied to).

File (kind "prior_adapter"): `<weight>.up`, `<weight>.down` per factored matrix, `<weight>.delta`
per tensor kept whole; the AdapterConfig in the header.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, save_checkpoint, weights_fingerprint
from .config import from_dict, to_dict
from .errors import CheckpointError, ConfigError, InputError
from .hourglass import HourglassTransformer
from .models import build_with_weights, for_inference

KIND = "prior_adapter"
UP, DOWN, WHOLE = ".up", ".down", ".delta"  # key suffixes: the two factors, a change kept whole
MAX_STRENGTH = 4.0  # room to explore past the fine-tune (1); on the inpainting adapter 1.5 and 2 were already worse


class AdapterBaseError(InputError):
    """The adapter was made from another prior than the one it is applied to."""


@dataclass(frozen=True)
class AdapterConfig:
    rank: int  # the factors' inner size; a matrix with a side under 2 x rank is kept whole
    base_fingerprint: str  # weights_fingerprint of the prior it was made from
    token_version: str  # the base prior's (sundae_core.token_version)
    purpose: str = ""  # what the fine-tune taught, for people choosing one

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"adapter rank must be >= 1, got {self.rank}")


@dataclass(frozen=True)
class PriorAdapter:
    config: AdapterConfig
    tensors: dict[str, torch.Tensor]  # <weight>.up (o r), <weight>.down (r i), <weight>.delta (the weight's shape)

    def changes(self) -> dict[str, torch.Tensor]:
        """Each adapted weight's change, float32, in the weight's shape."""
        out = {}
        for key, value in self.tensors.items():
            if key.endswith(WHOLE):
                out[key[: -len(WHOLE)]] = value.float()
            elif key.endswith(UP):
                name = key[: -len(UP)]
                out[name] = value.float() @ self.tensors[name + DOWN].float()
        return out


def base_fingerprint(prior: HourglassTransformer) -> str:
    """The fingerprint an adapter for `prior` must name: that of the prior its adapters were
    applied to, if any; else the one load_model recorded from the file (the dependable one:
    weights_fingerprint of a float16 copy differs); else that of its weights now."""
    return (getattr(prior, "adapted_from", None) or getattr(prior, "weights_fingerprint", None)
            or weights_fingerprint(prior.state_dict()))


def extract_adapter(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], rank: int,
                    token_version: str, purpose: str = "") -> PriorAdapter:
    """The change from `base` to `tuned` (state dicts of one prior config): each matrix whose
    sides are both at least 2 x rank as its best rank-`rank` approximation (truncated SVD, the
    singular values split evenly between the factors), every other changed tensor whole. Tensors
    that did not change are left out."""
    if set(base) != set(tuned) or any(base[k].shape != tuned[k].shape for k in base):
        raise InputError("the tuned prior's weights do not have the base's names and shapes: an adapter "
                         "holds the change of one prior config (fine-tune from the base, do not grow it)")
    config = AdapterConfig(rank=rank, base_fingerprint=weights_fingerprint(base), token_version=token_version,
                           purpose=purpose)
    tensors = {}
    for name in sorted(base):
        change = tuned[name].double() - base[name].double()
        if not bool(change.any()):
            continue
        if change.ndim == 2 and min(change.shape) >= 2 * rank:
            u, s, vh = torch.linalg.svd(change, full_matrices=False)
            root = s[:rank].sqrt()
            tensors[name + UP] = (u[:, :rank] * root).float()  # (o r)
            tensors[name + DOWN] = (root[:, None] * vh[:rank]).float()  # (r i)
        else:
            tensors[name + WHOLE] = change.float()
    return PriorAdapter(config, tensors)


def apply_adapter(prior: HourglassTransformer, adapter: PriorAdapter, strength: float = 1.0,
                  where: str = "") -> HourglassTransformer:
    """A new prior holding `prior`'s weights plus `strength` x the adapter's change, on the same
    device, in the same dtype and inference layout; `prior` itself is unchanged (and returned as
    it is at strength 0, unchecked). AdapterBaseError when the adapter was made from another
    prior, InputError when it does not fit this one (both prefixed with `where`, which names the
    node or flag)."""
    if not (0 <= strength <= MAX_STRENGTH):
        raise InputError(f"{where}adapter strength must be in [0, {MAX_STRENGTH:g}] (1 = as fine-tuned, "
                         f"0 = the prior alone), got {strength}")
    if strength == 0:  # the prior alone, whichever it is: how a workflow's adapter is switched off
        return prior
    fix = "load the prior it was made from, or set the strength to 0 to sample with this prior alone"
    version = prior.config.token_version or ""
    if adapter.config.token_version and version and adapter.config.token_version != version:
        raise AdapterBaseError(f"{where}this adapter was made from a prior of token version "
                               f"{adapter.config.token_version}, and the prior given reads {version}: {fix}")
    base = base_fingerprint(prior)
    if base != adapter.config.base_fingerprint:
        raise AdapterBaseError(f"{where}this adapter was made from the prior with weights fingerprint "
                               f"{adapter.config.base_fingerprint}, and the prior given has {base}: {fix}")
    state = {k: v.detach().float().cpu() for k, v in prior.state_dict().items()}
    for name, change in adapter.changes().items():
        if name not in state or state[name].shape != change.shape:
            raise InputError(f"{where}the adapter changes {name}, which the prior does not have in that shape")
        state[name] = state[name] + strength * change
    reference = next(prior.parameters())
    merged = for_inference(build_with_weights(prior.config, state, "the adapted prior"),
                           reference.device, reference.dtype)
    merged.weights_fingerprint = None  # new weights: fingerprinted from themselves if anyone asks
    merged.adapted_from = base  # so a second adapter of the same base stacks
    return merged


def save_adapter(path: str | Path, adapter: PriorAdapter, metadata: dict[str, str] | None = None) -> None:
    """bf16 factors (as the embedded models are stored; the change is small beside the weights, so
    its rounding is too), the config in the header, written atomically."""
    tensors = {k: v.to(torch.bfloat16) for k, v in adapter.tensors.items()}
    save_checkpoint(path, tensors, kind=KIND, config=to_dict(adapter.config), metadata=metadata)


def load_adapter(path: str | Path) -> PriorAdapter:
    """An adapter file, its keys and shapes checked against each other (that they fit a prior is
    checked when it is applied)."""
    ckpt = load_checkpoint(path, kind=KIND)
    try:
        config = from_dict(AdapterConfig, ckpt.config)
    except ConfigError as err:
        raise CheckpointError(f"{path}: embedded adapter config is invalid: {err}") from None
    problem = _factor_problem(ckpt.tensors, config.rank)
    if problem:
        raise CheckpointError(f"{path}: {problem}; the file is damaged or not a sundae prior adapter")
    return PriorAdapter(config, ckpt.tensors)


def _factor_problem(tensors: dict[str, torch.Tensor], rank: int) -> str | None:
    for key, value in tensors.items():
        if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
            return f"{key} is not finite floating point"
        if key.endswith(UP):
            name = key[: -len(UP)]
            down = tensors.get(name + DOWN)
            if down is None or value.ndim != 2 or down.ndim != 2 or value.shape[1] != rank or down.shape[0] != rank:
                return f"{key} has no matching {DOWN} factor of rank {rank}"
            if name + WHOLE in tensors:
                return f"{name} is changed both as factors and whole"
        elif key.endswith(DOWN):
            if key[: -len(DOWN)] + UP not in tensors:
                return f"{key} has no matching {UP} factor"
        elif not key.endswith(WHOLE):
            return f"unexpected key {key}"
    return None
