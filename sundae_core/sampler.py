"""SUNDAE sampling (section 3.4): start from random tokens, then repeatedly propose
z' ~ Categorical(softmax(f(z) / tau)) and let each position take its proposal with probability p.

Engineered for speed (method.md measured a naive Categorical draw as slow as the network):
- proposals are drawn only at positions that will be updated, by inverse-CDF sampling (one
  softmax, one cumsum, one uniform per position) instead of Gumbel noise over the vocabulary;
- samples that stopped changing are frozen and dropped from the batch: they cost nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from einops import rearrange

from .errors import InputError
from .schedules import Schedule, schedule_values

LogitsFn = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
SELECTIONS = ("random", "confidence")


@dataclass
class StepResult:
    tokens: torch.Tensor  # (b h w)
    changed: torch.Tensor  # (b,) bool: did any token of the sample change


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (b h w) final tokens
    steps_used: torch.Tensor  # (b,) int64: steps each sample ran before it froze
    history: list[torch.Tensor] = field(default_factory=list)  # snapshots (b h w), if asked for


def model_logits_fn(model: torch.nn.Module, compile: bool = False) -> LogitsFn:
    """Adapt a prior to the LogitsFn signature; runs in the model's own dtype (cast the model to
    bf16 once for inference rather than autocasting every call). compile=True: see compiled.py."""
    if compile:
        from .compiled import compiled_logits_fn

        return compiled_logits_fn(model)

    def logits_fn(tokens: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return model(tokens, labels)

    return logits_fn


def random_tokens(batch: int, height: int, width: int, vocab_size: int, *,
                  generator: torch.Generator | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
    """The uniform prior z_0: (b h w) int64."""
    if min(batch, height, width) < 1:
        raise InputError(f"random tokens need batch, height and width >= 1, got {batch}x{height}x{width}")
    return torch.randint(0, vocab_size, (batch, height, width), generator=generator, device=device)


def sample_categorical(logits: torch.Tensor, temperature: float,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (n v) -> indices (n,). temperature <= 0 is argmax."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    cdf = probs.cumsum_(-1)
    u = torch.rand(logits.shape[0], 1, generator=generator, device=logits.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp_(max=logits.shape[-1] - 1)


def _guided_logits(logits_fn: LogitsFn, tokens: torch.Tensor, labels: torch.Tensor | None,
                   guidance: float, null_label: int | None) -> torch.Tensor:
    if guidance == 0 or labels is None:
        return logits_fn(tokens, labels)
    if null_label is None:
        raise InputError("classifier-free guidance needs a prior trained with a null class "
                         "(num_classes > 0); set guidance to 0")
    null = torch.full_like(labels, null_label)
    both = logits_fn(torch.cat([tokens, tokens]), torch.cat([labels, null]))
    cond, uncond = both.float().chunk(2)
    return cond + guidance * (cond - uncond)


def denoise_step(logits_fn: LogitsFn, tokens: torch.Tensor, *, generator: torch.Generator | None = None,
                 temperature: float = 1.0, proportion: float = 0.5, repaint: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None, guidance: float = 0.0, null_label: int | None = None,
                 selection: str = "random") -> StepResult:
    """One SUNDAE step on tokens (b h w). `repaint` (b h w) bool: only True positions may change.

    selection="random": each position updates with probability `proportion` (the paper).
    selection="confidence": the `proportion` share of repaintable positions whose proposal is most
    probable updates (as in masked-token samplers).
    """
    if not 0.0 <= proportion <= 1.0:
        raise InputError(f"proportion must lie in [0, 1], got {proportion}")
    if selection not in SELECTIONS:
        raise InputError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    b, h, w = tokens.shape
    allowed = torch.ones_like(tokens, dtype=torch.bool) if repaint is None else repaint.expand(b, h, w)
    logits = _guided_logits(logits_fn, tokens, labels, guidance, null_label)
    flat_logits = rearrange(logits, "b h w v -> (b h w) v")
    new = tokens.clone()
    flat_new = new.view(-1)
    if selection == "random":
        update = (torch.rand(tokens.shape, generator=generator, device=tokens.device) < proportion) & allowed
        idx = update.view(-1).nonzero().squeeze(1)
        if idx.numel():
            flat_new[idx] = sample_categorical(flat_logits[idx], temperature, generator)
    else:
        idx = allowed.view(-1).nonzero().squeeze(1)
        if idx.numel():
            proposal = sample_categorical(flat_logits[idx], temperature, generator)
            logp = torch.log_softmax(flat_logits[idx].float(), -1).gather(1, proposal[:, None]).squeeze(1)
            # rank within each sample: take the top `proportion` of that sample's allowed positions
            score = torch.full((b * h * w,), float("-inf"), device=tokens.device)
            score[idx] = logp
            score = score.view(b, h * w)
            counts = (allowed.view(b, -1).sum(1).float() * proportion).round().long()
            order = score.argsort(dim=1, descending=True)
            ranks = torch.empty_like(order)
            ranks.scatter_(1, order, torch.arange(h * w, device=tokens.device).expand(b, -1))
            chosen = ranks < counts[:, None]
            chosen_flat = chosen.view(-1)[idx]
            flat_new[idx[chosen_flat]] = proposal[chosen_flat]
    changed = (new != tokens).view(b, -1).any(1)
    return StepResult(new, changed)


def sample(logits_fn: LogitsFn, tokens: torch.Tensor, *, generator: torch.Generator | None = None,
           steps: int = 100, temperature: Schedule = (1.0, 0.7), proportion: Schedule = 0.5,
           repaint: torch.Tensor | None = None, labels: torch.Tensor | None = None,
           guidance: float = 0.0, null_label: int | None = None, min_steps: int = 10,
           self_stop: bool = True, selection: str = "random",
           callback: Callable[[dict], None] | None = None, history_every: int = 0) -> SampleResult:
    """Run up to `steps` denoising steps from `tokens` (b h w).

    Self-stopping: once at least `min_steps` steps have run, a sample whose tokens did not change
    in a step is frozen and leaves the batch; sampling ends when every sample is frozen.
    `callback(info)` runs after every step with keys step, total, tokens, active, changed; an
    exception raised there (a user's cancel) propagates. `history_every=k` keeps every k-th state.
    """
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    b = tokens.shape[0]
    taus = schedule_values(temperature, steps, "temperature")
    props = schedule_values(proportion, steps, "proportion")
    if repaint is not None:
        repaint = repaint.to(tokens.device, torch.bool).expand_as(tokens)
    if labels is not None:
        labels = torch.as_tensor(labels, device=tokens.device).long().expand(b)
    tokens = tokens.clone()
    active = torch.ones(b, dtype=torch.bool, device=tokens.device)
    steps_used = torch.zeros(b, dtype=torch.long, device=tokens.device)
    history = [tokens.clone()] if history_every else []
    for step in range(steps):
        idx = active.nonzero().squeeze(1)
        # Subsetting every per-sample input to the running samples (the authors' batched
        # inpainting crashed here once one sample stopped).
        result = denoise_step(
            logits_fn, tokens[idx], generator=generator, temperature=taus[step], proportion=props[step],
            repaint=None if repaint is None else repaint[idx],
            labels=None if labels is None else labels[idx],
            guidance=guidance, null_label=null_label, selection=selection)
        tokens[idx] = result.tokens
        steps_used[idx] += 1
        changed = torch.zeros(b, dtype=torch.bool, device=tokens.device)
        changed[idx] = result.changed
        if self_stop and step + 1 >= min_steps:
            active[idx[~result.changed]] = False
        if history_every and ((step + 1) % history_every == 0 or step + 1 == steps):
            history.append(tokens.clone())
        if callback is not None:
            callback({"step": step + 1, "total": steps, "tokens": tokens, "active": active.clone(),
                      "changed": changed})
        if not bool(active.any()):
            if history_every and (step + 1) % history_every:  # keep the final state too
                history.append(tokens.clone())
            break
    return SampleResult(tokens, steps_used, history)
