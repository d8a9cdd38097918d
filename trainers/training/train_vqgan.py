"""Train the VQ-GAN first stage: L1 + LPIPS + adaptive-weight PatchGAN hinge loss.

    sundae-train-vqgan --config configs/vqgan_emoji_f32.yaml --run-dir runs/vqgan
    torchrun --nproc-per-node 2 -m trainers.training.train_vqgan --config ... --run-dir ...

Re-running the same command resumes from runs/.../state.safetensors.

train.device "cuda" trains on the GPU (each torchrun rank on the GPU of its LOCAL_RANK): the
images stay in RAM, each batch is moved over, and the optimisers are fused, so a skipped
non-finite step costs the host no wait (the guard is read at log steps). A run resumes on the
device it was started on.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager

import torch
from tqdm import tqdm

from sundae_core.config import VQGANConfig, to_dict
from sundae_core.errors import ConfigError
from sundae_core.grid import save_grid
from sundae_core.quantize import Quantized
from sundae_core.vqgan import VQGAN

from ..checkpoints.grow_decoder import added_parameters
from ..data.image_data import DataConfig, ImageSet
from . import distributed as dist
from .device import autocast_bf16, bf16_autocast, check_device_name, to_device, train_device
from .discriminator import DiscriminatorConfig, PatchDiscriminator
from .divergence import NonFiniteGuard
from .ema import EMA
from .lpips import LPIPS, load_lpips
from .run_folder import MetricLog, trainer_main, write_config
from .run_state import has_state, init_weights, is_keep_step, load_state, save_checkpoint_pair
from .vqgan_losses import generator_loss, hinge_d_loss


@dataclass(frozen=True)
class VQTrainConfig:
    steps: int = 20000
    batch_size: int = 8
    lr: float = 4.5e-6 * 8
    betas: tuple[float, ...] = (0.5, 0.9)
    perceptual_weight: float = 1.0
    lpips_net: str = "vgg"
    disc_start: int = 15000
    # The discriminator trains alone for this many steps from disc_start before its judgement
    # reaches the generator: a freshly initialised discriminator's gradients are noise, and on a
    # trained decoder (a GAN phase started late, as the embedded default's) that noise costs
    # reconstruction quality before the adversarial term can pay it back.
    disc_warmup: int = 0
    disc_weight: float = 0.5
    # The discriminator's own rate (0 = train.lr). A discriminator that learns faster than the
    # generator (two time-scale updates) gives the generator a useful signal within a CPU run's
    # few thousand steps; at the generator's fine-tuning rate its hinge loss stayed near 1.
    disc_lr: float = 0.0
    disc_layers: int = 3
    disc_channels: int = 64
    restart_dead_codes_every: int = 0  # steps between dead-code restarts (0 = off)
    # Train the decoder only: encoder and codebook stay fixed, so a latent dataset (and a prior
    # trained on it) built from this run stays valid while the decoder keeps improving.
    freeze_encoder: bool = False
    # Decay of an exponential moving average of the weights, the model the run writes and
    # evaluates (0 = off: the weights as trained). A decoder run at a constant rate swings between
    # checkpoints about a better mean (session 26: steps 1400 and 2300 read 0.0870 and 0.0874
    # held-out hole LPIPS, their mean 0.0851). Turned on when a run resumes, it starts there.
    ema_decay: float = 0.0
    bf16: bool = True
    seed: int = 0
    init: str = ""  # a new run starts from this VQ-GAN file's weights (fine-tuning); "" = random
    # learning-rate multiplier for the decoder blocks sundae-grow-decoder added to train.init's
    # VQ-GAN (its file records how many it had): they start as identities with a zeroed conv, and
    # at a fine-tune's rate that conv stays near zero (std 2e-4 after 100 AMD steps at 5e-5, where
    # the trained blocks' are 0.02-0.13)
    grown_lr_scale: float = 1.0
    log_every: int = 20
    sample_every: int = 500
    ckpt_every: int = 250
    # every this many steps the model written also stays in run_dir/kept/ (0 = only the newest)
    keep_every: int = 0
    val_images: int = 16
    device: str = "cpu"  # "cpu" or "cuda"

    def __post_init__(self) -> None:
        check_device_name(self.device)
        if not (self.grown_lr_scale > 0 and math.isfinite(self.grown_lr_scale)):
            raise ConfigError(f"train.grown_lr_scale is a learning-rate multiplier > 0, got {self.grown_lr_scale}")
        if self.grown_lr_scale != 1 and not self.init:
            raise ConfigError("train.grown_lr_scale scales the decoder blocks sundae-grow-decoder added to "
                              "train.init's VQ-GAN: set train.init to the grown file, or leave grown_lr_scale at 1")


@dataclass(frozen=True)
class VQGANRunConfig:
    model: VQGANConfig = field(default_factory=VQGANConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: VQTrainConfig = field(default_factory=VQTrainConfig)


def autoencoder_groups(model: VQGAN, tc: VQTrainConfig) -> list[dict]:
    """The VQ-GAN's parameters as optimiser groups: all of them at train.lr, but for the decoder
    blocks sundae-grow-decoder added to train.init's file, at train.lr x train.grown_lr_scale in a
    group of their own (second, so runs without one keep their saved optimiser state's layout)."""
    added = added_parameters(tc.init, model.config) if tc.grown_lr_scale != 1 else set()
    params = dict(model.named_parameters())
    groups = [{"params": [p for name, p in params.items() if name not in added], "lr_scale": 1.0}]
    if added:
        groups.append({"params": [params[name] for name in sorted(added)], "lr": tc.lr * tc.grown_lr_scale,
                       "lr_scale": tc.grown_lr_scale})
    return groups


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per image, for images in [-1, 1]."""
    mse = ((x.float() - y.float()) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


@torch.no_grad()
def evaluate(model: VQGAN, lpips: LPIPS, val: ImageSet, n: int, autocast) -> dict:
    """Held-out reconstructions at the training crop's scale: PSNR, LPIPS, code usage."""
    was_training = model.training  # the weight average stays in eval mode
    model.eval()
    g = torch.Generator().manual_seed(1234)  # the crops are cut on the CPU
    x = to_device(val.random_batch(min(n, 4 * len(val)), g), next(model.parameters()).device)
    with autocast():
        rec, q = model(x)
        lp = lpips(x, rec.float()).mean()
    model.train(was_training)
    return {"val_psnr": psnr(x, rec.clamp(-1, 1)).mean().item(), "val_lpips": lp.item(),
            "val_code_usage": q.usage.item(), "val_perplexity": q.perplexity.item(),
            "images": torch.cat([x[:8], rec.float().clamp(-1, 1)[:8]]).cpu()}


@dataclass
class StepResult:
    """One training step's outputs: what the loop needs next (latents for dead-code restarts, the
    quantizer's result) and the loss terms it logs."""

    z: torch.Tensor  # (b d h w) pre-quantization latents
    q: Quantized
    l1: torch.Tensor
    perceptual: torch.Tensor
    g_loss: torch.Tensor
    weight: torch.Tensor  # the adaptive GAN weight (0 before disc_start)
    d_loss: torch.Tensor


def _no_sync(module: torch.nn.Module) -> None:
    pass


def _optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, guard: NonFiniteGuard | None) -> None:
    if guard is None:
        opt.step()
    else:
        guard.step(opt, loss)


def train_step(model: VQGAN, disc: PatchDiscriminator, lpips: LPIPS, opt_ae: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer, x: torch.Tensor, tc: VQTrainConfig, *, gan_on: bool,
               autocast: Callable[[], ContextManager], disc_on: bool | None = None,
               sync: Callable[[torch.nn.Module], None] = _no_sync,
               guard: NonFiniteGuard | None = None, latents: torch.Tensor | None = None) -> StepResult:
    """One generator step (L1 + LPIPS + codebook loss, plus the adaptive-weight GAN term once
    `gan_on`) and, once `disc_on` (default: `gan_on`), one discriminator step on x (b c h w) in
    [-1, 1]. `sync(module)` runs between each backward and its optimiser step (DDP gradient
    averaging); a `guard` skips an optimiser step whose loss or gradients are not finite.
    `latents`: x's pre-quantisation latents computed elsewhere (a frozen encoder on the whole
    canvas, data.whole_canvas); None encodes x here. `sundae-bench` times this same function."""
    with autocast():
        z = model.encode_latents(x) if latents is None else latents
        q = model.quantize_latents(z)
        rec = model.decode_latents(q.z_q)
        logits_fake = None
        if gan_on:
            disc.requires_grad_(False)  # the generator step needs no discriminator gradients
            logits_fake = disc(rec)
            disc.requires_grad_(True)
        g = generator_loss(x, rec, q.loss, perceptual=lpips if tc.perceptual_weight else None,
                           logits_fake=logits_fake, last_layer_weight=model.last_layer(),
                           perceptual_weight=tc.perceptual_weight, codebook_weight=1.0,
                           disc_weight=tc.disc_weight, gan_factor=1.0 if gan_on else 0.0)
    opt_ae.zero_grad(set_to_none=True)
    g.total.backward()
    sync(model)
    _optimizer_step(opt_ae, g.total, guard)
    d_loss = torch.zeros((), device=x.device)
    if gan_on if disc_on is None else disc_on:
        with autocast():
            d_loss = hinge_d_loss(disc(x).float(), disc(rec.detach()).float())
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        sync(disc)
        _optimizer_step(opt_d, d_loss, guard)
    return StepResult(z, q, g.l1, g.perceptual, g.gan, g.gan_weight, d_loss)


@torch.no_grad()
def canvas_latents(model: VQGAN, canvases: torch.Tensor, owners: torch.Tensor, corners: torch.Tensor,
                   side: int) -> torch.Tensor:
    """The frozen encoder's latents (b d side side) of each crop as part of its whole canvas: the
    canvases (n 3 R R) encoded whole, one at a time (a megapixel encode's activations are large),
    then each crop's side x side window at its corner (b 2, in tokens) of canvas owners[i]. In
    float32, not under the step's autocast: the tokens inference makes
    (VQGAN.cast_for_inference), and on a CPU without AMX the faster (1024 px: 0.25 s against
    0.35 s on 2 threads of an AMD EPYC)."""
    encoded = [model.encode_latents(canvas[None]) for canvas in canvases]
    return torch.cat([encoded[k][:, :, y:y + side, x:x + side]
                      for k, (y, x) in zip(owners.tolist(), corners.tolist())])


def train(config: VQGANRunConfig, run_dir: Path, progress: bool = True) -> Path:
    rank, world = dist.setup()
    tc = config.train
    if config.data.whole_canvas and not tc.freeze_encoder:
        raise ConfigError("data.whole_canvas encodes each crop inside its canvas without gradients, so it "
                          "trains the decoder alone: set train.freeze_encoder=true too")
    per = config.data.crops_per_canvas
    if per != 1 and not config.data.whole_canvas:
        raise ConfigError(f"data.crops_per_canvas={per} cuts crops from whole encoded canvases: set "
                          "data.whole_canvas=true too, or leave crops_per_canvas at 1")
    config.data.canvases_per_batch(tc.batch_size)  # a crops_per_canvas that does not divide it fails here
    torch.manual_seed(tc.seed)
    # the data first: a wrong data.path must not rewrite the run's config.yaml
    train_set = ImageSet(config.data, "train", progress=progress and dist.is_main())
    # held-out crops as they are: recoloured or synthetic crops would make the figures noisy
    val_set = ImageSet(dataclasses.replace(config.data, recolour=0.0, synthetic=0.0), "val", progress=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main():
        write_config(run_dir, config)
    device = train_device(tc.device, rank)
    tc = dataclasses.replace(tc, bf16=autocast_bf16(device, tc.bf16))
    model = VQGAN(config.model).train()
    if tc.init and not has_state(run_dir / "state.safetensors"):
        init_weights(model, tc.init, "vqgan")
    model.to(device)
    if tc.freeze_encoder:
        for part in (model.encoder, model.quant_conv, model.quantize):
            part.requires_grad_(False)
    disc = PatchDiscriminator(DiscriminatorConfig(channels=tc.disc_channels, layers=tc.disc_layers)).train().to(device)
    lpips = load_lpips(tc.lpips_net).to(device)
    fused = device.type == "cuda"  # one kernel per optimiser step, and the guard's skip inside it
    opt_ae = torch.optim.Adam(autoencoder_groups(model, tc), lr=tc.lr, betas=tuple(tc.betas), fused=fused)
    rates = {"ae": tc.lr, "disc": tc.disc_lr or tc.lr}
    opt_d = torch.optim.Adam(disc.parameters(), lr=rates["disc"], betas=tuple(tc.betas), fused=fused)
    data_gen = torch.Generator().manual_seed(tc.seed * 1000 + rank)  # crops are cut on the CPU
    code_gen = torch.Generator(device).manual_seed(tc.seed)  # same on every rank: restarts stay in sync
    state_path = run_dir / "state.safetensors"
    start = 0
    ema = EMA(model, tc.ema_decay) if tc.ema_decay else None
    published = ema.model if ema else model  # what the run evaluates and writes as its model
    modules = {"model": model, "disc": disc, **({"ema": ema.model} if ema else {})}
    optimizers = {"ae": opt_ae, "disc": opt_d}
    generators = {"data": data_gen, "code": code_gen}
    if has_state(state_path):
        start = load_state(state_path, modules=modules, optimizers=optimizers, generators=generators,
                           start_as={"ema": "model"})
        if world > 1:  # each rank's data stream differs; re-derive it from the resumed step
            data_gen.manual_seed(tc.seed * 1000 + rank + 7919 * start)
        for name, opt in optimizers.items():  # the config's rates win, so --set train.lr=... on resume acts
            for group in opt.param_groups:
                group["lr"] = rates[name] * group.get("lr_scale", 1.0)
    for module in modules.values():
        dist.broadcast_module(module)
    autocast = bf16_autocast(device, tc.bf16)
    log = MetricLog(run_dir, resume_step=start)  # drops rows logged past the checkpoint
    counts = torch.zeros(config.model.n_embed, device=device)
    # skips NaN/inf steps and stops the run after a few in a row; on a GPU read at log steps only
    guard = NonFiniteGuard.for_device(device, tc.log_every)
    bar = tqdm(range(start, tc.steps), initial=start, total=tc.steps, desc="vqgan", disable=not (progress and dist.is_main()))
    for step in bar:
        latents = None
        if config.data.whole_canvas:
            canvases, x, corners, owners = train_set.random_canvas_batch(tc.batch_size, data_gen, model.factor)
            x, latents = to_device(x, device), canvas_latents(model, to_device(canvases, device), owners,
                                                              corners, config.data.crop // model.factor)
        else:
            x = to_device(train_set.random_batch(tc.batch_size, data_gen), device)
        s = train_step(model, disc, lpips, opt_ae, opt_d, x, tc, gan_on=step >= tc.disc_start + tc.disc_warmup,
                       disc_on=step >= tc.disc_start, autocast=autocast, sync=dist.average_gradients, guard=guard,
                       latents=latents)
        guard.check(step + 1)
        if ema:
            ema.update(model, step)
        q = s.q
        counts += dist.all_reduce_sum(torch.bincount(q.tokens.flatten(), minlength=config.model.n_embed).float())
        every = tc.restart_dead_codes_every
        if every and not tc.freeze_encoder and (step + 1) % every == 0:
            z_all = s.z.detach().float()
            if world > 1:  # restart from rank 0's latents so codebooks stay identical
                torch.distributed.broadcast(z_all, 0)
            if bool(z_all.isfinite().all()):  # the latents of a skipped NaN step must not become codes
                restarted = model.quantize.restart_dead_codes(z_all, counts, code_gen)  # on every rank
                if ema:  # a restarted code is a new code, not a step to average towards
                    ema.model.quantize.load_state_dict(model.quantize.state_dict())
                if dist.is_main():
                    log.write(step + 1, restarted_codes=restarted,
                              window_usage=(counts > 0).float().mean().item())
            counts.zero_()
        if dist.is_main() and (step + 1) % tc.log_every == 0:
            bar.set_postfix(l1=f"{s.l1.item():.3f}", lp=f"{s.perceptual.item():.3f}", use=f"{q.usage.item():.2f}")
            log.write(step + 1, l1=s.l1.item(), lpips=s.perceptual.item(), q_loss=q.loss.item(),
                      g_loss=s.g_loss.item(), d_loss=s.d_loss.item(), gan_weight=float(s.weight),
                      usage=q.usage.item(), perplexity=q.perplexity.item())
        last = step + 1 == tc.steps
        if (step + 1) % tc.sample_every == 0 or last:
            if dist.is_main():
                metrics = evaluate(published, lpips, val_set, tc.val_images, autocast)
                save_grid(metrics.pop("images"), run_dir / "samples" / f"recon_{step + 1:06d}.png", nrow=8)
                log.write(step + 1, **metrics)
        keep = is_keep_step(step + 1, tc.keep_every)
        if (step + 1) % tc.ckpt_every == 0 or last or keep:
            if device.type != "cpu":  # no checkpoint carries an unread streak of skipped steps
                guard.check(step + 1, force=True)
            digests = dist.check_in_sync(modules)
            if dist.is_main():
                if digests:
                    log.write(step + 1, rank_weight_digests=digests)
                save_checkpoint_pair(run_dir, step=step + 1, modules=modules, optimizers=optimizers,
                                     generators=generators, config=to_dict(config), model=published,
                                     model_metadata={"step": str(step + 1)}, keep=keep)
            dist.barrier()
    dist.cleanup()
    return run_dir / "model.safetensors"


def main(argv: list[str] | None = None) -> int:
    return trainer_main(argv, __doc__.splitlines()[0], VQGANRunConfig, train, "model written to")


if __name__ == "__main__":
    raise SystemExit(main())
