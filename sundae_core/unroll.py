"""The step-unrolled denoising loss (section 3.3).

logits_1 = f(z_0) with z_0 = corrupt(z); z_1 ~ Categorical(logits_1) (temperature 1, sampled, no
gradient through the sample); logits_2 = f(z_1); ... loss = mean over the T steps of the
cross-entropy of each step's logits against the clean tokens.

`block_share` > 0 mixes block corruption into step 1's corruption (corruption.py: a share of the
samples get a whole region redrawn, for inpainting); 0, the default, is the paper's loss.
`start` gives step 1's input where it is not -1, in place of the corruption: the prior trainer's
hole-set rows (the tokens a workflow encodes around a hidden hole, random tokens in it), whose
input is not a corruption of the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from .corruption import BlockShapes, corrupt
from .sampler import sample_categorical

LogitsFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass
class UnrolledLoss:
    loss: torch.Tensor  # scalar, mean of per_step (+ extra, when there is one)
    per_step: list[torch.Tensor]  # cross-entropy of each unrolled step (scalars)
    accuracy: torch.Tensor  # first step's token accuracy, a cheap training signal
    extra: torch.Tensor | None = None  # first_step_extra's term (included in loss), None without one


StepLoss = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# (z_0, labels, the first step's logits) -> a scalar added to the loss (the trainer's view distillation)
ExtraLoss = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]


def step_loss_fn(logits_fn: LogitsFn) -> StepLoss:
    """(z, labels, targets) -> (logits (b h w v), cross-entropy against targets): one unrolled step.
    Trainers may pass a compiled version of this (trainers/training/prior_step.py), which fuses the
    1000-way log-softmax with the network's last matmul."""
    def step_loss(z: torch.Tensor, labels: torch.Tensor | None, targets: torch.Tensor):
        logits = logits_fn(z, labels)
        return logits, F.cross_entropy(rearrange(logits, "b h w v -> (b h w) v").float(), targets.flatten())

    return step_loss


def unrolled_loss(logits_fn: LogitsFn | None, tokens: torch.Tensor, vocab_size: int, *, steps: int = 2,
                  generator: torch.Generator | None = None,
                  labels: torch.Tensor | None = None, block_share: float = 0.0,
                  block_shapes: BlockShapes = BlockShapes(), step_loss: StepLoss | None = None,
                  first_step_extra: ExtraLoss | None = None, start: torch.Tensor | None = None) -> UnrolledLoss:
    """tokens (b h w) clean targets; returns the mean cross-entropy over `steps` unrolled steps.

    block_share, block_shapes: block corruption for step 1, as in `corruption.corrupt`.
    step_loss: computes each step's logits and cross-entropy (default: `step_loss_fn(logits_fn)`).
    first_step_extra: a term on the first step's input and logits, added to the loss as it is
    (weighted by its maker) and reported as `extra`.
    start: (b h w) step 1's input where >= 0, the corruption's where -1 (module doc)."""
    if steps < 1:
        raise ValueError("unrolled_loss needs steps >= 1")
    step_loss = step_loss or step_loss_fn(logits_fn)
    z = corrupt(tokens, vocab_size, generator=generator, block_share=block_share,
                block_shapes=block_shapes).tokens
    if start is not None:  # drawn after the corruption, so the rows without a start draw as before
        z = torch.where(start >= 0, start, z)
    per_step, accuracy, extra = [], None, None
    for i in range(steps):
        logits, ce = step_loss(z, labels, tokens)  # logits (b h w v)
        per_step.append(ce)
        if i == 0:
            accuracy = (logits.detach().argmax(-1) == tokens).float().mean()
            if first_step_extra is not None:
                extra = first_step_extra(z, labels, logits)
        if i + 1 < steps:
            with torch.no_grad():
                flat = rearrange(logits.detach(), "b h w v -> (b h w) v")
                z = sample_categorical(flat, 1.0, generator).view_as(tokens)
    loss = torch.stack(per_step).mean()
    return UnrolledLoss(loss if extra is None else loss + extra, per_step, accuracy, extra)
