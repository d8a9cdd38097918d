"""Socket types and input declarations the SUNDAE nodes share, and turning a seed into a generator.

Socket types (any Python object may travel on a socket):
  SUNDAE_VQGAN        sundae_core.vqgan.VQGAN on the chosen device
  SUNDAE_PRIOR        sundae_core.hourglass.HourglassTransformer
  SUNDAE_TOKENS       tokens (b h w) int64
  SUNDAE_LATENT_MASK  repaint (b h w) bool, True = may change
  SUNDAE_CLASS        labels (1,) int64, broadcast over the batch
"""

from __future__ import annotations

import torch

from sundae_core.errors import InputError

VQGAN, PRIOR, TOKENS, LATENT_MASK, CLASS = (
    "SUNDAE_VQGAN", "SUNDAE_PRIOR", "SUNDAE_TOKENS", "SUNDAE_LATENT_MASK", "SUNDAE_CLASS")
CATEGORY = "sundae"
SEED_MAX = 0xFFFF_FFFF_FFFF_FFFF


def seed_input(tooltip: str) -> tuple:
    return ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                    "tooltip": tooltip})


def socket(kind: str, tooltip: str) -> tuple:
    return (kind, {"tooltip": tooltip})


VQGAN_INPUT = socket(VQGAN, "The VQ-GAN that defines the token space (from Load SUNDAE VQ-GAN).")
PRIOR_INPUT = socket(PRIOR, "The SUNDAE prior that denoises tokens (from Load SUNDAE Prior).")
MASK_INPUT = socket(LATENT_MASK, "Optional: only these tokens may change (from SUNDAE Latent Mask); "
                                 "without it every token may change.")
CLASS_INPUT = socket(CLASS, "Optional class to condition on (from SUNDAE Class Label); class-conditional "
                            "priors only.")


def generator_for(seed: int, device: torch.device | str) -> torch.Generator:
    """A fresh generator on `device` seeded from the node's own seed input."""
    return torch.Generator(device=device).manual_seed(int(seed))


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_mask(mask: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor | None:
    """The latent mask on the tokens' device, after checking it fits their grid."""
    if mask is None:
        return None
    if mask.shape[-2:] != tokens.shape[-2:] or mask.shape[0] not in (1, tokens.shape[0]):
        raise InputError(f"latent mask {tuple(mask.shape)} does not fit tokens {tuple(tokens.shape)}; "
                         "make the mask from the same image size (and batch) as the tokens")
    return mask.to(tokens.device)
