"""The prior's training step: one unrolled step's logits and cross-entropy, eager or compiled.

Profiled on the shipped emoji prior (batch 16, 2-step unroll, 2 threads, Intel with AMX), an eager
step spent about a third of its time outside matmuls and attention: autocast copies, rearranges,
layer norms, GELU, residual adds, the rotary tables, and the 1000-way log-softmax in float32 over
16 k positions (its forward and backward alone were 8 % of the step). `torch.compile` (Inductor's
C++ backend) fuses that work into a few kernels; the matmuls and attention stay oneDNN's. The
unrolled loop itself (corruption, the sample between steps) stays eager: it is cheap and random.

`train.compile` turns it on; the first step then takes a minute or two of compiling, reported
apart from the step time. tests/test_prior_step.py shows the compiled step gives the eager step's
loss and gradients within bf16 tolerance.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from einops import rearrange

from sundae_core.compiled import require_compiler
from sundae_core.unroll import ExtraLoss, StepLoss, UnrolledLoss, unrolled_loss


def make_step_loss(model: torch.nn.Module, *, bf16: bool, compile: bool) -> StepLoss:
    """(z, labels, targets) -> (logits (b h w v), mean cross-entropy in float32), with the network
    under bf16 autocast when `bf16`. Compiled, the inputs are not checked per call (their host
    syncs would split the graph): the trainer's data is checked when it loads."""
    network = model.unchecked_logits if compile else model
    device_type = next(model.parameters()).device.type

    def step_loss(z: torch.Tensor, labels: torch.Tensor | None, targets: torch.Tensor):
        with torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else nullcontext():
            logits = network(z, labels)
        ce = F.cross_entropy(rearrange(logits, "b h w v -> (b h w) v").float(), targets.flatten())
        return logits, ce

    if not compile:
        return step_loss
    require_compiler(next(model.parameters()).device)
    return torch.compile(step_loss)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, ...],
                   fused: bool, lr_scales: Mapping[str, float] | None = None) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms, biases or embeddings); `fused`: one
    kernel for all parameters instead of a dozen small ops per tensor. `lr_scales` {parameter name:
    multiplier} puts those parameters in groups of their own whose "lr_scale" the trainer's
    schedule multiplies (the blocks sundae-grow-prior added: train.grown_lr_scale)."""
    lr_scales = lr_scales or {}
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        decays = not (p.ndim < 2 or "embed" in name)
        groups.setdefault((decays, lr_scales.get(name, 1.0)), []).append(p)
    # the unscaled pair first, in the order runs before lr_scales saved their optimiser state in
    order = sorted(groups, key=lambda key: (key[1] != 1.0, key[1], not key[0]))
    param_groups = [{"params": groups[key], "weight_decay": weight_decay if key[0] else 0.0, "lr_scale": key[1]}
                    for key in order]
    return torch.optim.AdamW(param_groups, lr=lr, betas=tuple(betas), fused=fused or None)


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, step_loss: StepLoss, tokens: torch.Tensor,
               labels: torch.Tensor | None, tc, noise: torch.Generator,
               sync: Callable[[torch.nn.Module], None] = lambda module: None,
               optimizer_step: Callable[[torch.optim.Optimizer, torch.Tensor], object] | None = None,
               first_step_extra: ExtraLoss | None = None,
               start: torch.Tensor | None = None) -> tuple[UnrolledLoss, torch.Tensor]:
    """One training step of the prior on tokens (b h w) and labels (b,) or None, as the trainer
    runs it (`sundae-bench-train` times this same function): label dropout to the null class, the
    unrolled loss with the config's corruption, backward, `sync` (gradient averaging across ranks),
    clipping, then `optimizer_step(opt, loss)` (default: opt.step()). `tc` is the run's train
    config. `first_step_extra`: a term on the first unrolled step (view_distill.py). Returns the
    loss and the gradient norm before clipping. `start`: step 1's given input (unroll.unrolled_loss),
    -1 where the corruption draws it.

    With `tc.accumulate` = k > 1 the batch runs as k micro-batches of b / k, each backward adding
    1 / k of its gradient, before one optimiser step: the update of batch b in the memory of b / k
    (the unrolled loss is a mean over samples, so the sum of the parts is the whole's gradient;
    the corruption is drawn per micro-batch, so the draws differ from one batch of b)."""
    num_classes = model.config.num_classes
    if labels is not None and tc.label_dropout:
        drop = torch.rand(labels.shape, generator=noise, device=labels.device) < tc.label_dropout
        labels = torch.where(drop, torch.full_like(labels, num_classes), labels)
    parts = tc.accumulate
    opt.zero_grad(set_to_none=True)
    outs = []
    for part_tokens, part_labels, part_start in zip(tokens.chunk(parts), _chunks(labels, parts),
                                                    _chunks(start, parts)):
        out = unrolled_loss(None, part_tokens, model.config.vocab_size, steps=tc.unroll_steps, generator=noise,
                            labels=part_labels, block_share=tc.block_corruption, block_shapes=tc.block_shapes,
                            step_loss=step_loss, first_step_extra=first_step_extra, start=part_start)
        (out.loss / parts if parts > 1 else out.loss).backward()
        outs.append(out)
    out = outs[0] if parts == 1 else _mean_of(outs)
    sync(model)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip or float("inf"))
    if optimizer_step is None:
        opt.step()
    else:
        optimizer_step(opt, out.loss)
    return out, grad_norm


def _chunks(rows: torch.Tensor | None, parts: int) -> list[torch.Tensor | None]:
    return [None] * parts if rows is None else list(rows.chunk(parts))


def _mean_of(outs: list[UnrolledLoss]) -> UnrolledLoss:
    """The micro-batches' losses as one batch's (equal parts, so the plain mean), detached: their
    gradients are already in the parameters."""
    mean = lambda values: torch.stack([v.detach() for v in values]).mean()
    return UnrolledLoss(loss=mean([o.loss for o in outs]),
                        per_step=[mean(step) for step in zip(*(o.per_step for o in outs))],
                        accuracy=mean([o.accuracy for o in outs]),
                        extra=None if outs[0].extra is None else mean([o.extra for o in outs]))
