"""Train the SUNDAE prior (2D hourglass transformer) on a latent dataset.

    sundae-train-prior --config configs/prior_emoji.yaml --run-dir runs/prior
    torchrun --nproc-per-node 2 -m trainers.training.train_prior --config ... --run-dir ...

AdamW with warmup and cosine/linear decay, gradient clipping, an EMA copy of the weights, bf16
autocast, label dropout to the null class (for classifier-free guidance), validation loss,
periodic sample grids decoded through the VQ-GAN. Re-running the same command resumes.

train.block_corruption > 0 gives that share of the training samples block corruption (a whole
region redrawn, for inpainting; sundae_core/corruption.py), shaped by train.block_shapes; 0 is the
paper's corruption only. With it on, validation also logs val_block_loss (every sample a block
sample) next to val_loss (the paper's corruption, comparable across runs).
data.hole_set names a hole set (sundae-build-hole-set): validation then logs val_hidden_hole_top1,
the one-step top-1 on its held-out holes given the tokens the inpainting workflow encodes around
them (the hole hidden), and train.hole_share > 0 takes that share of each batch's rows from it.
train.shift > 0 moves each training sample's token grid by up to that many positions in each
direction (edges replicated; sundae_core/token_shift.py); validation batches are never shifted.
train.shift_holes moves the hole rows the same way (target, context and hole together).
A dataset whose manifest lists "class_names" names the classes of the prior (model.class_names).
train.accumulate = k runs each batch as k micro-batches (one optimiser step per batch): batch 256
in the memory of 256 / k (validation still draws batches of train.batch_size, without gradients).
train.device "cuda" trains on the GPU (each torchrun rank on the GPU of its LOCAL_RANK); the data
stays in RAM and each batch is moved over. A run resumes on the device it was started on.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sundae_core.cli import WARNINGS
from sundae_core.config import HourglassConfig, to_dict
from sundae_core.corruption import BlockShapes
from sundae_core.errors import ConfigError
from sundae_core.grid import save_grid
from sundae_core.models import check_models_fit, inference_dtype, load_vqgan
from sundae_core.sampler import SamplerSettingError, SamplerSettings, model_logits_fn, random_tokens, sample
from sundae_core.token_shift import draw_shifts, largest_shift, shift_tokens
from sundae_core.token_version import versions_conflict
from sundae_core.unroll import unrolled_loss

from ..checkpoints.grow_prior import added_parameters
from ..data.latent_data import HoleSet, LatentDataConfig, TokenSet, grey_level_images, read_manifest
from ..evaluation.token_completion import completion_accuracy
from ..sampling.sampler_flags import WORKFLOW_SAMPLER
from . import distributed as dist
from .device import autocast_bf16, bf16_autocast, check_device_name, to_device, train_device
from .divergence import NonFiniteGuard
from .ema import EMA
from .prior_step import make_optimizer, make_step_loss, train_step
from .run_folder import MetricLog, trainer_main, write_config
from .run_state import has_state, init_weights, is_keep_step, load_state, save_checkpoint_pair
from .view_distill import load_teacher, view_distill_loss


@dataclass(frozen=True)
class PriorTrainConfig:
    steps: int = 20000
    batch_size: int = 32
    # the batch runs as this many micro-batches of batch_size / accumulate, gradients summed before
    # one optimiser step (prior_step.train_step): a large batch in the memory of a small one
    accumulate: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, ...] = (0.9, 0.99)
    warmup: int = 500
    decay: str = "cosine"  # cosine | linear | constant
    min_lr_ratio: float = 0.1
    grad_clip: float = 5.0
    ema_decay: float = 0.999
    unroll_steps: int = 2
    label_dropout: float = 0.1  # share of labels replaced by the null class
    block_corruption: float = 0.0  # share of samples with block corruption (0 = the paper's only)
    block_shapes: BlockShapes = field(default_factory=BlockShapes)  # what those blocks look like
    # share of each batch's rows taken from data.hole_set: the tokens the inpainting workflow
    # encodes around a hidden hole, random tokens in the hole, the image's own tokens as the target
    # (sundae-build-hole-set's doc); 0 = none, and then nothing is drawn, so runs resume as before
    hole_share: float = 0.0
    # each training grid moved by (dy, dx) uniform in [-shift, shift], edges replicated
    # (sundae_core/token_shift.py); 0 = off, and then nothing is drawn, so runs resume as before
    shift: int = 0
    # train.shift (1) moves the hole rows too (target, context and hole alike): the holes of the hole
    # set at more places on the grid, as the plain rows are; off, hole rows draw as they always have
    shift_holes: bool = False
    bf16: bool = True
    # torch.compile the network and loss of each unrolled step (prior_step.py): faster steps
    # after a first step of a minute or two of compiling; needs a C++ compiler on the CPU
    compile: bool = False
    fused_optimizer: bool = True  # AdamW as one fused kernel
    seed: int = 0
    log_every: int = 20
    val_every: int = 500
    val_batches: int = 4
    # unconditional samples drawn at each validation to log val_sample_distinct and
    # val_sample_background (0 = off): see sample_spread; ~15 s for 32 on 2 CPU threads at the
    # emoji prior's size
    val_samples: int = 32
    sample_every: int = 1000
    sample_per_class: int = 1  # images per class (4 in all for an unconditional prior) in a grid
    # the sample grids' sampler (the config keys predate SamplerSettings; sampler_settings() maps them)
    sample_steps: int = 50
    sample_temperature: tuple[float, ...] = (1.0, 0.7)
    sample_proportion: float = 0.5
    ckpt_every: int = 250
    # every this many steps the model written also stays in run_dir/kept/ (0 = only the newest)
    keep_every: int = 0
    vqgan: str = ""  # VQ-GAN checkpoint that decodes sample grids ("" with a pixel dataset)
    init: str = ""  # a new run starts from this prior file's weights (fine-tuning); "" = random
    # learning-rate multiplier for the blocks sundae-grow-prior added to train.init's prior (its
    # file records the depth it grew from): they start as identities with zeroed output layers, and
    # at a fine-tune's rate those layers stay near zero (std 5e-4 after 250 CPU steps at 5e-5)
    grown_lr_scale: float = 1.0
    # view distillation (view_distill.py): the weight of a KL term pulling the first unrolled
    # step towards a frozen teacher's average over view_distill_views shifted views; 0 = off.
    # The teacher is view_distill_teacher, or train.init's prior when that is "".
    view_distill: float = 0.0
    view_distill_views: int = 4
    view_distill_teacher: str = ""
    device: str = "cpu"  # "cpu" or "cuda"

    def __post_init__(self) -> None:
        check_device_name(self.device)
        if not (self.grown_lr_scale > 0 and math.isfinite(self.grown_lr_scale)):
            raise ConfigError(f"train.grown_lr_scale is a learning-rate multiplier > 0, got {self.grown_lr_scale}")
        if self.grown_lr_scale != 1 and not self.init:
            raise ConfigError("train.grown_lr_scale scales the blocks sundae-grow-prior added to train.init's prior: "
                              "set train.init to the grown prior, or leave grown_lr_scale at 1")
        if self.view_distill and not (self.view_distill_teacher or self.init):
            raise ConfigError("train.view_distill needs a teacher: set train.view_distill_teacher to a prior file "
                              "(or train.init, whose prior then teaches), or set train.view_distill to 0")
        if self.shift_holes and not (self.shift == 1 and self.hole_share):
            # the hole set's holes keep one token of margin: a larger move would crop them at the edge
            raise ConfigError(f"train.shift_holes moves the hole rows by up to train.shift tokens, which must then be 1 "
                              f"(the holes keep one token of margin from the edge; it is {self.shift}), with "
                              "train.hole_share > 0; or set train.shift_holes to false")
        self.sampler_settings()  # a bad train.sample_* value fails when the config loads

    def sampler_settings(self) -> SamplerSettings:
        """The sampler of the sample grids, from train.sample_steps / sample_temperature /
        sample_proportion (the rest: SamplerSettings' defaults)."""
        try:
            return SamplerSettings(steps=self.sample_steps, temperature=tuple(self.sample_temperature),
                                   proportion=self.sample_proportion)
        except SamplerSettingError as err:
            raise ConfigError(f"train.sample_{err.setting}: {err}") from None


@dataclass(frozen=True)
class PriorRunConfig:
    model: HourglassConfig = field(default_factory=HourglassConfig)
    data: LatentDataConfig = field(default_factory=LatentDataConfig)
    train: PriorTrainConfig = field(default_factory=PriorTrainConfig)


def lr_at(step: int, tc: PriorTrainConfig) -> float:
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    if tc.decay == "constant":
        return tc.lr
    frac = min(1.0, (step - tc.warmup) / max(1, tc.steps - tc.warmup))
    shape = 0.5 * (1 + math.cos(math.pi * frac)) if tc.decay == "cosine" else 1 - frac
    return tc.lr * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * shape)


def decode_tokens(tokens: torch.Tensor, manifest: dict, vqgan) -> torch.Tensor:
    """tokens -> images (b c h w) in [-1, 1]: through the VQ-GAN, or as grey pixel values."""
    if manifest.get("decoder") == "pixels":
        return grey_level_images(tokens, manifest["vocab_size"])
    with torch.inference_mode():
        return vqgan.decode(tokens)


def sample_grid(model, manifest, vqgan, tc: PriorTrainConfig, path: Path, seed: int = 0) -> None:
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator(device).manual_seed(seed)
    n_cls = model.config.num_classes
    # small on purpose: decoding 1024 px images costs about a second each on a CPU, and the
    # other ranks wait meanwhile (a grid of 72 took over 2 minutes)
    per_row = tc.sample_per_class if n_cls else 4
    rows = min(n_cls, 10) if n_cls else 1
    labels = torch.arange(rows, device=device).repeat_interleave(per_row) if n_cls else None
    z = random_tokens(rows * per_row, manifest["height"], manifest["width"], manifest["vocab_size"], generator=g,
                      device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.bf16):
        out = sample(model_logits_fn(model), z, tc.sampler_settings(), generator=g, labels=labels,
                     null_label=model.null_label)
    # one image per class reads best as one row; several per class as one row per class
    save_grid(decode_tokens(out.tokens, manifest, vqgan), path, nrow=per_row if per_row > 1 else rows * per_row)
    model.train()


def with_class_names(mc: HourglassConfig, manifest: dict, data_path: str) -> HourglassConfig:
    """The model config with the dataset's class names when it has some and the config none."""
    names = manifest.get("class_names") or []
    if not mc.num_classes or mc.class_names or not names:
        return mc
    if len(names) != mc.num_classes:
        raise ConfigError(f"model.num_classes={mc.num_classes} but {data_path} names {len(names)} classes "
                          "(manifest.json class_names); set model.num_classes to match")
    return dataclasses.replace(mc, class_names=tuple(str(n) for n in names))


def check_shift(tc: PriorTrainConfig, manifest: dict, data_path: str) -> None:
    """ConfigError when train.shift would move the dataset's grids by half their size or more."""
    h, w = manifest["height"], manifest["width"]
    limit = largest_shift(h, w)
    if tc.shift > limit:
        raise ConfigError(f"train.shift={tc.shift} is too large for the {h}x{w} token grids of {data_path} "
                          f"(a shift must be under half the grid's smaller side); set train.shift to at most {limit}")


def with_token_version(mc: HourglassConfig, manifest: dict, data_path: str) -> HourglassConfig:
    """The model config recording the token version of the dataset's VQ-GAN (manifest
    "token_version"), so the prior refuses VQ-GANs whose tokens mean something else."""
    version = manifest.get("token_version", "")
    if versions_conflict(mc.token_version, version):
        raise ConfigError(f"model.token_version={mc.token_version} but {data_path} holds tokens of version "
                          f"{version}; drop model.token_version (the dataset sets it) or use the matching dataset")
    return dataclasses.replace(mc, token_version=version or mc.token_version)


def subject_windows(tokens: torch.Tensor, side: int, background: int) -> torch.Tensor:
    """(b h w) -> (b h w) bool: per sequence, the side x side window holding the most tokens other
    than `background` (the first in raster order on a tie): sundae-eval-default's hole on the
    subject, found in token space."""
    b, h, w = tokens.shape
    subject = (tokens != background).float()[:, None]
    counts = F.avg_pool2d(subject, side, stride=1)[:, 0]  # (b, h - side + 1, w - side + 1)
    best = counts.flatten(1).argmax(1)
    top, left = best // counts.shape[-1], best % counts.shape[-1]
    rows = torch.arange(h, device=tokens.device)[None]
    cols = torch.arange(w, device=tokens.device)[None]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    return in_rows[:, :, None] & in_cols[:, None, :]


@torch.no_grad()
def completion_top1(model, count: int, batch_size: int, batch_at) -> float:
    """Mean one-step top-1 (completion_accuracy, no label, float32) over `count` sequences read
    batch_size at a time: batch_at(rows: slice, device) -> (tokens, hole, context or None), each
    (b h w) on `device`. One generator seeded 4321 on the model's device draws every batch's
    noise in turn, so the figure is the same at every validation of every run."""
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator(device).manual_seed(4321)
    logits_fn = model_logits_fn(model)
    total = 0.0
    for begin in range(0, count, batch_size):
        tokens, hole, context = batch_at(slice(begin, begin + batch_size), device)
        total += float(completion_accuracy(logits_fn, tokens, hole, model.config.vocab_size, g, context=context).sum())
    model.train()
    return total / count


def hole_accuracy(model, val: TokenSet, batch_size: int, side: int = 8, background: int | None = None) -> float:
    """One-step top-1 on every held-out sequence's subject hole (side x side tokens filled with
    random ones, the rest clean; no label), in float32: the campaign's hole aim, which the held-out
    loss failed to track (session 11: two fine-tunes lowered the loss and lost hole accuracy).
    The background is the split's most common token (the white canvas) unless given."""
    side = min(side, *val.tokens.shape[-2:])
    background = background_token(val.tokens) if background is None else background

    def batch_at(rows: slice, device: torch.device):
        tokens = to_device(val.tokens[rows], device)
        return tokens, subject_windows(tokens, side, background), None  # every hole side x side: shares average

    return completion_top1(model, len(val), batch_size, batch_at)


def hole_sets(config: PriorRunConfig, train_set: TokenSet) -> tuple[HoleSet | None, HoleSet | None]:
    """data.hole_set's training and held-out splits (None where absent), checked against the
    training set's tokens; a train.hole_share without a hole set is refused."""
    path, share, batch = config.data.hole_set, config.train.hole_share, config.train.batch_size
    if not path:
        if share:
            raise ConfigError(f"train.hole_share={share} takes rows from data.hole_set, which is not set: build one "
                              "with sundae-build-hole-set and set data.hole_set, or set train.hole_share to 0")
        return None, None
    rows = round(share * batch)
    if share and not 0 < rows < batch:
        raise ConfigError(f"train.hole_share={share} of train.batch_size={batch} is {rows} hole rows a batch; "
                          f"choose a share from {1 / batch:.3g} to {(batch - 1) / batch:.3g}, so that both kinds of row are in it")
    if not (Path(path) / "manifest.json").is_file():
        raise ConfigError(f"data.hole_set {path} has no manifest.json: build it with sundae-build-hole-set "
                          "(or wait for a build under way to finish)")
    manifest = read_manifest(path)  # read once: both splits take it
    train = HoleSet(path, "train", manifest) if share else None
    val = HoleSet(path, "val", manifest) if manifest.get("shards", {}).get("val") else None
    for part in (train, val):
        if part is not None:
            part.check_matches(train_set, path)
    return train, val


class HoleBatch(NamedTuple):
    """A training batch with hole rows appended: tokens (b h w) the targets, labels (b,) or None,
    start (b h w) step 1's input (unrolled_loss's `start`; -1 where the usual corruption applies)."""

    tokens: torch.Tensor
    labels: torch.Tensor | None
    start: torch.Tensor


def with_hole_rows(tokens: torch.Tensor, labels: torch.Tensor | None, holes: HoleSet, n: int, vocab_size: int,
                   null_label: int, generator: torch.Generator, shift: int = 0) -> HoleBatch:
    """The batch with n hole-set rows appended, and step 1's input for every row (unrolled_loss's
    `start`): -1 on the batch's own rows (their corruption as usual), and on the hole rows what the
    inpainting workflow hands the prior: the hidden-hole context around random tokens in the hole,
    and the null class (the workflow inpaints without a label). shift > 0 moves each hole row's
    target, context and hole by one draw of up to that many tokens each way (token_shift.py)."""
    rows = holes.batch(n, generator)
    if shift:
        moves = draw_shifts(n, shift, generator)
        rows = rows._replace(tokens=shift_tokens(rows.tokens, moves), context=shift_tokens(rows.context, moves),
                             hole=shift_tokens(rows.hole, moves))
    noise = torch.randint(0, vocab_size, rows.tokens.shape, generator=generator)
    start = torch.cat([torch.full_like(tokens, -1), torch.where(rows.hole, noise, rows.context)])
    if labels is not None:
        labels = torch.cat([labels, torch.full((n,), null_label, dtype=labels.dtype)])
    return HoleBatch(torch.cat([tokens, rows.tokens]), labels, start)


def hidden_hole_accuracy(model, holes: HoleSet, batch_size: int) -> float:
    """One-step top-1 on every held-out hole of a hole set, the rest of the grid the tokens encoded
    with the hole hidden (no label), in float32: sundae-eval-default's hole top-1 (--context
    hidden) on the trainer's own holes, where val_hole_top1 reads a grid encoded whole."""

    def batch_at(rows: slice, device: torch.device):
        tokens, context, hole = (to_device(t[rows], device) for t in (holes.tokens, holes.context, holes.hole))
        return tokens, hole, context

    return completion_top1(model, len(holes), batch_size, batch_at)


def distinct_tokens(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(b h w) -> (b,) the number of different tokens in each grid."""
    seen = torch.zeros(tokens.shape[0], vocab_size, dtype=torch.bool, device=tokens.device)
    return seen.scatter_(1, tokens.flatten(1), True).sum(1)


def background_token(tokens: torch.Tensor) -> int:
    """The most common token of a split: the white canvas of the emoji, black for MNIST."""
    return int(torch.bincount(tokens.flatten()).argmax())


def spread_of(tokens: torch.Tensor, vocab_size: int, background: int) -> dict[str, float]:
    """Mean different tokens per grid and the share of background tokens, of (b h w) grids."""
    return {"distinct": float(distinct_tokens(tokens, vocab_size).float().mean()),
            "background": float((tokens == background).float().mean())}


@torch.no_grad()
def sample_spread(model, count: int, grid: tuple[int, int], autocast, background: int,
                  seed: int = 1234) -> dict[str, float]:
    """spread_of `count` unconditional samples drawn with the shipped sampler: a cheap alarm for
    samples collapsing, which the held-out loss cannot raise because plain regions are the easiest
    tokens to predict. Session 15: CPU fine-tunes lowered the held-out loss by 0.016 while their
    samples went from faces to featureless blobs, 85 -> 61 different tokens a sample (the held-out
    emoji have 129), and KID from 0.036 to 0.046. Session 16: how they collapse: along the
    sampler's chain the fine-tune turns its own half-formed content into background. Measured
    here (32 null-class samples), step 10397 reads 85.3 different tokens and a background share of
    0.57 (its null class draws small figures on white; the held-out emoji: 0.33), a batch-128
    fine-tune 50 steps on 41.7 and 0.80. Compare both with the run's `data_distinct` and
    `data_background`, logged once at the start."""
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator(device).manual_seed(seed)
    z = random_tokens(count, *grid, model.config.vocab_size, generator=g, device=device)
    with autocast():
        tokens = sample(model_logits_fn(model), z, WORKFLOW_SAMPLER, generator=g).tokens
    model.train()
    return spread_of(tokens, model.config.vocab_size, background)


@torch.no_grad()
def validation_loss(model, val: TokenSet, tc: PriorTrainConfig, autocast, block_share: float = 0.0) -> float:
    """Mean unrolled loss on fixed validation batches; block_share: share of block samples (0 = the paper's)."""
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(4321)
    # on the CPU one stream draws the batches and the corruption, as it always has (the figures
    # stay comparable across runs); a GPU's corruption needs a generator of its own
    noise = g if device.type == "cpu" else torch.Generator(device).manual_seed(4321)
    losses = []
    for _ in range(tc.val_batches):
        tokens, labels = (to_device(t, device) for t in val.batch(tc.batch_size, g))
        labels = labels if model.config.num_classes else None  # an unconditional prior takes none
        with autocast():
            out = unrolled_loss(model_logits_fn(model), tokens, model.config.vocab_size,
                                steps=tc.unroll_steps, generator=noise, labels=labels,
                                block_share=block_share, block_shapes=tc.block_shapes)
        losses.append(out.loss.item())
    model.train()
    return sum(losses) / len(losses)


def train(config: PriorRunConfig, run_dir: Path, progress: bool = True) -> Path:
    rank, world = dist.setup()
    tc, mc = config.train, config.model
    torch.manual_seed(tc.seed)
    train_set = TokenSet(config.data.path, "train", config.data.class_balance)  # val keeps its natural mix
    manifest = train_set.manifest
    if manifest["vocab_size"] != mc.vocab_size:
        raise ConfigError(f"model.vocab_size={mc.vocab_size} but the dataset {config.data.path} has "
                          f"vocab_size {manifest['vocab_size']}; set model.vocab_size to match")
    if mc.num_classes and train_set.labels is None:
        raise ConfigError(f"model.num_classes={mc.num_classes} but {config.data.path} has no labels")
    train_set.check_fits(mc.vocab_size, mc.num_classes, config.data.path)
    check_shift(tc, manifest, config.data.path)
    # Only the model gets the names: config.yaml keeps what was asked, so re-running resumes.
    mc = with_class_names(mc, manifest, config.data.path)
    mc = with_token_version(mc, manifest, config.data.path)
    has_val = bool(manifest["shards"].get("val"))
    val_set = TokenSet(config.data.path, "val") if has_val else None
    if val_set is not None:
        val_set.check_fits(mc.vocab_size, mc.num_classes, config.data.path)
    hole_train, hole_val = hole_sets(config, train_set)
    run_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main():
        write_config(run_dir, config)
    from sundae_core.hourglass import HourglassTransformer

    device = train_device(tc.device, rank)
    tc = dataclasses.replace(tc, bf16=autocast_bf16(device, tc.bf16))
    if device.type == "cpu" and mc.dropout > 0 and mc.attention_dropout_at == "weights" and dist.is_main():
        WARNINGS.warning(f"model.dropout={mc.dropout:g} on the CPU: dropped attention weights have no fused CPU "
                         "kernel, so steps take ~3.5x longer (README, training speed); set "
                         "model.attention_dropout_at=output to drop the attention's output instead")
    model = HourglassTransformer(mc).train()
    if tc.init and not has_state(run_dir / "state.safetensors"):
        init_weights(model, tc.init, "prior")
    model.to(device)
    lr_scales = ({name: tc.grown_lr_scale for name in added_parameters(tc.init, mc)}
                 if tc.grown_lr_scale != 1 else None)
    opt = make_optimizer(model, tc.lr, tc.weight_decay, tc.betas, fused=tc.fused_optimizer, lr_scales=lr_scales)
    ema = EMA(model, tc.ema_decay)
    data_gen = torch.Generator().manual_seed(tc.seed * 1000 + rank)
    noise_gen = torch.Generator(device).manual_seed(tc.seed * 1000 + 500 + rank)  # corruption: on the device
    state_path = run_dir / "state.safetensors"
    modules = {"model": model, "ema": ema.model}
    generators = {"data": data_gen, "noise": noise_gen}
    start = 0
    if has_state(state_path):
        start = load_state(state_path, modules=modules, optimizers={"opt": opt}, generators=generators)
        if world > 1:  # the saved streams are rank 0's; give every rank its own again
            data_gen.manual_seed(tc.seed * 1000 + rank + 7919 * start)
            noise_gen.manual_seed(tc.seed * 1000 + 500 + rank + 7919 * start)
    dist.broadcast_module(model)
    dist.broadcast_module(ema.model)
    dist.own_global_stream(tc.seed, rank, start)  # after the weights: each rank its own dropout masks
    vqgan = load_vqgan(tc.vqgan, dtype=inference_dtype(device)) if tc.vqgan else None
    if vqgan is not None:
        vqgan.to(device)
        check_models_fit(vqgan, model, f"train.vqgan {tc.vqgan} with the dataset {config.data.path}: ")
    if vqgan is None and manifest.get("decoder") != "pixels" and dist.is_main():
        print("note: train.vqgan is not set, so no sample grids are written")
    autocast = bf16_autocast(device, tc.bf16)
    log = MetricLog(run_dir, resume_step=start)  # drops rows logged past the checkpoint
    background = background_token(val_set.tokens) if val_set is not None else None
    if dist.is_main() and val_set is not None and tc.val_samples and start == 0:
        # what val_sample_distinct / _background are measured against: the held-out sequences' own
        data = spread_of(val_set.tokens, mc.vocab_size, background)
        log.write(0, data_distinct=data["distinct"], data_background=data["background"])
    step_loss = make_step_loss(model, bf16=tc.bf16, compile=tc.compile)
    distill = None
    if tc.view_distill:
        teacher = load_teacher(tc.view_distill_teacher or tc.init, mc, device)
        distill = view_distill_loss(teacher, tc.view_distill_views, tc.view_distill)
    # skips NaN/inf steps; stops the run after a few in a row. On a GPU it reads its verdict at
    # log steps and checkpoints only, so the host never waits for the device in between.
    guard = NonFiniteGuard.for_device(device, tc.log_every)
    bar = tqdm(range(start, tc.steps), initial=start, total=tc.steps, desc="prior",
               disable=not (progress and dist.is_main()))
    # Step time = wall time over the steps since the last log row, read after the log's values
    # have waited for the device: a GPU step is only queued when its call returns.
    window_began, window_steps = time.perf_counter(), 0
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tc) * group.get("lr_scale", 1.0)
        holes = round(tc.hole_share * tc.batch_size)
        tokens, labels = train_set.batch(tc.batch_size - holes, data_gen)
        if tc.shift:  # drawn after the batch from the same stream; shift 0 draws nothing
            tokens = shift_tokens(tokens, draw_shifts(len(tokens), tc.shift, data_gen))
        start_tokens = None
        if holes:  # drawn last, so a run without hole rows draws as it always has
            tokens, labels, start_tokens = with_hole_rows(tokens, labels, hole_train, holes, mc.vocab_size,
                                                          mc.num_classes, data_gen,
                                                          shift=tc.shift if tc.shift_holes else 0)
        labels = labels if mc.num_classes else None  # the set's labels, where the prior takes them
        tokens, labels, start_tokens = (to_device(t, device) for t in (tokens, labels, start_tokens))
        began = time.perf_counter()
        out, grad_norm = train_step(model, opt, step_loss, tokens, labels, tc, noise_gen,
                                    sync=dist.average_gradients, optimizer_step=guard.step,
                                    first_step_extra=distill, start=start_tokens)
        last = step + 1 == tc.steps
        keep = is_keep_step(step + 1, tc.keep_every)
        saving = last or keep or (step + 1) % tc.ckpt_every == 0
        guard.check(step + 1, force=saving)
        ema.update(model, step)
        window_steps += 1
        if step == start:  # the first step compiles (and grows the allocator): kept out of the mean
            if dist.is_main() and tc.compile:
                log.write(step + 1, first_step_seconds=time.perf_counter() - began)
            window_began, window_steps = time.perf_counter(), 0
        if dist.is_main() and (step + 1) % tc.log_every == 0:
            # "loss" stays the cross-entropy against the data, comparable across runs with or
            # without view distillation, whose KL is logged apart
            row = dict(loss=torch.stack(out.per_step).mean().item(), accuracy=out.accuracy.item(),
                       **{f"loss_step{i + 1}": v.item() for i, v in enumerate(out.per_step)},
                       grad_norm=grad_norm.item(), lr=lr_at(step, tc))
            if out.extra is not None:
                row["distill"] = out.extra.item() / tc.view_distill  # the KL itself
            seconds = (time.perf_counter() - window_began) / max(window_steps, 1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.3f}")
            log.write(step + 1, **row, step_seconds=seconds)
        if dist.is_main() and val_set is not None and ((step + 1) % tc.val_every == 0 or last):
            val = {"val_loss": validation_loss(ema.model, val_set, tc, autocast)}
            if tc.block_corruption:  # how well the prior completes holes
                val["val_block_loss"] = validation_loss(ema.model, val_set, tc, autocast, block_share=1.0)
            val["val_hole_top1"] = hole_accuracy(ema.model, val_set, tc.batch_size, background=background)
            if hole_val is not None:  # the same, given the tokens a workflow encodes around a hidden hole
                val["val_hidden_hole_top1"] = hidden_hole_accuracy(ema.model, hole_val, tc.batch_size)
            if tc.val_samples:
                spread = sample_spread(ema.model, tc.val_samples, tuple(val_set.tokens.shape[-2:]), autocast,
                                       background)
                val["val_sample_distinct"], val["val_sample_background"] = spread["distinct"], spread["background"]
            log.write(step + 1, **val)
        if dist.is_main() and ((step + 1) % tc.sample_every == 0 or last):
            if vqgan is not None or manifest.get("decoder") == "pixels":
                drawn = time.perf_counter()
                sample_grid(ema.model, manifest, vqgan, tc, run_dir / "samples" / f"samples_{step + 1:06d}.png")
                log.write(step + 1, sample_grid_seconds=time.perf_counter() - drawn)
        if saving:
            digests = dist.check_in_sync(modules)
            if dist.is_main():
                if digests:
                    log.write(step + 1, rank_weight_digests=digests)
                meta = {"step": str(step + 1), "data": str(config.data.path)}
                save_checkpoint_pair(run_dir, step=step + 1, modules=modules, optimizers={"opt": opt},
                                     generators=generators, config=to_dict(config), model=ema.model,
                                     model_metadata=meta, keep=keep)
            dist.barrier()
        if saving or any((step + 1) % every == 0 for every in (tc.log_every, tc.val_every, tc.sample_every)):
            window_began, window_steps = time.perf_counter(), 0  # validation, grids, saving: not steps
    dist.cleanup()
    return run_dir / "model.safetensors"


def main(argv: list[str] | None = None) -> int:
    return trainer_main(argv, __doc__.splitlines()[0], PriorRunConfig, train, "EMA model written to")


if __name__ == "__main__":
    raise SystemExit(main())
