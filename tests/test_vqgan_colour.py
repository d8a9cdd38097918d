"""Colour guards for the VQ-GAN: the embedded default once decoded every colour as brown.

The cause, shown here: GroupNorm takes its statistics over the whole image, so a model trained
on crops meets other statistics on a full canvas and shifts colours there (and a group of two
channels over a flat region normalises to +-1, erasing the colour). The default now uses a
per-position LayerNorm (`norm: channel`) and a codebook-free quantizer (`quantizer: fsq`).
Both tests build their tiny model with the norm and quantizer of the shipped default config, so
switching the default back fails them.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from einops import reduce

from sundae_core.config import VQGANConfig, load_yaml
from sundae_core.models import default_model_path, inference_dtype, load_vqgan
from sundae_core.vqgan import VQGAN
from trainers.training.train_vqgan import VQGANRunConfig, VQTrainConfig, train_step

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "vqgan_emoji_f32.yaml"
# Saturated primaries and secondaries, black, and one unsaturated orange, in [-1, 1].
COLOURS = torch.tensor([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1], [-1, 1, 1], [1, -1, 1],
                        [-1, -1, -1], [0.6, -0.2, -0.8]], dtype=torch.float32)
# Largest error allowed in any channel of a disc's mean colour: 0.25 in [-1, 1] is 32 / 255.
COLOUR_BOUND = 0.25


def tiny_config(**overrides) -> VQGANConfig:
    """A two-level model with the shipped default's norm and quantizer."""
    shipped = load_yaml(DEFAULT_CONFIG, VQGANRunConfig).model
    base = VQGANConfig(resolution=16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                       mid_attention=False, z_channels=16, norm=shipped.norm, quantizer=shipped.quantizer,
                       fsq_levels=shipped.fsq_levels,
                       embed_dim=len(shipped.fsq_levels) if shipped.quantizer == "fsq" else 16,
                       n_embed=shipped.n_embed if shipped.quantizer == "fsq" else 64,
                       l2_normalize_codes=shipped.l2_normalize_codes)
    return dataclasses.replace(base, **overrides)


def disc(colour: torch.Tensor, size: int, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A disc of `colour` centred on a white (3 size size) canvas, and its (size size) mask."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    inside = ((yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2) < radius ** 2
    image = torch.ones(3, size, size)
    image[:, inside] = colour[:, None]
    return image, inside


def worst_colour_error(model: VQGAN, size: int, radius: int) -> float:
    images, masks = zip(*(disc(c, size, radius) for c in COLOURS))
    with torch.no_grad():
        out = model.decode(model.encode(torch.stack(images)))
    errors = [(out[i][:, masks[i]].mean(1) - COLOURS[i]).abs().max() for i in range(len(COLOURS))]
    return float(torch.stack(errors).max())


def test_tiny_vqgan_learns_saturated_colours_and_keeps_them_on_a_larger_canvas():
    """Can it learn: 16 px discs and flat fills of 8 colours, L1 only, at most 40 s of one thread.
    Then every disc's mean colour must come back within COLOUR_BOUND, both at the training size
    and on a canvas twice as large (GroupNorm passes the first and fails the second: measured
    0.10 and 1.37 against 0.09 and 0.05 for the per-position norm)."""
    torch.manual_seed(0)
    model = VQGAN(tiny_config()).train()
    images = torch.stack([disc(c, 16, 6)[0] for c in COLOURS] + [c[:, None, None].expand(3, 16, 16) for c in COLOURS])
    tc = VQTrainConfig(lr=1e-3, perceptual_weight=0.0, bf16=False)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=(0.9, 0.99))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start, steps = time.monotonic(), 0
        while steps < 700 and time.monotonic() - start < 40:
            result = train_step(model, None, None, opt, None, images, tc, gan_on=False, autocast=nullcontext)
            steps += 1
    finally:
        torch.set_num_threads(threads)
    model.eval()
    assert result.l1.item() < 0.1, f"L1 still {result.l1.item():.3f} after {steps} steps"
    at_size = worst_colour_error(model, 16, 6)
    larger = worst_colour_error(model, 32, 12)
    assert at_size < COLOUR_BOUND, f"worst mean-colour error {at_size:.3f} at the training size ({steps} steps)"
    assert larger < COLOUR_BOUND, f"worst mean-colour error {larger:.3f} on a 2x canvas ({steps} steps)"


def test_default_norm_computes_the_same_function_on_a_crop_and_on_the_canvas():
    """Per-position norms make the model local: the tokens of a crop's interior are those of the
    same region encoded as part of a larger canvas (GroupNorm's whole-image statistics break it)."""
    torch.manual_seed(0)
    model = VQGAN(tiny_config(ch_mult=(1, 2, 2))).eval()
    canvas = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1)) * 2 - 1
    canvas[..., :, 64:] = 1.0  # half of it blank: GroupNorm's statistics then differ a lot
    with torch.no_grad():
        whole = model.encode_latents(canvas)  # (1 d 32 32)
        crop = model.encode_latents(canvas[..., 0:64, 0:64])  # (1 d 16 16)
    # The crop shares the canvas's top-left corner, so its tokens far enough from its right and
    # bottom edges see exactly what they see within the canvas (GroupNorm: off by 0.05-0.5).
    near = slice(0, 6)
    assert torch.allclose(whole[..., near, near], crop[..., near, near], atol=1e-4)


def test_the_embedded_vqgan_keeps_flat_black_at_1024_px_when_loaded_for_inference():
    """The embedded VQ-GAN as every node, CLI and workflow loads it (the decoder in the inference
    dtype: bf16 where the CPU has bf16 kernels, else float32): a flat black canvas at
    the megapixel size comes back black. With the encoder in bf16 end to end, 679 of its 1024
    tokens tipped over an FSQ rounding boundary to a code that decodes dark grey (19 of 255 off);
    the encoder now runs in float32 (VQGAN.cast_for_inference) and it comes back under 1 off."""
    dtype = inference_dtype("cpu")
    vqgan = load_vqgan(default_model_path("vqgan"), dtype=dtype)
    assert vqgan.encoder.conv_in.weight.dtype == vqgan.quant_conv.weight.dtype == torch.float32
    assert vqgan.decoder.conv_out.weight.dtype == vqgan.post_quant_conv.weight.dtype == dtype
    for value in (-1.0, 1.0):  # black, and white (the emoji canvases' background) as a control
        canvas = torch.full((1, 3, 1024, 1024), value)
        with torch.inference_mode():
            decoded = vqgan.decode(vqgan.encode(canvas))
        name = "black" if value < 0 else "white"
        error = float((decoded.mean((2, 3)) - value).abs().max()) * 127.5
        assert error < 3, f"flat {name} 1024 px canvas decoded {error:.1f} of 255 off"
        # no token's patch far off either (measured: 8.4 for black, 1.4 for white; bf16 encoder: 25)
        patches = reduce(decoded, "b c (h p) (w q) -> b c h w", "mean", p=vqgan.factor, q=vqgan.factor)
        worst = float((patches - value).abs().max()) * 127.5
        assert worst < 15, f"a 32 px patch of the flat {name} canvas decoded {worst:.1f} of 255 off"
