"""View distillation: train the prior's single reading of a grid towards what a frozen teacher
predicts from several shifted readings of it (`train.view_distill`).

Averaging the predictions of the grid moved by one token every way (sundae_core/shifted_views.py)
lifts the default prior's one-step hole top-1 from 0.384 to 0.399, at one network pass per view.
Distilling that average into the network itself asks whether one pass can learn what the views
know, so that sampling gets the gain without the passes. The teacher is a frozen copy of a prior
file (by default the run's `train.init`), read in bf16 without dropout; the student's first
unrolled step gets the cross-entropy against the teacher's distribution on the same corrupted
input, weighted by `train.view_distill`, beside the usual loss against the clean tokens. What is
logged (`distill`) is the KL divergence, which is 0 when the student matches the teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from sundae_core.config import HourglassConfig
from sundae_core.errors import ConfigError
from sundae_core.models import inference_dtype, load_prior
from sundae_core.sampler import model_logits_fn
from sundae_core.shifted_views import with_views
from sundae_core.token_version import versions_conflict
from sundae_core.unroll import ExtraLoss


def view_distill_loss(teacher: torch.nn.Module, views: int, weight: float) -> ExtraLoss:
    """(z_0, labels, student logits (b h w v)) -> weight x KL(teacher's views || student), the mean
    over positions; the teacher runs without gradients in its own dtype."""
    teacher_fn = with_views(model_logits_fn(teacher), views)

    def extra(z: torch.Tensor, labels: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            # the views' average of log-probabilities is unnormalised: a product of distributions
            target = rearrange(teacher_fn(z, labels), "b h w v -> (b h w) v").float().log_softmax(-1)
        student = rearrange(logits, "b h w v -> (b h w) v").float().log_softmax(-1)
        return weight * F.kl_div(student, target, log_target=True, reduction="batchmean")

    return extra


def load_teacher(path: str, student: HourglassConfig, device: torch.device) -> torch.nn.Module:
    """The frozen teacher: a prior file's weights in the inference dtype (models.inference_dtype),
    laid out for inference (load_prior returns it in eval mode, without gradients). It may differ
    from the student in size and depth, not in what its predictions mean: the vocabulary, the
    classes, the token version."""
    teacher = load_prior(path, device=device, dtype=inference_dtype(device))
    differ = [f for f in ("vocab_size", "num_classes") if getattr(teacher.config, f) != getattr(student, f)]
    if versions_conflict(teacher.config.token_version, student.token_version):
        differ.append("token_version")
    if differ:
        has = ", ".join(f"{f} {getattr(teacher.config, f)!r}" for f in differ)
        wants = ", ".join(f"{f} {getattr(student, f)!r}" for f in differ)
        raise ConfigError(f"train.view_distill's teacher {path} has {has} where the run's prior has {wants}: "
                          "set train.view_distill_teacher to a prior of the same tokens and classes")
    return teacher
