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

    With `check_every` > 1 and a fused optimizer in one process, nothing waits for the device: the
    fused kernel itself skips a non-finite update (its `found_inf` input, as torch's GradScaler
    uses it), the streak of skipped steps is counted on the device, and `check` reads it only
    every `check_every` steps or when forced (before a checkpoint). A per-step read would stall a
    GPU run on the host once per step. A streak is never missed between reads: the longest one
    since the last read is kept.
    """

    def __init__(self, limit: int = SKIPS_IN_A_ROW, check_every: int = 1):
        self.limit = limit
        self.check_every = check_every
        self.in_a_row: dict[int, int] = {}  # id(optimizer) -> consecutive skipped steps
        self.lazy: dict[int, dict[str, torch.Tensor]] = {}  # id(optimizer) -> device counters

    @classmethod
    def for_device(cls, device: torch.device, read_every: int) -> "NonFiniteGuard":
        """Checked every step on the CPU, where a read costs nothing; on a GPU read only every
        `read_every` steps (the log interval), so the host never waits for the device between."""
        return cls(check_every=1 if device.type == "cpu" else read_every)

    def step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> bool | None:
        """optimizer.step() when loss and gradients are finite; returns whether it stepped, or
        None on the lazy path (the device knows; `check` reads it)."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        bad = (~_all_finite([loss.detach(), *grads])).float()
        key = id(optimizer)
        if self.check_every > 1 and dist.world() == 1 and optimizer.defaults.get("fused"):
            self._lazy_step(optimizer, key, bad)
            return None
        if dist.world() > 1:
            bad = dist.all_reduce_sum(bad.reshape(1))  # any rank's bad step is every rank's
        if bool(bad.sum() > 0):
            optimizer.zero_grad(set_to_none=True)
            self.in_a_row[key] = self.in_a_row.get(key, 0) + 1
            return False
        optimizer.step()
        self.in_a_row[key] = 0
        return True

    def _lazy_step(self, optimizer: torch.optim.Optimizer, key: int, bad: torch.Tensor) -> None:
        optimizer.found_inf = bad  # the fused kernel leaves weights, moments and step count alone
        try:
            optimizer.step()
        finally:
            optimizer.found_inf = None
        c = self.lazy.setdefault(key, {"streak": torch.zeros_like(bad), "longest": torch.zeros_like(bad)})
        c["streak"].add_(bad).mul_(bad)  # +1 on a bad step, back to 0 on a good one
        torch.maximum(c["longest"], c["streak"], out=c["longest"])

    def _read_lazy(self) -> None:
        """Fold the device counters into `in_a_row` (the longest streak since the last read) and
        restart them; one host sync."""
        for key, c in self.lazy.items():
            self.in_a_row[key] = int(c["longest"].item())
            c["longest"].copy_(c["streak"])

    def check(self, step: int, force: bool = False) -> None:
        """Warn about a skipped step; raise TrainingDiverged after `limit` in a row. `step` is the
        1-based number of the training step just done. On the lazy path the counters are read
        every `check_every` steps, or now when `force`."""
        if self.lazy:
            if not force and step % self.check_every:
                return
            self._read_lazy()
        worst = max(self.in_a_row.values(), default=0)
        if worst >= self.limit:
            raise TrainingDiverged(
                f"training diverged at step {step}: the loss or gradients were NaN or infinite for {worst} "
                "steps in a row, so the run stopped; the last checkpoint in the run folder is kept: "
                "resume with a lower learning rate (--set train.lr=<smaller value>)")
        if worst and dist.is_main():
            WARNINGS.warning(f"step {step}: the loss or gradients are NaN or infinite; the update was skipped "
                             f"({worst} in a row, the run stops at {self.limit})")
