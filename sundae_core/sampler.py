"""SUNDAE sampling (paper section 3.4): start from random tokens, then repeatedly propose
z' ~ Categorical(softmax(f(z) / tau)) and let each position take its proposal with probability p.

The surface, after k-diffusion's small explicit samplers: one frozen `SamplerSettings` holds every
knob of a run, with its defaults and its limits (`LIMITS`) defined once here; the ComfyUI nodes
take their defaults, minima and maxima from it, the CLIs their flags (trainers/sampling/sampler_flags.py),
the prior trainer its sample grids. `sample(logits_fn, tokens, settings, ...)` runs it (the
settings were validated when built, not per step); `denoise_step` is the one-step primitive and
checks its own arguments against the same limits.

Engineered for speed (a default Categorical draw over the vocabulary costs about half a network
step at FFHQ1024's size; docs/architecture.md, "Sampler cost"):
- proposals are drawn only at positions that will be updated, by inverse-CDF sampling (one
  softmax, one cumsum, one uniform per position) instead of Gumbel noise over the vocabulary;
- samples that stopped changing are frozen and dropped from the batch: they cost nothing more.

Self-stopping generalises the paper's "stop once a step changes nothing" to partial updates: a
step at proportion p only looks at about p of the positions, so a step that changed nothing says
nothing of the rest. A sample stops once every position it may change has been looked at (drawn
for update) and kept its token since the sample last changed. At p = 1 that is the paper's rule;
at p = 0.2 the old one stopped 8 x 8-token inpaints after ~13 steps with ~5 % of the hole never
drawn, so the random tokens it started from were decoded as coloured speckles.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Callable, Mapping

import torch
from einops import rearrange

from .cpu_memory import reuse_freed_memory
from .errors import InputError
from .logits_at import logits_at
from .schedules import schedule_values
from .shifted_views import VIEW_SHIFTS, with_views

LogitsFn = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
SELECTIONS = ("random", "confidence")
# The one home of every sampler limit: (low, high), both inclusive. Nodes use them as widget
# min/max, SamplerSettings and denoise_step refuse anything outside them.
LIMITS: dict[str, tuple[float, float]] = {
    "steps": (1, 10_000),
    "min_steps": (0, 10_000),
    "temperature": (0.0, 10.0),  # 0 = argmax
    "proportion": (0.0, 1.0),  # 0 changes nothing (an invariant the tests check)
    "guidance": (0.0, 20.0),  # 0 = off
    "views": (1, len(VIEW_SHIFTS)),  # 1 = the grid as it is (shifted_views.py)
}
# the settings counted in whole numbers (INT widgets on the nodes); the rest are real numbers
WHOLE_SETTINGS = ("steps", "min_steps", "views")
# What each setting does, in one wording for CLI help and error messages (and node tooltips where
# the node has nothing more specific to say).
MEANINGS: dict[str, str] = {
    "steps": "the most denoising steps a sample runs",
    "min_steps": "steps before self-stopping may end a sample",
    "temperature": "sampling temperature; 0 = the most likely token",
    "proportion": "share of tokens updated per step",
    "self_stop": "stop a sample once every token it may change was redrawn and kept since it last changed "
                 "(after min_steps)",
    "guidance": "classifier-free guidance strength for class-conditional priors; 0 = off",
    "views": ("how many copies of the token grid, moved by one position, the prior reads each step; "
              "their predictions are averaged (1 = the grid alone; each view costs a network pass)"),
    "selection": ("which tokens take their proposal: 'random' (each with probability proportion, the "
                  "paper) or 'confidence' (the proportion share whose proposals most outrank the token there now; "
                  "on the default model it draws worse from noise, where canvases end empty, and in holes)"),
}


class SamplerSettingError(InputError):
    """A sampler setting out of its limits; `.setting` names the SamplerSettings field, so a CLI
    or a config can say which of its own flags or keys to change."""

    def __init__(self, setting: str, message: str):
        super().__init__(message)
        self.setting = setting


def check_setting(name: str, value: Any) -> None:
    """Refuse a number outside LIMITS[name] (NaN included), naming the setting and its range."""
    low, high = LIMITS[name]
    whole = name in WHOLE_SETTINGS
    ok_type = isinstance(value, Integral) if whole else isinstance(value, Real)
    if isinstance(value, bool) or not ok_type:
        kind = "a whole number" if whole else "a number"
        raise SamplerSettingError(name, f"sampler {name} must be {kind}, got {value!r}")
    if not low <= value <= high:  # NaN fails this too
        raise SamplerSettingError(name, f"sampler {name} {value!r} is outside [{low:g}, {high:g}] "
                                        f"({MEANINGS[name]}); use a value in that range")


def check_selection(selection: Any) -> None:
    if selection not in SELECTIONS:
        raise SamplerSettingError("selection", f"sampler selection must be one of {', '.join(SELECTIONS)}, "
                                               f"got {selection!r}")


def _schedule(name: str, spec: Any, steps: int) -> float | tuple[float, ...]:
    """A number, a (start, end) pair or one value per step; every value within LIMITS[name]."""
    if isinstance(spec, (Real, str)) or spec is None:
        check_setting(name, spec)
        return float(spec)
    try:
        values = tuple(spec)
    except TypeError:
        raise SamplerSettingError(name, f"sampler {name} must be a number, a (start, end) pair or "
                                        f"{steps} values, got {spec!r}") from None
    for v in values:
        check_setting(name, v)
    if len(values) not in (1, 2, steps):
        raise SamplerSettingError(name, f"sampler {name}: give a number, a (start, end) pair or {steps} "
                                        f"values (one per step); got {len(values)} values")
    if len(values) == 1:  # [0.8] is the constant 0.8
        return float(values[0])
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class SamplerSettings:
    """Every knob of one SUNDAE sampling run, checked against LIMITS when built.

    temperature and proportion are schedules: a number (constant), a (start, end) pair (annealed
    linearly over `steps`) or one value per step. Defaults: the paper's FFHQ1024 sampler.
    """

    steps: int = 100
    temperature: float | tuple[float, ...] = (1.0, 0.7)
    proportion: float | tuple[float, ...] = 0.5
    min_steps: int = 10
    self_stop: bool = True
    guidance: float = 0.0
    selection: str = "random"
    views: int = 1

    def __post_init__(self) -> None:
        check_setting("steps", self.steps)
        check_setting("min_steps", self.min_steps)
        check_setting("guidance", self.guidance)
        check_setting("views", self.views)
        check_selection(self.selection)
        if not isinstance(self.self_stop, bool):
            raise SamplerSettingError("self_stop", f"sampler self_stop must be true or false, got {self.self_stop!r}")
        # frozen: normalise through object.__setattr__ (lists become tuples, ints floats)
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "min_steps", int(self.min_steps))
        object.__setattr__(self, "views", int(self.views))
        object.__setattr__(self, "guidance", float(self.guidance))
        object.__setattr__(self, "temperature", _schedule("temperature", self.temperature, self.steps))
        object.__setattr__(self, "proportion", _schedule("proportion", self.proportion, self.steps))

    def temperatures(self) -> list[float]:
        """The temperature of every step (`steps` values)."""
        return schedule_values(self.temperature, self.steps, "temperature")

    def proportions(self) -> list[float]:
        """The proportion of every step (`steps` values)."""
        return schedule_values(self.proportion, self.steps, "proportion")

    def replace(self, **changes: Any) -> "SamplerSettings":
        """A copy with some settings changed, validated again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: schedules as lists, plus temperature_start / temperature_end (the first and
        last step's temperature), the spelling of the SundaeSample node and the CSV reports."""
        taus = self.temperatures()
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("temperature", "proportion"):
            if isinstance(data[name], tuple):
                data[name] = list(data[name])
        return {**data, "temperature_start": taus[0], "temperature_end": taus[-1]}

    @classmethod
    def from_node_inputs(cls, inputs: Mapping[str, Any]) -> "SamplerSettings":
        """From the SundaeSample node's inputs (a workflow's widget values): temperature as
        temperature_start / temperature_end; inputs that are not settings are ignored."""
        names = {f.name for f in dataclasses.fields(cls)} - {"temperature"}
        kwargs = {k: v for k, v in inputs.items() if k in names}
        if "temperature_start" in inputs or "temperature_end" in inputs:
            default = cls().temperature
            kwargs["temperature"] = (inputs.get("temperature_start", default[0]),
                                     inputs.get("temperature_end", default[-1]))
        return cls(**kwargs)


DEFAULT_SETTINGS = SamplerSettings()


@dataclass
class StepResult:
    tokens: torch.Tensor  # (b h w)
    changed: torch.Tensor  # (b,) bool: did any token of the sample change
    # (b h w) bool: positions whose proposal was drawn this step (kept or changed); self-stopping
    # counts a position as settled only once it has been looked at
    looked: torch.Tensor


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (b h w) final tokens
    steps_used: torch.Tensor  # (b,) int64: steps each sample ran before it froze
    history: list[torch.Tensor] = field(default_factory=list)  # snapshots (b h w), if asked for


class PriorLogits:
    """The LogitsFn of a prior network that can also give logits at chosen positions only.

    A step updates about `proportion` of the positions (when inpainting, only the hole's), and
    the vocabulary head costs 2 d V FLOPs per position (V = 1000 to 8192): `at` runs the trunk
    over the whole grid, as it must, and the head only where the step will draw a proposal.
    The sampler uses `at` when a LogitsFn has it; any plain callable works too.
    """

    def __init__(self, model: torch.nn.Module, compile: bool = False):
        self.model = model
        if compile:
            from .compiled import compiled_features_fn

            self.features = compiled_features_fn(model)
        else:
            self.features = model.unchecked_features

    def __call__(self, tokens: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """logits (b h w v)."""
        self.model.check_inputs(tokens, labels)
        return self.model.head(self.features(tokens, labels))

    def at(self, tokens: torch.Tensor, labels: torch.Tensor | None, positions: torch.Tensor) -> torch.Tensor:
        """logits (n v) at `positions`, flat indices into (b h w)."""
        self.model.check_inputs(tokens, labels)
        features = rearrange(self.features(tokens, labels), "b h w d -> (b h w) d")
        return self.model.head(features[positions])


def model_logits_fn(model: torch.nn.Module, compile: bool = False) -> PriorLogits:
    """Adapt a prior to the LogitsFn signature; runs in the model's own dtype (cast the model to
    bf16 once for inference rather than autocasting every call). compile=True: see compiled.py."""
    return PriorLogits(model, compile=compile)


def random_tokens(batch: int, height: int, width: int, vocab_size: int, *,
                  generator: torch.Generator | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
    """The uniform prior z_0: (b h w) int64."""
    if min(batch, height, width) < 1:
        raise InputError(f"random tokens need batch, height and width >= 1, got {batch}x{height}x{width}")
    return torch.randint(0, vocab_size, (batch, height, width), generator=generator, device=device)


def random_labels(batch: int, num_classes: int, *, generator: torch.Generator | None = None,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """One class per sample, uniform over a class-conditional prior's classes: (b,) int64. Sampling
    with these and no guidance draws from the classes' even mixture, where the null class draws
    the mix the prior was trained on."""
    if batch < 1 or num_classes < 1:
        raise InputError(f"random labels need batch and num_classes >= 1, got {batch} and {num_classes}")
    return torch.randint(0, num_classes, (batch,), generator=generator, device=device)


def sample_categorical(logits: torch.Tensor, temperature: float,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (n v) -> indices (n,). temperature <= 0 is argmax."""
    if temperature <= 0:
        return logits.argmax(-1)
    # one fp32 copy, scaled and normalised in place: (n v) is 4 M values at FFHQ1024's 8192 codes
    probs = logits.to(torch.float32, copy=True).mul_(1.0 / temperature).softmax(dim=-1)
    cdf = probs.cumsum_(-1)
    u = torch.rand(logits.shape[0], 1, generator=generator, device=logits.device) * cdf[:, -1:]
    # u = 0 (a draw of exactly 0) would find index 0 even where its probability underflowed to 0;
    # the smallest positive float finds the first token with any probability, and every other draw
    # (and so every seed's image) is unchanged
    u.clamp_(min=torch.finfo(torch.float32).tiny)
    return torch.searchsorted(cdf, u).squeeze(1).clamp_(max=logits.shape[-1] - 1)


NO_NULL_CLASS = ("classifier-free guidance needs a prior trained with a null class (num_classes > 0); "
                 "set guidance to 0")


def _guided_logits_at(logits_fn: LogitsFn, tokens: torch.Tensor, labels: torch.Tensor | None, guidance: float,
                      null_label: int | None, positions: torch.Tensor) -> torch.Tensor:
    """Guided logits (n v) at flat `positions` of (b h w): the head runs only there when the
    LogitsFn has `at`; a plain LogitsFn's full logits are indexed instead."""
    if guidance == 0 or labels is None:
        return logits_at(logits_fn, tokens, labels, positions)
    if null_label is None:
        raise InputError(NO_NULL_CLASS)
    null = torch.full_like(labels, null_label)
    # the unconditional copy is the second half of the doubled batch: same positions, shifted
    both = logits_at(logits_fn, torch.cat([tokens, tokens]), torch.cat([labels, null]),
                     torch.cat([positions, positions + tokens.numel()]))
    cond, uncond = both.float().chunk(2)
    return cond + guidance * (cond - uncond)


def batch_labels(labels: Any, tokens: torch.Tensor) -> torch.Tensor | None:
    """Class labels as (b,) int64 on the tokens' device: one label (an int, a (1,) tensor such as
    the Class Label node's) broadcasts over the batch. None stays None (unconditional)."""
    if labels is None:
        return None
    b = tokens.shape[0]
    labels = torch.as_tensor(labels, device=tokens.device).long().reshape(-1)
    if labels.numel() not in (1, b):
        raise InputError(f"{labels.numel()} class labels for a batch of {b}: give one label, or one per sample")
    return labels.expand(b)


def _repaint_mask(repaint: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor | None:
    """repaint (b h w) or (h w), any dtype -> bool on the tokens' device, expanded to (b h w)."""
    return None if repaint is None else repaint.to(tokens.device, torch.bool).expand_as(tokens)


def denoise_step(logits_fn: LogitsFn, tokens: torch.Tensor, *, generator: torch.Generator | None = None,
                 temperature: float = 1.0, proportion: float = 0.5, repaint: torch.Tensor | None = None,
                 labels: Any = None, guidance: float = 0.0, null_label: int | None = None,
                 selection: str = "random", views: int = 1) -> StepResult:
    """One SUNDAE step on tokens (b h w). `repaint` (b h w) or (h w) bool: only True positions may
    change. `labels`: None, one label for the batch, or (b,).

    selection="random": each position updates with probability `proportion` (the paper).
    selection="confidence": the `proportion` share of repaintable positions where the proposal is
    most probable relative to the token there now (its log-probability minus the current token's)
    updates. Relative, because SUNDAE has no mask token: ranked by the proposal's probability
    alone, the positions already right (proposal = current token, both likely) win every step, the
    noise a sample starts from is never picked, and self-stopping ends the sample with it in place.
    views > 1 averages the prior over shifted copies of the grid (shifted_views.py).
    Arguments are checked against LIMITS here; `sample` checks its settings once instead.
    """
    check_setting("temperature", temperature)
    check_setting("proportion", proportion)
    check_setting("guidance", guidance)
    check_setting("views", views)
    check_selection(selection)
    return _step(with_views(logits_fn, int(views)), tokens, generator, float(temperature), float(proportion),
                 _repaint_mask(repaint, tokens), batch_labels(labels, tokens), float(guidance), null_label,
                 selection)


def _step(logits_fn: LogitsFn, tokens: torch.Tensor, generator: torch.Generator | None, temperature: float,
          proportion: float, repaint: torch.Tensor | None, labels: torch.Tensor | None, guidance: float,
          null_label: int | None, selection: str) -> StepResult:
    """denoise_step on checked, normalised arguments (repaint (b h w) bool, labels (b,) or None)."""
    b, h, w = tokens.shape
    allowed = torch.ones_like(tokens, dtype=torch.bool) if repaint is None else repaint
    new = tokens.clone()
    flat_new = new.view(-1)
    # Which positions may change is known before the network runs (the random draw, or the
    # repaint mask), so logits are computed only there.
    if selection == "random":
        update = (torch.rand(tokens.shape, generator=generator, device=tokens.device) < proportion) & allowed
        looked = update
        idx = update.view(-1).nonzero().squeeze(1)
        if idx.numel():
            logits = _guided_logits_at(logits_fn, tokens, labels, guidance, null_label, idx)
            flat_new[idx] = sample_categorical(logits, temperature, generator)
    else:
        # every allowed position's proposal is drawn and ranked: one that is not taken lost the
        # ranking to positions that kept their token, so the whole sample was looked at
        looked = allowed
        idx = allowed.reshape(-1).nonzero().squeeze(1)
        if idx.numel():
            logits = _guided_logits_at(logits_fn, tokens, labels, guidance, null_label, idx)
            proposal = sample_categorical(logits, temperature, generator)
            logp_all = torch.log_softmax(logits.float(), -1)
            current = tokens.reshape(-1)[idx]
            # how much likelier the proposal is than what stands there (0 where they are the same)
            logp = (logp_all.gather(1, proposal[:, None]) - logp_all.gather(1, current[:, None])).squeeze(1)
            # rank within each sample: take the top `proportion` of that sample's allowed positions
            score = torch.full((b * h * w,), float("-inf"), device=tokens.device)
            score[idx] = logp
            score = score.view(b, h * w)
            counts = (allowed.reshape(b, -1).sum(1).float() * proportion).round().long()
            order = score.argsort(dim=1, descending=True)
            ranks = torch.empty_like(order)
            ranks.scatter_(1, order, torch.arange(h * w, device=tokens.device).expand(b, -1))
            chosen = ranks < counts[:, None]
            chosen_flat = chosen.view(-1)[idx]
            flat_new[idx[chosen_flat]] = proposal[chosen_flat]
    changed = (new != tokens).view(b, -1).any(1)
    return StepResult(new, changed, looked)


def sample(logits_fn: LogitsFn, tokens: torch.Tensor, settings: SamplerSettings = DEFAULT_SETTINGS, *,
           generator: torch.Generator | None = None, repaint: torch.Tensor | None = None, labels: Any = None,
           null_label: int | None = None, callback: Callable[[dict], None] | None = None,
           history_every: int = 0) -> SampleResult:
    """Run up to `settings.steps` denoising steps from `tokens` (b h w).

    Self-stopping: once at least `min_steps` steps have run, a sample is frozen and leaves the
    batch when every position it may change has been looked at since its last change (the module
    docstring says why not "a step changed nothing"); sampling ends when every sample is frozen.
    `callback(info)` runs after every step with keys step, total, tokens, active, changed; an
    exception raised there (a user's cancel) propagates. `history_every=k` keeps every k-th state.
    """
    if not isinstance(settings, SamplerSettings):
        raise InputError(f"sample() takes a SamplerSettings as its third argument, got {type(settings).__name__}")
    steps = settings.steps
    b = tokens.shape[0]
    logits_fn = with_views(logits_fn, settings.views)
    taus, props = settings.temperatures(), settings.proportions()
    repaint = _repaint_mask(repaint, tokens)
    labels = batch_labels(labels, tokens)
    if settings.guidance and labels is not None and null_label is None:
        raise InputError(NO_NULL_CLASS)
    tokens = tokens.clone()
    active = torch.ones(b, dtype=torch.bool, device=tokens.device)
    steps_used = torch.zeros(b, dtype=torch.long, device=tokens.device)
    may_change = torch.ones_like(tokens, dtype=torch.bool) if repaint is None else repaint
    unsettled = may_change.clone()  # (b h w): not looked at since the sample last changed
    history = [tokens.clone()] if history_every else []
    # a batch's activations and logits pass glibc's mmap threshold (32 MB): reuse them across
    # steps instead of faulting in fresh pages every step (cpu_memory.py)
    with reuse_freed_memory():
        for step in range(steps):
            idx = active.nonzero().squeeze(1)
            # Subsetting every per-sample input to the running samples (the authors' batched
            # inpainting crashed here once one sample stopped).
            result = _step(logits_fn, tokens[idx], generator, taus[step], props[step],
                           None if repaint is None else repaint[idx], None if labels is None else labels[idx],
                           settings.guidance, null_label, settings.selection)
            tokens[idx] = result.tokens
            steps_used[idx] += 1
            changed = torch.zeros(b, dtype=torch.bool, device=tokens.device)
            changed[idx] = result.changed
            # a change may unsettle any position (its context moved): all must be looked at again
            unsettled[idx] = torch.where(result.changed[:, None, None], may_change[idx],
                                         unsettled[idx] & ~result.looked)
            if settings.self_stop and step + 1 >= settings.min_steps:
                settled = ~unsettled[idx].flatten(1).any(1)
                active[idx[settled]] = False
            if history_every and ((step + 1) % history_every == 0 or step + 1 == steps):
                history.append(tokens.clone())
            if callback is not None:
                callback({"step": step + 1, "total": steps, "tokens": tokens, "active": active.clone(),
                          "changed": changed})
            if not bool(active.any()):
                if history_every and (step + 1) % history_every and step + 1 != steps:  # the final state too
                    history.append(tokens.clone())
                break
    return SampleResult(tokens, steps_used, history)
