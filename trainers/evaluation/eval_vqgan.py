"""`sundae-eval-vqgan`: is a VQ-GAN colour-true, and how well do its tokens keep a hole's content?

The checks a first stage must pass before its encoder is frozen (priors are trained on its tokens):

1. Flat colours: canvases of pure red, green, blue, yellow, cyan, magenta, black, white and seven
   greys between them (32, 64, ... 224 of 255; 128 is "grey"), encoded and decoded at 256 px and
   at --resolution (1024 px, the size the workflows use: a bf16 encoder kept black within 2 at
   256 px and decoded it 19 off at 1024 px); the worst channel error (0-255) of the decoded
   canvas's mean colour, of any pixel, of the worst token-sized block's mean (a tinted patch the
   canvas mean averages away: the inner squares of flat greys at 1024 px) and of the mean of the
   border band one token wide (the decoder's zero padding tints the edges). A colour-true VQ-GAN
   keeps each within a few levels. And the grey axis at --resolution (every 8th level): the code
   at each canvas's centre and the colour it decodes to there. Inside a large flat area one code
   stands for a range of colours and a decoder can give it one colour: how many codes the axis
   crosses and the worst error are the token version's colour resolution, which only a new encoder
   moves. --flat-only stops here (a minute or two, to pick among a decoder run's checkpoints).
2. Held-out holes: on --n held-out images (the project's split), the 8 x 8-token hole on the subject
   that `sundae-eval-default` uses (same placement, same seed), pasted with the inpainting workflow's
   feather and seam band (the mean fill with the feather only, as there); LPIPS-Alex and PSNR
   inside the hole for the VQ-GAN reconstruction and for the no-model mean-colour fill, plus PSNR over the whole image and on luminance alone (shape against colour),
   and the edge ratio: the reconstruction's RMS luminance gradient over the original's (1.0 is as
   sharp as the original; blurred edges lower it, mottled flat areas raise it, so read it beside
   recon_grid.png: the embedded decoder's soft edges and mottling offset to 0.99).
3. Code colours: every code decoded as a 2 x 2 grid of itself; red / green / blue dominant counts,
   and the hue spread: how many of 12 hue sectors (30 degrees each) hold a non-grey code, and the
   entropy of the codes' hues in bits (log2 12 = 3.58 when hues are even).

Outputs in --out: eval_vqgan.json, flat_colours.png (each colour above its decodes at 256 px and at
--resolution, shrunk to 256 px), code_palette.png
and recon_grid.png (original, reconstruction, with the hole outlined). --compare-to an earlier
eval_vqgan.json pairs the two decoders image by image on the same holes (paired.py): a decoder
fine-tune (the GAN phase) moves the hole LPIPS by less than its spread over images.

Several --vqgan files (a run's kept/ checkpoints: `--vqgan RUN/kept/*.safetensors`) are each
evaluated as above in --out/<file name>/, and then set in one table, one row each (checkpoints.md
in --out, also printed): held-out hole LPIPS, whole-image PSNR, edge ratio and the worst flat block
at --resolution, each as the difference from --compare-to paired image by image when it is given.
"""

from __future__ import annotations

import argparse
import colorsys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sundae_core.cli import doc_summary, run_guarded, write_json_report
from sundae_core.errors import InputError
from sundae_core.grid import make_grid, save_png
from sundae_core.images import hide_masked
from sundae_core.models import inference_dtype, load_vqgan, model_path

from ..data.image_data import HELD_OUT_FRACTION
from ..training.lpips import load_lpips
from ..training.train_vqgan import psnr
from .code_colours import DOMINANCE, code_colours, colour_report, palette
from .inpaint_setup import (WORKFLOW, hole_crops, hole_masks, image_batches, image_subset, paste,
                            place_hole, thumbnail, to_model, workflow_settings)
from .paired import compare_vqgan, format_vqgan_comparison, load_report

REPORT = "eval_vqgan.json"
# the cube's corners, then a grey ramp from black to white (mid grey keeps its old name, "grey")
FLAT_COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
                "cyan": (0, 255, 255), "magenta": (255, 0, 255), "black": (0, 0, 0),
                **{("grey" if v == 128 else f"grey {v}"): (v, v, v) for v in range(32, 225, 32)},
                "white": (255, 255, 255)}
FLAT_RGB = torch.tensor(list(FLAT_COLOURS.values()), dtype=torch.float32)  # (n 3) 0-255, in that order
FLAT_SIZE = 256  # the flat canvases' first size; the second is --resolution
GREY_STEP = 8  # grey_axis's spacing in levels: 33 canvases at --resolution
HUE_SECTORS = 12


def flat_canvases(size: int) -> torch.Tensor:
    """(n 3 size size) in [-1, 1], one canvas per FLAT_COLOURS entry, in its order."""
    return (FLAT_RGB / 127.5 - 1)[:, :, None, None].expand(-1, -1, size, size).contiguous()


@torch.inference_mode()
def flat_colours(vqgan, device, size: int = FLAT_SIZE) -> tuple[dict, torch.Tensor]:
    """Per colour: the worst channel error (0-255) of the decoded mean colour and of any pixel;
    and the decodes (n 3 FLAT_SIZE FLAT_SIZE), resized to FLAT_SIZE for the picture."""
    rgb = FLAT_RGB
    # one canvas at a time: fifteen megapixel decodes at once would take several GB
    decoded = torch.cat([vqgan.decode(vqgan.encode(canvas[None].to(device))).float().cpu()
                         for canvas in flat_canvases(size)])
    levels = (decoded + 1) * 127.5
    mean_error = (levels.mean((2, 3)) - rgb).abs().amax(1)
    pixel_error = (levels - rgb[:, :, None, None]).abs().amax((1, 2, 3))
    block_error, band_error = block_errors(levels, rgb, vqgan.factor)
    report = {name: {"mean_colour_error": round(float(m), 1), "worst_pixel_error": round(float(p), 1),
                     "worst_block_error": round(float(b), 1), "border_band_error": round(float(e), 1),
                     "decoded_mean": [round(float(v), 1) for v in levels[i].mean((1, 2))]}
              for i, (name, m, p, b, e) in enumerate(zip(FLAT_COLOURS, mean_error, pixel_error, block_error,
                                                         band_error))}
    if size != FLAT_SIZE:  # area: a mean over each output pixel's source pixels (repeats when smaller)
        decoded = F.interpolate(decoded, size=(FLAT_SIZE, FLAT_SIZE), mode="area")
    return report, decoded.clamp(-1, 1)


@torch.inference_mode()
def grey_axis(vqgan, device, size: int, step: int = GREY_STEP) -> dict:
    """Flat greys 0, step, ... 255 at `size`: the code at each canvas's centre and the colour its
    centre tile decodes to. Inside a large flat area the encoder's view holds no edge, so a code
    there stands for a range of colours and the decoder can give it only one: this is the colour
    resolution of the token version, which no decoder run can raise (session 30)."""
    f, c = vqgan.factor, size // 2 // vqgan.factor  # the centre token, whose own tile is read
    rows = []
    for level in [*range(0, 255, step), 255]:
        canvas = torch.full((1, 3, size, size), level / 127.5 - 1, device=device)
        tokens = vqgan.encode(canvas)
        tile = vqgan.decode(tokens).float().cpu()[0, :, c * f:(c + 1) * f, c * f:(c + 1) * f]
        decoded = ((tile + 1) * 127.5).mean((1, 2))
        rows.append({"grey": level, "code": int(tokens[0, c, c]),
                     "decoded": [round(float(v), 1) for v in decoded],
                     "error": round(float((decoded - level).abs().amax()), 1)})
    codes = []  # runs of neighbouring greys on one code
    for row in rows:
        if codes and codes[-1]["code"] == row["code"]:
            codes[-1]["greys"][1] = row["grey"]
        else:
            codes.append({"code": row["code"], "greys": [row["grey"], row["grey"]], "decoded": row["decoded"]})
    return {"size": size, "step": step, "codes": len({r["code"] for r in rows}),
            "worst_error": max(r["error"] for r in rows), "mean_error": round(float(np.mean([r["error"] for r in rows])), 1),
            "runs": codes, "greys": rows}


def block_errors(levels: torch.Tensor, rgb: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """levels (n 3 h w), 0-255, of canvases meant to be flat `rgb` (n 3): per canvas the worst
    channel error of the worst block x block tile's mean, and of the mean over the band one tile
    wide along the four edges."""
    tiles = F.avg_pool2d(levels, block)  # (n 3 h/block w/block)
    worst = (tiles - rgb[:, :, None, None]).abs().amax((1, 2, 3))
    edge = torch.ones(tiles.shape[-2:], dtype=torch.bool)
    edge[1:-1, 1:-1] = False
    band = tiles[..., edge].mean(-1)  # tiles of equal size: their mean is the band's pixel mean
    return worst, (band - rgb).abs().amax(1)


def hue_spread(colours: np.ndarray) -> dict:
    """Sectors of 30 degrees holding a non-grey code, and the entropy (bits) of those codes' hues."""
    hues = [colorsys.rgb_to_hsv(*c)[0] for c in colours.clip(0, 1) if np.ptp(c) >= DOMINANCE]
    if not hues:
        return {"hue_sectors_used": 0, "hue_entropy_bits": 0.0, "non_grey_codes": 0}
    counts = np.bincount((np.array(hues) * HUE_SECTORS).astype(int) % HUE_SECTORS, minlength=HUE_SECTORS)
    p = counts[counts > 0] / counts.sum()
    return {"hue_sectors_used": int((counts > 0).sum()), "hue_entropy_bits": round(float(-(p * np.log2(p)).sum()), 3),
            "non_grey_codes": len(hues), "codes_per_hue_sector": counts.tolist()}


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(b 3 h w) -> (b 1 h w), Rec. 601 weights, same range."""
    return (x * torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]).sum(1, keepdim=True)


def edge_energy(x: torch.Tensor) -> torch.Tensor:
    """(b 3 h w) in [-1, 1] -> (b,): the mean squared luminance step to the right and downward
    neighbour. Squared, because a blur keeps an edge's total rise (the plain mean of |steps| does
    not fall) but spreads it over more pixels: a step of height h over w pixels gives h**2 / w."""
    y = luminance(x.float())
    return ((y[..., :, 1:] - y[..., :, :-1]).pow(2).mean((1, 2, 3))
            + (y[..., 1:, :] - y[..., :-1, :]).pow(2).mean((1, 2, 3)))


def edge_ratio(reconstruction: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """(b,) sqrt of the reconstruction's edge energy over the original's: 1 is as sharp, an edge
    blurred over w pixels reads about 1 / sqrt(w); a flat original gives 1."""
    real = edge_energy(original)
    ratio = (edge_energy(reconstruction) / real.clamp_min(1e-12)).sqrt()
    return torch.where(real > 0, ratio, torch.ones_like(real))


@torch.inference_mode()
def held_out_holes(args, vqgan, lpips, device, progress: bool,
                   encoded: dict | None = None) -> tuple[dict, list[torch.Tensor]]:
    """`encoded`: tokens kept across calls by (token version, image file), so the checkpoints of one
    decoder run (one token version) encode the held-out images once."""
    f, version = vqgan.factor, vqgan.token_version
    encoded = {} if encoded is None else encoded
    settings = workflow_settings(args.workflow)
    feather = settings.feather
    files = image_subset(args.images, args.n, args.val_fraction)
    place_gen = torch.Generator().manual_seed(args.seed)
    rows, thumbs = [], []
    batches = image_batches(files, args.resolution, args.batch_size)
    for batch, pixels in tqdm(batches, desc="held-out holes", total=-(-len(files) // args.batch_size),
                              disable=not progress):
        holes = [place_hole(p, f, args.hole, place_gen, args.slack) for p in pixels]
        original = to_model(pixels)
        mask = hole_masks(holes, *original.shape[-2:], f)
        keys = [(version, str(p)) for p in batch]
        if not all(k in encoded for k in keys):
            encoded.update(zip(keys, vqgan.encode(original.to(device)).cpu()))
        decoded = vqgan.decode(torch.stack([encoded[k] for k in keys]).to(device)).float().cpu()
        filled = hide_masked(original, mask, args.ring or f)  # the ring's mean colour
        real = hole_crops(original, holes, f)
        scores = {}
        for name, image in (("reconstruction", paste(original, decoded, mask, feather, settings.seam_band)),
                            ("mean_fill", paste(original, filled, mask, feather))):
            fake = hole_crops(image, holes, f)
            scores[name] = (lpips(fake.to(device), real.to(device)).float().cpu(), psnr(fake, real),
                            psnr(luminance(fake), luminance(real)))
        whole, edges = psnr(decoded, original), edge_ratio(decoded, original)
        for i, path in enumerate(batch):
            row = {"file": str(Path(path).relative_to(args.images)), "hole_top": holes[i].top,
                   "hole_left": holes[i].left, "image_psnr": round(float(whole[i]), 3),
                   "edge_ratio": round(float(edges[i]), 4)}
            for name, (lp, ps, lum) in scores.items():
                row.update({f"{name}_lpips": round(float(lp[i]), 4), f"{name}_psnr": round(float(ps[i]), 3),
                            f"{name}_luma_psnr": round(float(lum[i]), 3)})
            rows.append(row)
            if len(thumbs) < 2 * args.grid_images:
                thumbs += [thumbnail(original[i], args.thumb, holes[i].box(f)), thumbnail(decoded[i], args.thumb)]

    def mean(key: str) -> float:
        return round(float(np.mean([r[key] for r in rows])), 4)

    report = {"n": len(rows), "hole_tokens": args.hole, "resolution": args.resolution, "feather": feather,
              "seam_band": settings.seam_band,
              "methods": {name: {"lpips": mean(f"{name}_lpips"), "psnr": mean(f"{name}_psnr"),
                                 "luma_psnr": mean(f"{name}_luma_psnr")} for name in ("reconstruction", "mean_fill")},
              "image_psnr": mean("image_psnr"), "edge_ratio": mean("edge_ratio"), "images": rows}
    return report, thumbs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sundae-eval-vqgan", description=doc_summary(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--vqgan", nargs="+", metavar="FILE", help="VQ-GAN checkpoint (absent or 'default': the "
                   "embedded one); several: each in --out/<file name>/, then a table of them")
    p.add_argument("--images", default="data/emoji_groups", help="image folder with the held-out split")
    p.add_argument("--val-fraction", type=float, default=HELD_OUT_FRACTION, help="held-out share (project rule)")
    p.add_argument("--resolution", type=int, default=1024, help="canvas size of the held-out images (default 1024)")
    p.add_argument("--n", type=int, default=40, help="held-out images (default 40)")
    p.add_argument("--hole", type=int, default=8, help="side of the square hole in tokens (default 8)")
    p.add_argument("--slack", type=float, default=0.1, help="hole placement slack, as sundae-eval-default")
    p.add_argument("--ring", type=int, default=0, help="mean-fill ring width in pixels (default: the factor)")
    p.add_argument("--workflow", default=str(WORKFLOW), help="inpainting workflow whose feather and seam band are used")
    p.add_argument("--grid-images", type=int, default=6, help="images in recon_grid.png (default 6)")
    p.add_argument("--thumb", type=int, default=256, help="side of each picture in the grids (default 256)")
    p.add_argument("--batch-size", type=int, default=4, help="images encoded at once (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hole placement (default 0)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--out", default="runs/eval_vqgan", help="output folder (default runs/eval_vqgan)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--flat-only", action="store_true", help="the flat canvases alone: no held-out holes or "
                   "code colours (about a minute; to pick among a decoder run's checkpoints)")
    p.add_argument("--compare-to", metavar="REPORT", help="an earlier eval_vqgan.json: print this run's "
                   "figures against it, paired image by image, and keep the comparison in the report")
    return p


def main(argv: list[str] | None = None, lpips=None) -> int:
    """`lpips`: a stand-in for LPIPS-Alex (tests); by default the real one is loaded."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        device, progress, out = torch.device(args.device), not args.no_progress, Path(args.out)
        # bad paths fail before any work
        baseline = load_report(args.compare_to, "sundae-eval-vqgan", REPORT) if args.compare_to else None
        files = [str(model_path(f, "vqgan")) for f in (args.vqgan or [None])]
        outs = checkpoint_folders(files, out)
        lpips_fn = None if args.flat_only else lpips if lpips is not None else load_lpips("alex", device=device)
        reports, encoded = {}, {}
        for file, folder in zip(files, outs):
            if len(files) > 1:
                print(f"== {file}")
            reports[file] = evaluate_vqgan(file, folder, args, lpips_fn, baseline, device, progress, encoded)
        if len(files) > 1:
            table = checkpoint_table(reports, args.resolution)
            print(table)
            out.mkdir(parents=True, exist_ok=True)
            (out / "checkpoints.md").write_text(table + "\n")
        return 0

    return run_guarded(body, reuse_memory=True)


def checkpoint_folders(files: list[str], out: Path) -> list[Path]:
    """--out itself for one file; --out/<file name> for each of several, whose names must differ."""
    if len(files) == 1:
        return [out]
    names = [Path(f).stem for f in files]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"--vqgan: several files are named {', '.join(twice)}; each is reported in "
                         "--out/<file name>/, so give files with different names")
    return [out / name for name in names]


def evaluate_vqgan(file: str, out: Path, args, lpips_fn, baseline: dict | None, device, progress: bool,
                   encoded: dict | None = None) -> dict:
    """One VQ-GAN's report (written to out/eval_vqgan.json with its pictures, and printed);
    `encoded` as held_out_holes takes it."""
    vqgan = load_vqgan(file, device=device, dtype=inference_dtype(device))
    flat, flat_decoded = flat_colours(vqgan, device)
    flat_full, flat_full_decoded = flat_colours(vqgan, device, args.resolution)
    out.mkdir(parents=True, exist_ok=True)
    flat_picture = torch.cat([flat_canvases(FLAT_SIZE), flat_decoded, flat_full_decoded])
    report = {"vqgan": file, "token_version": vqgan.token_version, "flat_colours": flat,
              "flat_colours_at_resolution": {"size": args.resolution, "colours": flat_full},
              "worst_flat_colour_error": max(v["mean_colour_error"] for v in [*flat.values(), *flat_full.values()]),
              "grey_axis": grey_axis(vqgan, device, args.resolution),
              "pictures": {"flat_colours": str(save_png(make_grid(flat_picture, nrow=len(FLAT_COLOURS)),
                                                        out / "flat_colours.png"))}}
    if lpips_fn is not None:
        report["holes"], thumbs = held_out_holes(args, vqgan, lpips_fn, device, progress, encoded)
        colours = code_colours(vqgan, device, 64, progress)
        report["code_colours"] = {**colour_report(colours), **hue_spread(colours)}
        report["pictures"] |= {"code_palette": str(save_png(palette(colours), out / "code_palette.png")),
                               "recon_grid": str(save_png(make_grid(torch.stack(thumbs), nrow=4),
                                                          out / "recon_grid.png"))}
    print(summary(report))
    if baseline is not None:
        comparison = compare_vqgan(baseline, report)
        print(format_vqgan_comparison(comparison))
        report["compared_to"] = {"report": str(args.compare_to), **comparison}
    write_json_report(out / REPORT, report)
    return report


def checkpoint_table(reports: dict[str, dict], resolution: int) -> str:
    """A markdown table, one row per report: the figures that pick a decoder checkpoint, as
    differences paired against --compare-to where the reports hold that comparison."""
    paired = all("compared_to" in r and r["compared_to"]["images"] for r in reports.values())
    holes = all("holes" in r for r in reports.values())
    head = ["checkpoint"]
    if holes:
        head += (["hole LPIPS, paired (SE)", "better / worse", "image PSNR", "edge ratio"] if paired
                 else ["hole LPIPS", "image PSNR", "edge ratio"])
    head += [f"worst flat block at {resolution} px", "grey axis worst"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for file, r in reports.items():
        cells = [Path(file).stem]
        if holes and paired:
            f = r["compared_to"]["figures"]
            lp = f["reconstruction_lpips"]
            cells += [f"{lp['new']:.4f} ({lp['difference']:+.4f}, {lp['standard_error'] or 0:.4f})",
                      f"{lp['new_better_on']} / {lp['new_worse_on']}",
                      f"{f['image_psnr']['new']:.2f} dB ({f['image_psnr']['difference']:+.2f})",
                      f"{f['edge_ratio']['new']:.3f} ({f['edge_ratio']['difference']:+.3f})"]
        elif holes:
            h = r["holes"]
            cells += [f"{h['methods']['reconstruction']['lpips']:.4f}", f"{h['image_psnr']:.2f} dB", f"{h['edge_ratio']:.3f}"]
        colours = r["flat_colours_at_resolution"]["colours"]
        worst = max(colours, key=lambda name: colours[name]["worst_block_error"])
        cells += [f"{colours[worst]['worst_block_error']:.0f} ({worst})", f"{r['grey_axis']['worst_error']:.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def summary(report: dict) -> str:
    def flat(colours: dict, key: str) -> str:
        return ", ".join(f"{name} {v[key]:.0f}" for name, v in colours.items() if key in v)
    full = report["flat_colours_at_resolution"]
    lines = [f"token version {report['token_version']}"]
    for title, key in (("the mean colour", "mean_colour_error"), ("the worst token-sized block", "worst_block_error"),
                       ("the border band one token wide", "border_band_error")):
        lines += [f"flat canvases, worst channel error of {title} (0-255):",
                  f"  {FLAT_SIZE} px: {flat(report['flat_colours'], key)}", f"  {full['size']} px: {flat(full['colours'], key)}"]
    g = report["grey_axis"]
    widest = max(g["runs"], key=lambda run: run["greys"][1] - run["greys"][0])
    lines.append(f"grey axis at {g['size']} px (every {g['step']}th level), the centre tile: {g['codes']} codes, worst "
                 f"channel error {g['worst_error']:.0f}, mean {g['mean_error']:.1f}; the widest: code {widest['code']}, "
                 f"greys {widest['greys'][0]}-{widest['greys'][1]} -> ({', '.join(f'{v:.0f}' for v in widest['decoded'])})")
    if "holes" not in report:  # --flat-only
        return "\n".join(lines)
    h, c = report["holes"], report["code_colours"]
    lines += [f"held-out holes ({h['n']} images, {h['hole_tokens']}x{h['hole_tokens']} tokens), LPIPS-Alex / PSNR / luma PSNR:"]
    lines += [f"  {name:<15} {m['lpips']:.4f} / {m['psnr']:.2f} dB / {m['luma_psnr']:.2f} dB"
              for name, m in h["methods"].items()]
    lines.append(f"whole-image PSNR {h['image_psnr']:.2f} dB; edge ratio (reconstruction's RMS luminance "
                 f"gradient over the original's, 1 = as sharp) {h['edge_ratio']:.3f}")
    lines.append(f"codes: {c['red_dominant']} red, {c['green_dominant']} green, {c['blue_dominant']} blue dominant, "
                 f"{c['grey']} grey of {c['n_codes']}; hue sectors used {c['hue_sectors_used']}/{HUE_SECTORS}, "
                 f"hue entropy {c['hue_entropy_bits']} bits")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
