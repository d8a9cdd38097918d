"""The colour of every code: each decoded as a 2 x 2 grid of itself and averaged, counted by its
dominant channel and laid out as a palette (a VQ-GAN that decodes every colour as brown fails this
at a glance). `sundae-eval-default --code-colours` and `sundae-eval-vqgan` report it."""

from __future__ import annotations

import colorsys

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

DOMINANCE = 0.05  # a code is red-dominant when its mean red beats green and blue by this much


def code_colours(vqgan, device, batch: int, progress: bool) -> np.ndarray:
    """Mean RGB in [0, 1] (v 3) of each code decoded as a 2 x 2 grid of itself."""
    out = []
    codes = torch.arange(vqgan.vocab_size, device=device)
    for begin in tqdm(range(0, len(codes), batch), desc="decoding codes", unit="batch", disable=not progress):
        chunk = codes[begin:begin + batch]
        with torch.inference_mode():
            images = vqgan.decode(chunk[:, None, None].expand(-1, 2, 2))  # (b 3 2f 2f)
        out.append(((images.mean((2, 3)) + 1) / 2).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def colour_report(colours: np.ndarray) -> dict:
    """Counts of red/green/blue-dominant and grey codes from mean colours (v 3) in [0, 1]."""
    counts = {}
    for c, name in enumerate(("red", "green", "blue")):
        others = np.delete(colours, c, axis=1)
        counts[f"{name}_dominant"] = int((colours[:, c] > others.max(1) + DOMINANCE).sum())
    counts["grey"] = int((np.ptp(colours, axis=1) < DOMINANCE).sum())
    return {"n_codes": len(colours), **counts, "dominance": DOMINANCE,
            "mean_colour": [round(float(v), 4) for v in colours.mean(0)],
            "mean_channel_spread": round(float(np.ptp(colours, axis=1).mean()), 4)}


def palette(colours: np.ndarray, swatch: int = 16, per_row: int = 32) -> Image.Image:
    """Swatches of the codes' colours: greys last, the rest sorted by hue, then by brightness."""
    def key(rgb):
        h, s, v = colorsys.rgb_to_hsv(*rgb)
        return (np.ptp(rgb) < DOMINANCE, h, v)

    ordered = sorted(colours.clip(0, 1).tolist(), key=key)
    rows = -(-len(ordered) // per_row)
    canvas = np.full((rows * swatch, per_row * swatch, 3), 255, np.uint8)
    for i, rgb in enumerate(ordered):
        r, c = divmod(i, per_row)
        canvas[r * swatch:(r + 1) * swatch, c * swatch:(c + 1) * swatch] = np.round(np.array(rgb) * 255)
    return Image.fromarray(canvas)
