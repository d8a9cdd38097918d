"""`sundae-compare-priors`: samples of several priors on the same seeds, one row each, to look at.

    sundae-compare-priors sundae_core/default_models/prior.safetensors runs/ft/model.safetensors \\
        --n 8 --out runs/compare

A candidate prior is judged by its pictures beside its figures: sessions 15-16 found CPU fine-tunes
whose held-out loss fell while their samples went from faces to blank canvases, which a row of
samples beside the shipped prior's shows at a glance. Every prior gets the same starting tokens and
the same classes (drawn uniformly at random, as `workflows/unconditional_sampling.json` does, or
one --label, or `null` for none), with the shipped workflows' sampler unless the sampler flags say
otherwise. Beside the picture, per prior: the mean number of different tokens in a sample and the
share of background tokens (the token of a blank white canvas), the two numbers the prior trainer
logs at every validation to catch a collapse.

Outputs in --out: compare.png (one row per prior, in the order given) and compare.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from sundae_core.cli import doc_summary, run_guarded, write_json_report
from sundae_core.errors import InputError
from sundae_core.grid import save_png, thumbnails, to_uint8
from sundae_core.models import check_models_fit, inference_dtype, load_prior, load_vqgan, model_path
from sundae_core.sampler import model_logits_fn, random_labels, random_tokens, sample

from ..sampling.sampler_flags import WORKFLOW_SAMPLER, add_sampler_flags, settings_from_args
from ..training.train_prior import background_token, spread_of
from .evaluate import label_arg

LABEL_WIDTH = 220  # px of the strip left of each row that names its prior


def background_of(vqgan) -> int:
    """The token a blank white canvas encodes to (its most common one)."""
    side = vqgan.config.resolution
    white = torch.ones(1, 3, side, side, device=next(vqgan.parameters()).device)
    with torch.inference_mode():
        return background_token(vqgan.encode(white))


def draw_row(images: torch.Tensor, thumb: int, name: str) -> np.ndarray:
    """(b 3 H W) in [-1, 1] -> one uint8 row of thumbnails with `name` written on its left."""
    row = np.concatenate(list(to_uint8(thumbnails(images, thumb))), axis=1)
    strip = Image.new("RGB", (LABEL_WIDTH, thumb), "white")
    ImageDraw.Draw(strip).text((6, thumb // 2 - 6), name[-34:], fill=(0, 0, 0))
    return np.concatenate([np.asarray(strip), row], axis=1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sundae-compare-priors", description=doc_summary(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("priors", nargs="+", help="prior checkpoints (.safetensors), one row each")
    p.add_argument("--vqgan", help="VQ-GAN that decodes them (absent or 'default': the embedded one)")
    p.add_argument("--n", type=int, default=8, help="samples per prior (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting tokens, the classes and the sampler")
    p.add_argument("--label", type=label_arg,
                   help="one class for every sample, by index or name (e.g. flags), or 'null' for none "
                        "(default: a random class per sample)")
    add_sampler_flags(p.add_argument_group("sampling"), defaults=WORKFLOW_SAMPLER)
    p.add_argument("--thumb", type=int, default=160, help="side of each thumbnail in px (default 160)")
    p.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _class_by_name(priors: list, name: str) -> int:
    """The index of class `name` in the priors that name their classes; refused when none has it or
    when they number it differently (their rows would not draw the same class)."""
    named = [prior.config for prior in priors if prior.config.class_names] or [priors[0].config]
    ids = {config.class_id(name, "--label") for config in named}
    if len(ids) > 1:
        raise InputError(f"--label {name}: the priors number this class differently ({sorted(ids)}), so their "
                         "rows would not draw the same class; give --label an index")
    return ids.pop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.n < 1 or args.thumb < 8:
            raise InputError("--n must be >= 1 and --thumb >= 8")
        settings = settings_from_args(args)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = inference_dtype(device)
        vqgan = load_vqgan(model_path(args.vqgan, "vqgan"), device, dtype)
        priors = [load_prior(path, device, dtype) for path in args.priors]
        for path, prior in zip(args.priors, priors):
            check_models_fit(vqgan, prior, f"{path}: ")
        classes = {prior.config.num_classes for prior in priors}
        if len(classes) > 1:
            raise InputError(f"the priors have different numbers of classes ({sorted(classes)}), so they cannot "
                             "draw the same classes; compare priors of one kind")
        num_classes = classes.pop()
        if isinstance(args.label, str) and args.label != "null":
            args.label = _class_by_name(priors, args.label)
        if args.label not in (None, "null") and not 0 <= args.label < num_classes:
            raise InputError(f"--label {args.label}: these priors have {num_classes or 'no'} classes")
        grid = (vqgan.config.resolution // vqgan.factor,) * 2
        background = background_of(vqgan)
        labels = None
        if num_classes and args.label is None:
            labels = random_labels(args.n, num_classes, generator=torch.Generator(device).manual_seed(args.seed + 1),
                                   device=device)
        elif num_classes and args.label != "null":
            labels = torch.full((args.n,), args.label, device=device)
        rows, report = [], {"settings": settings.to_dict(), "seed": args.seed, "n": args.n, "background": background,
                            "labels": None if labels is None else labels.tolist(), "priors": []}
        for path, prior in tqdm(list(zip(args.priors, priors)), desc="priors", disable=args.no_progress):
            g = torch.Generator(device).manual_seed(args.seed)
            z = random_tokens(args.n, *grid, prior.config.vocab_size, generator=g, device=device)
            with torch.inference_mode():
                tokens = sample(model_logits_fn(prior, compile=args.compile), z, settings, generator=g, labels=labels,
                                null_label=prior.null_label).tokens
                images = torch.cat([vqgan.decode(tokens[i:i + 1]) for i in range(args.n)])
            rows.append(draw_row(images, args.thumb, Path(path).name))
            spread = spread_of(tokens, prior.config.vocab_size, background)
            report["priors"].append({"path": str(path), **{k: round(v, 4) for k, v in spread.items()}})
            print(f"{path}: {spread['distinct']:.1f} different tokens a sample, background share "
                  f"{spread['background']:.3f}")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        save_png(Image.fromarray(np.concatenate(rows, axis=0)), out / "compare.png")
        write_json_report(out / "compare.json", report)
        print(f"wrote {out / 'compare.png'} (rows in the order given) and {out / 'compare.json'}")
        return 0

    return run_guarded(body)
