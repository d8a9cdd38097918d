"""What both training loops do when a step goes NaN or infinite: skip that optimizer step, and
stop the run after a few such steps in a row, before a checkpoint could carry the damage.

A single bad batch (a rare overflow) should not end a long run, so one skipped step is only a
warning; several in a row mean the run has diverged (too high a learning rate, as a rule).
"""

from __future__ import annotations

from typing import Iterable

import torch

from sundae_core.cli import WARNINGS
from sundae_core.errors import SundaeError

from . import distributed as dist

SKIPS_IN_A_ROW = 5  # consecutive non-finite steps that stop a run


class TrainingDiverged(SundaeError):
    """Losses, gradients or weights went NaN or infinite; the last checkpoint on disk is kept."""


def first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf, or None when all are finite."""
    floats = [(k, t) for k, t in tensors.items() if t.is_floating_point()]
    if not floats or bool(_all_finite(t for _, t in floats)):
        return None  # the common case costs one host sync, not one per tensor
    return next(k for k, t in floats if not bool(torch.isfinite(t).all()))


def _all_finite(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """One 0-dim bool tensor: every element of every tensor is finite (no sync per tensor)."""
    flags = [torch.isfinite(t).all() for t in tensors]
    return torch.stack(flags).all() if flags else torch.tensor(True)


class NonFiniteGuard:
    """Steps an optimizer only when the loss and every gradient are finite.

    `step(optimizer, loss)` replaces `optimizer.step()`; `check(step)` after each training step
    raises TrainingDiverged once one optimizer skipped SKIPS_IN_A_ROW steps in a row. Under
    torchrun every rank takes the same decision (the flag is summed over ranks), so the ranks'
    weights stay identical.
    """

    def __init__(self, limit: int = SKIPS_IN_A_ROW):
        self.limit = limit
        self.in_a_row: dict[int, int] = {}  # id(optimizer) -> consecutive skipped steps

    def step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> bool:
        """optimizer.step() when loss and gradients are finite; returns whether it stepped."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        bad = (~_all_finite([loss.detach(), *grads])).float()
        if dist.world() > 1:
            bad = dist.all_reduce_sum(bad.reshape(1))  # any rank's bad step is every rank's
        key = id(optimizer)
        if bool(bad.sum() > 0):
            optimizer.zero_grad(set_to_none=True)
            self.in_a_row[key] = self.in_a_row.get(key, 0) + 1
            return False
        optimizer.step()
        self.in_a_row[key] = 0
        return True

    def check(self, step: int) -> None:
        """Warn about a skipped step; raise TrainingDiverged after `limit` in a row. `step` is the
        1-based number of the training step just done."""
        worst = max(self.in_a_row.values(), default=0)
        if worst >= self.limit:
            raise TrainingDiverged(
                f"training diverged at step {step}: the loss or gradients were NaN or infinite for {worst} "
                "steps in a row, so the run stopped; the last checkpoint in the run folder is kept: "
                "resume with a lower learning rate (--set train.lr=<smaller value>)")
        if worst and dist.is_main():
            WARNINGS.warning(f"step {step}: the loss or gradients are NaN or infinite; the update was skipped "
                             f"({worst} in a row, the run stops at {self.limit})")
