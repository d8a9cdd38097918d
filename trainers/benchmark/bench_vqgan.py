"""The benchmark's VQ-GAN cases: training throughput and MFU (`train_vqgan.train_step`, bf16
autocast against fp32, and the campaign's decoder-only step), and encode / decode latency and
memory of one image."""

from __future__ import annotations


import torch
from torch.utils.flop_counter import FlopCounterMode

from sundae_core.config import VQGANConfig, load_yaml
from sundae_core.errors import InputError
from sundae_core.models import for_inference
from sundae_core.presets import MEGAPIXEL_VQGAN
from sundae_core.vqgan import VQGAN

from ..data.image_data import DataConfig
from ..training.device import bf16_autocast
from ..training.discriminator import DiscriminatorConfig, PatchDiscriminator
from ..training.lpips import load_lpips
from ..training.train_vqgan import VQGANRunConfig, VQTrainConfig, train_step
from .bench_ar import decoder_flops, encoder_flops
from .bench_timing import Bench, MemoryProbe, outside_share, repeats_for, time_runs, training_precision, warm_up

TINY_VQGAN = VQGANConfig(resolution=32, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                         z_channels=8, embed_dim=8, n_embed=64, mid_attention=False)
# `--vqgan-config tiny`: the tiny VQ-GAN trained on 32 px crops (AlexNet LPIPS: the smallest it takes).
TINY_VQGAN_RUN = VQGANRunConfig(model=TINY_VQGAN, data=DataConfig(resolution=32, crop=32, cache_size=32),
                                train=VQTrainConfig(batch_size=2, lpips_net="alex", disc_channels=8, disc_layers=2))
VQGAN_CODECS = ("config", "megapixel")  # the inference cases of the vqgan section
EIGHT_GB_MB = 8 * 1024  # issue 5: the megapixel 1024 x 1024 decode must fit in 8 GB of RAM


def build_inference_vqgan(config: VQGANConfig, device: torch.device, dtype: torch.dtype) -> VQGAN:
    """A VQ-GAN made with a fixed seed, cast and laid out as every loaded one (models.for_inference):
    the decoder in `dtype` (the compute dtype), the encoder in float32, channels-last conv weights
    (an NCHW model fed the channels-last input VQGAN.decode makes reorders its weights at every
    conv: the megapixel decode took 6.2 s instead of 3.2 s on 2 threads)."""
    torch.manual_seed(0)
    return for_inference(VQGAN(config), device, dtype)


def vqgan_run_config(name: str) -> VQGANRunConfig:
    """`tiny` or the path of a VQ-GAN run config YAML (as `sundae-train-vqgan --config` takes)."""
    return TINY_VQGAN_RUN if name == "tiny" else load_yaml(name, VQGANRunConfig)


# The VQ-GAN training cases: (precision, phase). "full" is the step once the GAN is on (generator
# with LPIPS and the adaptive weight, then the discriminator); "decoder" is the step the campaign's
# decoder runs take (train.freeze_encoder, no GAN: L1 + LPIPS through the decoder alone).
# On a CPU without bf16 kernels the bf16 cases run in fp32, as the trainer does (cpu_features), and
# the fp32 full case is not repeated.
VQGAN_TRAIN_CASES = (("bf16", "full"), ("fp32", "full"), ("bf16", "decoder"))


def vqgan_train_cases(compute: str) -> list[tuple[str, str]]:
    return list(dict.fromkeys((compute if precision == "bf16" else precision, phase)
                              for precision, phase in VQGAN_TRAIN_CASES))


def bench_vqgan_train(bench: Bench, name: str, run: VQGANRunConfig, precision: str, phase: str = "full") -> dict:
    """Training steps as `sundae-train-vqgan` runs them (`train_step`; Adam on fp32 weights) at the
    config's batch size and crop, under bf16 autocast ("bf16") or in plain fp32 ("fp32"), in the
    `phase` of VQGAN_TRAIN_CASES. FLOPs are counted on one step (FlopCounterMode: convolutions and
    matmuls, forward and backward, LPIPS included); MFU is over the compute dtype's matmul peak
    measured in this run; `outside_share` is the profiled share of a step outside FLOP kernels (norms,
    activations, copies, the optimiser)."""
    dev, tc, crop = bench.device, run.train, run.data.crop
    autocast = bf16_autocast(dev, precision == "bf16")
    g = torch.Generator(dev).manual_seed(0)
    images = torch.rand(tc.batch_size, run.model.in_channels, crop, crop, generator=g, device=dev) * 2 - 1
    decoder_only = phase == "decoder"
    with MemoryProbe(dev) as mem:
        torch.manual_seed(0)
        model = VQGAN(run.model).to(dev).train()
        if decoder_only:  # as train_vqgan does with train.freeze_encoder
            for part in (model.encoder, model.quant_conv, model.quantize):
                part.requires_grad_(False)
        disc_config = DiscriminatorConfig(channels=tc.disc_channels, layers=tc.disc_layers)
        disc = PatchDiscriminator(disc_config).to(dev).train()
        lpips = load_lpips(tc.lpips_net, device=dev)
        opt_ae = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=tuple(tc.betas))
        opt_d = torch.optim.Adam(disc.parameters(), lr=tc.lr, betas=tuple(tc.betas))
        step = lambda: train_step(model, disc, lpips, opt_ae, opt_d, images, tc, gan_on=not decoder_only,
                                  autocast=autocast)
        warm_up(step, dev)  # also allocates both optimisers' state
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    t = time_runs(step, dev, bench.long_repeats)
    outside = outside_share(step) if dev.type == "cpu" else None
    del model, disc, lpips, opt_ae, opt_d
    row = {"case": "vqgan-train", "config": name, "precision": training_precision(precision),
           "phase": phase, "batch": tc.batch_size, "crop": crop, "lpips": tc.lpips_net, "median_s": t.median_s,
           "min_s": t.min_s, "runs": t.runs, "images_per_s": tc.batch_size / t.median_s, "flops": flops,
           "flop_per_s": flops / t.median_s, "mfu": bench.fraction(flops / t.median_s),
           "outside_share": outside, "peak_mem_mb": mem.mb}
    mfu = "" if row["mfu"] is None else f", MFU {row['mfu']:.1%}"
    bench.log(f"vqgan train {name} {row['precision']} {phase} b{tc.batch_size} {crop}px: {t.median_s:.2f} s/step, "
              f"{row['images_per_s']:.1f} images/s{mfu}, {mem.mb} MB")
    return row


def bench_vqgan_codec(bench: Bench, name: str, config: VQGANConfig, side: int) -> dict:
    """Encode and decode of one (side x side) image, as loaded for inference, under inference_mode.

    Memory: decode = peak above the level before the model was built (weights, including the fp32
    initialisation before the cast to bf16, + one decode: what a process that only decodes needs);
    encode = peak above the level with the model loaded."""
    dev, f = bench.device, config.factor
    g = torch.Generator(dev).manual_seed(0)
    images = torch.rand(1, config.in_channels, side, side, generator=g, device=dev) * 2 - 1
    tokens = torch.randint(0, config.n_embed, (1, side // f, side // f), generator=g, device=dev)
    with torch.inference_mode():
        with MemoryProbe(dev) as dec_mem:
            model = build_inference_vqgan(config, dev, bench.compute_dtype)
            decode = lambda: model.decode(tokens)
            dec_warm = warm_up(decode, dev)
        with MemoryProbe(dev) as enc_mem:
            encode = lambda: model.encode(images)
            enc_warm = warm_up(encode, dev)
        dec = time_runs(decode, dev, repeats_for(dec_warm, bench.repeats, bench.budget_s))
        enc = time_runs(encode, dev, repeats_for(enc_warm, bench.repeats, bench.budget_s))
    params = sum(p.numel() for p in model.parameters())
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    del model
    enc_f, dec_f = encoder_flops(config, side, side), decoder_flops(config, side // f, side // f)
    row = {"case": "vqgan-codec", "model": name, "image": f"{side}x{side}", "tokens": [side // f, side // f],
           "factor": f, "dtype": f"encode fp32, decode {bench.compute}", "params_m": round(params / 1e6, 2),
           "weights_mb": round(weights_mb, 1),
           "encode_s": enc.median_s, "encode_min_s": enc.min_s, "encode_runs": enc.runs,
           "decode_s": dec.median_s, "decode_min_s": dec.min_s, "decode_runs": dec.runs,
           "encode_flops": enc_f, "decode_flops": dec_f, "encode_flop_per_s": enc_f / enc.median_s,
           "decode_flop_per_s": dec_f / dec.median_s, "decode_frac_peak": bench.fraction(dec_f / dec.median_s),
           "decode_peak_mem_mb": dec_mem.mb, "encode_peak_mem_mb": enc_mem.mb,
           # the whole process at the decode's peak (interpreter, torch, model, activations)
           "decode_process_rss_mb": round(dec_mem.peak / 2**20, 1) if dev.type == "cpu" else None,
           "decode_fits_8gb": dec_mem.mb <= EIGHT_GB_MB}
    bench.log(f"vqgan codec {name} {side}px: encode {enc.median_s:.2f} s, decode {dec.median_s:.2f} s, "
              f"decode peak +{dec_mem.mb} MB, encode peak +{enc_mem.mb} MB")
    return row


def codec_models(name: str, run: VQGANRunConfig, codecs: list[str], side: int) -> list[tuple[str, VQGANConfig]]:
    """The (name, config) of each encode / decode case, checked against the image side."""
    models = {"config": (name, run.model), "megapixel": ("megapixel f=32", MEGAPIXEL_VQGAN)}
    out = [models[c] for c in codecs]
    for label, config in out:
        if side % config.factor:
            raise InputError(f"--vqgan-image {side} is not a multiple of the {label} VQ-GAN's factor "
                             f"{config.factor}")
    return out


def vqgan_section(bench: Bench, name: str, run: VQGANRunConfig, codecs: list[tuple[str, VQGANConfig]],
                  side: int) -> dict:
    train = [bench_vqgan_train(bench, name, run, precision, phase)
             for precision, phase in vqgan_train_cases(bench.compute)]
    fp32_s = next(r["median_s"] for r in train if r["precision"] == "fp32" and r["phase"] == "full")
    for r in train:  # the decoder-only step is lighter: its ratio is not a precision's alone
        r["speed_vs_fp32"] = fp32_s / r["median_s"] if r["phase"] == "full" else None
    return {"train": train, "codec": [bench_vqgan_codec(bench, label, c, side) for label, c in codecs]}
