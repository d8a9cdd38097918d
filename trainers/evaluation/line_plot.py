"""Small line charts drawn with Pillow, so evaluation plots need no matplotlib.

`draw_panels(panels, title)` lays out one chart per metric side by side (the paper's Figures 8,
12 and 13 are rows of such panels: a metric against one sampling setting). Each panel has
axes with round-number ticks, the points joined by lines, and optional error bars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

PANEL_W, PANEL_H = 340, 270
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 62, 14, 30, 46
LINE = (31, 119, 180)
GRID = (225, 225, 225)
INK = (30, 30, 30)


@dataclass
class Panel:
    title: str
    x: list[float]
    y: list[float]
    xlabel: str = ""
    yerr: list[float] | None = None
    log_x: bool = False  # x on a log scale, ticks at powers of ten (every x must be > 0)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round-number ticks (1, 2, 5 x 10^k steps) covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi - lo < 1e-12 * max(1.0, abs(hi)):
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, count - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 0.5 and len(ticks) < 20:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _text(draw: ImageDraw.ImageDraw, xy, text: str, font, anchor: str) -> None:
    """Text placed by a two-letter anchor (l/m/r, t/m), computed here because Pillow's own
    `anchor=` does not work with the bitmap font older Pillows fall back to."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left, bottom - top
    x = xy[0] - {"l": 0, "m": w / 2, "r": w}[anchor[0]] - left
    y = xy[1] - {"t": 0, "m": h / 2}[anchor[1]] - top
    draw.text((x, y), text, fill=INK, font=font)


def _label(value: float) -> str:
    return f"{value:.4g}"


def _draw_panel(draw: ImageDraw.ImageDraw, ox: int, oy: int, panel: Panel, font, small) -> None:
    x0, y0 = ox + MARGIN_L, oy + MARGIN_T
    x1, y1 = ox + PANEL_W - MARGIN_R, oy + PANEL_H - MARGIN_B
    _text(draw, ((x0 + x1) // 2, oy + 8), panel.title, font=font, anchor="mt")
    errs = panel.yerr or [0.0] * len(panel.y)
    valid = [(x, y, e or 0.0) for x, y, e in zip(panel.x, panel.y, errs) if y is not None and math.isfinite(y)]
    fx = math.log10 if panel.log_x else (lambda v: v)
    if panel.log_x and panel.x:
        lo, hi = math.floor(math.log10(min(panel.x))), math.ceil(math.log10(max(panel.x)))
        xt = [10.0 ** k for k in range(lo, max(hi, lo + 1) + 1)]
    else:
        xt = nice_ticks(min(panel.x), max(panel.x)) if panel.x else [0.0, 1.0]
    yt = nice_ticks(min(y - e for _, y, e in valid), max(y + e for _, y, e in valid)) if valid else [0.0, 1.0]

    def sx(v: float) -> float:
        return x0 + (fx(v) - fx(xt[0])) / (fx(xt[-1]) - fx(xt[0])) * (x1 - x0)

    def sy(v: float) -> float:
        return y1 - (v - yt[0]) / (yt[-1] - yt[0]) * (y1 - y0)

    for t in yt:
        draw.line([(x0, sy(t)), (x1, sy(t))], fill=GRID)
        _text(draw, (x0 - 5, sy(t)), _label(t), font=small, anchor="rm")
    for t in xt:
        draw.line([(sx(t), y1), (sx(t), y1 + 4)], fill=INK)
        _text(draw, (sx(t), y1 + 6), _label(t), font=small, anchor="mt")
    draw.rectangle([x0, y0, x1, y1], outline=INK)
    _text(draw, ((x0 + x1) // 2, y1 + 26), panel.xlabel, font=small, anchor="mt")
    pixels = [(sx(x), sy(y)) for x, y, _ in valid]
    if len(pixels) > 1:
        draw.line(pixels, fill=LINE, width=2)
    for (px, py), (_, y, e) in zip(pixels, valid):
        if e:
            draw.line([(px, sy(y - e)), (px, sy(y + e))], fill=LINE, width=1)
        draw.ellipse([px - 3.5, py - 3.5, px + 3.5, py + 3.5], fill=LINE)


def draw_panels(panels: list[Panel], title: str = "", per_row: int = 4) -> Image.Image:
    """A white RGB image with the panels in rows of `per_row` under an optional title."""
    rows = -(-len(panels) // per_row)
    cols = min(per_row, len(panels))
    top = 34 if title else 0
    image = Image.new("RGB", (cols * PANEL_W, rows * PANEL_H + top), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(15), _font(12)
    if title:
        _text(draw, (image.width // 2, 10), title, font=_font(17), anchor="mt")
    for i, panel in enumerate(panels):
        r, c = divmod(i, per_row)
        _draw_panel(draw, c * PANEL_W, top + r * PANEL_H, panel, font, small)
    return image
