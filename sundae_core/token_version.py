"""What a token id means: the version of the encoder and quantizer that define the tokens.

A prior learns the statistics of one VQ-GAN's tokens. Paired with a VQ-GAN whose encoder differs,
its ids mean other pictures and it silently draws garbage. So:
- a VQ-GAN's token version is a digest of what turns pixels into ids (the encoder, `quant_conv`,
  the quantizer, and the config fields that shape the id space), taken over the weights rounded to
  bf16, so the fp32 training file and the bf16 shipped file have the same version, and training
  the decoder alone (`train.freeze_encoder`) keeps it;
- a prior records the version of the tokens it was trained on (`HourglassConfig.token_version`,
  from the latent dataset's manifest); "" means unknown (priors made before versions existed);
- `check_pair` refuses a prior and a VQ-GAN of different versions with one line, and token grids
  that travel between nodes carry their version (`tag` / `version_of`) so a node that meets a
  prior or a VQ-GAN can refuse tokens of another.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .errors import InputError

# The state-dict prefixes of the modules that map pixels to ids (the decoder is not among them).
ENCODING_PARTS = ("encoder.", "quant_conv.", "quantize.")
# Config fields that change what an id means without changing those weights' shapes.
ENCODING_FIELDS = ("n_embed", "embed_dim", "quantizer", "fsq_levels", "l2_normalize_codes", "ch_mult",
                   "in_channels")
DIGITS = 12  # hex digits kept: short enough to read in a message, ample against collisions
_TAG = "sundae_token_version"


class TokenVersionError(InputError):
    """A prior or a token grid meets a VQ-GAN whose tokens mean something else."""


def compute_token_version(vqgan: nn.Module) -> str:
    """The digest of `vqgan`'s encoding parts (see the module doc): 12 hex digits."""
    config = {k: getattr(vqgan.config, k) for k in ENCODING_FIELDS if hasattr(vqgan.config, k)}
    return token_version_of(config, vqgan.state_dict())


def token_version_of(config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> str:
    """The same digest from a VQ-GAN's config fields and state dict, e.g. a checkpoint's config
    and tensors as read from its file, without building the model."""
    h = hashlib.sha256()
    config = {k: config[k] for k in ENCODING_FIELDS if k in config}
    h.update(json.dumps(config, sort_keys=True, default=list).encode())
    for name, tensor in sorted(state.items()):
        if name.startswith(ENCODING_PARTS) and tensor.is_floating_point():
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:DIGITS]


def versions_conflict(a: str, b: str) -> bool:
    """Two token versions disagree: both known and different (an unknown "" matches any)."""
    return bool(a and b and a != b)


def check_pair(vqgan_version: str, prior_version: str, where: str = "") -> None:
    """TokenVersionError when both versions are known and differ."""
    if versions_conflict(vqgan_version, prior_version):
        raise TokenVersionError(
            f"{where}the prior was trained on the tokens of VQ-GAN version {prior_version}, but this VQ-GAN's "
            f"tokens are version {vqgan_version}: the prior would draw noise. Load the VQ-GAN the prior was "
            "trained with (its token version is in the prior's model card or `sundae.token_version` metadata), "
            "or train a prior on this VQ-GAN's tokens")


def tag(tokens: torch.Tensor, version: str) -> torch.Tensor:
    """`tokens` marked with the token version they belong to ("" = unknown); returns `tokens`."""
    setattr(tokens, _TAG, version)
    return tokens


def version_of(tokens: torch.Tensor) -> str:
    """The version `tag` put on `tokens`, or "" (unknown: made by other code, or by an operation
    that returned a new tensor)."""
    return getattr(tokens, _TAG, "")


def check_tokens(tokens: torch.Tensor, version: str, what: str) -> None:
    """TokenVersionError when `tokens` carry a known version other than `version`, the token version
    of `what` (e.g. "this prior")."""
    mine = version_of(tokens)
    if versions_conflict(mine, version):
        raise TokenVersionError(
            f"these tokens come from a VQ-GAN of token version {mine}, but {what} works on version {version}; "
            "use the same VQ-GAN (or the VQ-GAN the prior was trained with) throughout the workflow")
