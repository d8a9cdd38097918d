"""VQ-GAN training losses as pure functions over tensors (the models stay loss-free).

Generator side: L = L1 + w_p * LPIPS + lambda * d_factor * L_gan + w_q * L_codebook, with
  lambda = ||grad_{G_last} L_rec|| / (||grad_{G_last} L_gan|| + 1e-4), clamped to [0, 1e4],
  detached, times disc_weight (0.5), where L_rec = L1 + w_p * LPIPS and G_last is the decoder's
  last conv weight (Esser et al. eq. 7). d_factor is 0 before `disc_start`, so early training is
  a plain autoencoder. Discriminator side: hinge loss (or the non-saturating "vanilla" loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from sundae_core.errors import InputError

ADAPTIVE_WEIGHT_MAX = 1e4


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(G(z)))): zero once real > 1 and fake < -1."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (mean softplus(-D(x)) + mean softplus(D(G(z)))): binary cross-entropy on logits."""
    return 0.5 * (F.softplus(-logits_real.float()).mean() + F.softplus(logits_fake.float()).mean())


D_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "hinge": hinge_d_loss,
    "vanilla": vanilla_d_loss,
}


def g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator adversarial loss -mean D(G(z)) (used with either discriminator loss)."""
    return -logits_fake.float().mean()


def disc_factor(step: int, disc_start: int) -> float:
    """1.0 from `disc_start` on, 0.0 before: the adversarial terms switch on at that step."""
    return 1.0 if step >= disc_start else 0.0


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer_weight: torch.Tensor,
                    disc_weight: float = 0.5) -> torch.Tensor:
    """lambda = ||dL_rec/dW|| / (||dL_gan/dW|| + 1e-4), clamped to [0, 1e4], detached, * disc_weight.

    Both losses must still have their graphs (it differentiates with retain_graph=True, leaving
    .grad untouched). Balances the GAN gradient against the reconstruction gradient at the
    decoder's last layer W, so neither term drowns the other whatever their scales.
    """
    if not (rec_loss.requires_grad and gan_loss.requires_grad):
        raise InputError("adaptive_weight needs both losses with gradients (call it inside the "
                         "training step, not under torch.no_grad)")
    rec_grad, = torch.autograd.grad(rec_loss, last_layer_weight, retain_graph=True)
    gan_grad, = torch.autograd.grad(gan_loss, last_layer_weight, retain_graph=True)
    weight = rec_grad.float().norm() / (gan_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, ADAPTIVE_WEIGHT_MAX).detach() * disc_weight


@dataclass(frozen=True)
class GeneratorLoss:
    """All terms of the generator (autoencoder) objective; `total` is what to backpropagate.
    Every other field is detached, for logging."""

    total: torch.Tensor
    l1: torch.Tensor
    perceptual: torch.Tensor
    rec: torch.Tensor
    gan: torch.Tensor
    gan_weight: torch.Tensor
    codebook: torch.Tensor


def generator_loss(images: torch.Tensor, reconstructions: torch.Tensor, codebook_loss: torch.Tensor, *,
                   perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
                   logits_fake: torch.Tensor | None = None,
                   last_layer_weight: torch.Tensor | None = None,
                   perceptual_weight: float = 1.0, codebook_weight: float = 1.0,
                   disc_weight: float = 0.5, gan_factor: float = 0.0) -> GeneratorLoss:
    """The autoencoder objective of one step.

    images, reconstructions: (b c h w) in [-1, 1]. perceptual: e.g. an `LPIPS` module, returning
    (b,). logits_fake: the discriminator on `reconstructions` (gradients must reach the decoder).
    gan_factor: `disc_factor(step, disc_start)`; when 0 (or no logits are given) the adversarial
    term and its adaptive weight are skipped entirely.
    """
    if images.shape != reconstructions.shape:
        raise InputError(f"images {tuple(images.shape)} and reconstructions "
                         f"{tuple(reconstructions.shape)} differ in shape")
    x, x_rec = images.float(), reconstructions.float()
    l1 = (x - x_rec).abs().mean()
    if perceptual is not None and perceptual_weight > 0:
        p = perceptual(x.contiguous(), x_rec.contiguous()).mean()
    else:
        p = x.new_zeros(())
    rec = l1 + perceptual_weight * p
    zero = x.new_zeros(())
    gan, weight = zero, zero
    total = rec
    if gan_factor > 0 and logits_fake is not None:
        if last_layer_weight is None:
            raise InputError("generator_loss with a GAN term needs last_layer_weight (vqgan.last_layer())")
        gan = g_loss(logits_fake)
        weight = adaptive_weight(rec, gan, last_layer_weight, disc_weight)
        total = total + weight * gan_factor * gan
    # the codebook term last: `train_step` has always summed in this order (float sums are
    # order-sensitive in their last bits)
    total = total + codebook_weight * codebook_loss.float()
    return GeneratorLoss(total, l1.detach(), p.detach(), rec.detach(), gan.detach(), weight,
                         codebook_loss.detach().float())
