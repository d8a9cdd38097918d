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
A dataset whose manifest lists "class_names" names the classes of the prior (model.class_names).
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from sundae_core.checkpoint import remove_stale_temporaries
from sundae_core.config import HourglassConfig, to_dict
from sundae_core.corruption import BlockShapes
from sundae_core.errors import ConfigError
from sundae_core.grid import save_grid
from sundae_core.models import load_vqgan, save_model
from sundae_core.sampler import SamplerSettingError, SamplerSettings, model_logits_fn, random_tokens, sample
from sundae_core.unroll import unrolled_loss

from ..data.latent_data import LatentDataConfig, TokenSet, grey_level_images
from . import distributed as dist
from .ema import EMA
from .run_folder import MetricLog, trainer_main, write_config
from .run_state import init_weights, load_state, save_state


@dataclass(frozen=True)
class PriorTrainConfig:
    steps: int = 20000
    batch_size: int = 32
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
    bf16: bool = True
    seed: int = 0
    log_every: int = 20
    val_every: int = 500
    val_batches: int = 4
    sample_every: int = 1000
    # the sample grids' sampler (the config keys predate SamplerSettings; sampler_settings() maps them)
    sample_steps: int = 50
    sample_temperature: tuple[float, ...] = (1.0, 0.7)
    sample_proportion: float = 0.5
    ckpt_every: int = 250
    vqgan: str = ""  # VQ-GAN checkpoint that decodes sample grids ("" with a pixel dataset)
    init: str = ""  # a new run starts from this prior file's weights (fine-tuning); "" = random

    def __post_init__(self) -> None:
        if not 0 <= self.block_corruption <= 1:
            raise ConfigError(f"train.block_corruption is a share of samples in [0, 1], got {self.block_corruption}")
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


@torch.no_grad()
def sample_grid(model, manifest, vqgan, tc: PriorTrainConfig, path: Path, seed: int = 0) -> None:
    model.eval()
    g = torch.Generator().manual_seed(seed)
    n_cls = model.config.num_classes
    rows = min(n_cls, 10) if n_cls else 4
    per_row = 8
    labels = torch.arange(rows).repeat_interleave(per_row) if n_cls else None
    z = random_tokens(rows * per_row, manifest["height"], manifest["width"], manifest["vocab_size"], generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=tc.bf16):
        out = sample(model_logits_fn(model), z, tc.sampler_settings(), generator=g, labels=labels,
                     null_label=model.null_label)
    save_grid(decode_tokens(out.tokens, manifest, vqgan), path, nrow=per_row)
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


@torch.no_grad()
def validation_loss(model, val: TokenSet, tc: PriorTrainConfig, autocast, block_share: float = 0.0) -> float:
    """Mean unrolled loss on fixed validation batches; block_share: share of block samples (0 = the paper's)."""
    model.eval()
    g = torch.Generator().manual_seed(4321)
    losses = []
    for _ in range(tc.val_batches):
        tokens, labels = val.batch(tc.batch_size, g)
        with autocast():
            out = unrolled_loss(model_logits_fn(model), tokens, model.config.vocab_size,
                                steps=tc.unroll_steps, generator=g, labels=labels,
                                block_share=block_share, block_shapes=tc.block_shapes)
        losses.append(out.loss.item())
    model.train()
    return sum(losses) / len(losses)


def train(config: PriorRunConfig, run_dir: Path, progress: bool = True) -> Path:
    rank, world = dist.setup()
    tc, mc = config.train, config.model
    torch.manual_seed(tc.seed)
    train_set = TokenSet(config.data.path, "train")
    manifest = train_set.manifest
    if manifest["vocab_size"] != mc.vocab_size:
        raise ConfigError(f"model.vocab_size={mc.vocab_size} but the dataset {config.data.path} has "
                          f"vocab_size {manifest['vocab_size']}; set model.vocab_size to match")
    if mc.num_classes and train_set.labels is None:
        raise ConfigError(f"model.num_classes={mc.num_classes} but {config.data.path} has no labels")
    # Only the model gets the names: config.yaml keeps what was asked, so re-running resumes.
    mc = with_class_names(mc, manifest, config.data.path)
    has_val = bool(manifest["shards"].get("val"))
    val_set = TokenSet(config.data.path, "val") if has_val else None
    run_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main():
        remove_stale_temporaries(run_dir)  # half-written files of a run killed mid-save
        write_config(run_dir, config)
    from sundae_core.hourglass import HourglassTransformer

    model = HourglassTransformer(mc).train()
    if tc.init and not (run_dir / "state.safetensors").is_file():
        init_weights(model, tc.init, "prior")
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "embed" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, betas=tuple(tc.betas))
    ema = EMA(model, tc.ema_decay)
    data_gen = torch.Generator().manual_seed(tc.seed * 1000 + rank)
    noise_gen = torch.Generator().manual_seed(tc.seed * 1000 + 500 + rank)
    state_path = run_dir / "state.safetensors"
    modules = {"model": model, "ema": ema.model}
    generators = {"data": data_gen, "noise": noise_gen}
    start = 0
    if state_path.is_file():
        start = load_state(state_path, modules=modules, optimizers={"opt": opt}, generators=generators)
        if world > 1:  # the saved streams are rank 0's; give every rank its own again
            data_gen.manual_seed(tc.seed * 1000 + rank + 7919 * start)
            noise_gen.manual_seed(tc.seed * 1000 + 500 + rank + 7919 * start)
    dist.broadcast_module(model)
    dist.broadcast_module(ema.model)
    vqgan = load_vqgan(tc.vqgan, dtype=torch.bfloat16) if tc.vqgan else None
    if vqgan is None and manifest.get("decoder") != "pixels" and dist.is_main():
        print("note: train.vqgan is not set, so no sample grids are written")
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if tc.bf16 else nullcontext
    log = MetricLog(run_dir, resume_step=start)  # drops rows logged past the checkpoint
    logits_fn = model_logits_fn(model)
    bar = tqdm(range(start, tc.steps), initial=start, total=tc.steps, desc="prior",
               disable=not (progress and dist.is_main()))
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tc)
        tokens, labels = train_set.batch(tc.batch_size, data_gen)
        if labels is not None and tc.label_dropout:
            drop = torch.rand(labels.shape, generator=noise_gen) < tc.label_dropout
            labels = torch.where(drop, torch.full_like(labels, mc.num_classes), labels)
        with autocast():
            out = unrolled_loss(logits_fn, tokens, mc.vocab_size, steps=tc.unroll_steps,
                                generator=noise_gen, labels=labels, block_share=tc.block_corruption,
                                block_shapes=tc.block_shapes)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        dist.average_gradients(model)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip or float("inf"))
        opt.step()
        ema.update(model, step)
        if dist.is_main() and (step + 1) % tc.log_every == 0:
            bar.set_postfix(loss=f"{out.loss.item():.3f}", acc=f"{out.accuracy.item():.3f}")
            log.write(step + 1, loss=out.loss.item(), accuracy=out.accuracy.item(),
                      **{f"loss_step{i + 1}": v.item() for i, v in enumerate(out.per_step)},
                      grad_norm=grad_norm.item(), lr=lr_at(step, tc))
        last = step + 1 == tc.steps
        if dist.is_main() and val_set is not None and ((step + 1) % tc.val_every == 0 or last):
            val = {"val_loss": validation_loss(ema.model, val_set, tc, autocast)}
            if tc.block_corruption:  # how well the prior completes holes
                val["val_block_loss"] = validation_loss(ema.model, val_set, tc, autocast, block_share=1.0)
            log.write(step + 1, **val)
        if dist.is_main() and ((step + 1) % tc.sample_every == 0 or last):
            if vqgan is not None or manifest.get("decoder") == "pixels":
                sample_grid(ema.model, manifest, vqgan, tc, run_dir / "samples" / f"samples_{step + 1:06d}.png")
        if (step + 1) % tc.ckpt_every == 0 or last:
            digests = dist.check_in_sync(modules)
            if dist.is_main():
                if digests:
                    log.write(step + 1, rank_weight_digests=digests)
                save_state(state_path, step=step + 1, modules=modules, optimizers={"opt": opt},
                           generators=generators, config=to_dict(config))
                meta = {"step": str(step + 1), "data": str(config.data.path)}
                save_model(run_dir / "model.safetensors", ema.model, metadata=meta)
            dist.barrier()
    dist.cleanup()
    return run_dir / "model.safetensors"


def main(argv: list[str] | None = None) -> int:
    return trainer_main(argv, __doc__.splitlines()[0], PriorRunConfig, train, "EMA model written to")


if __name__ == "__main__":
    raise SystemExit(main())
