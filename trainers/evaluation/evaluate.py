"""`sundae-eval`: FID, KID, precision / recall and density / coverage against reference images.

What is scored (one of, plus --recon):
  --images DIR               a folder of images (samples written by any tool);
  --prior P [--vqgan V]      N samples drawn here with the given sampler settings (no --vqgan:
                             a pixel prior whose tokens are grey levels, as MNIST);
  --recon --vqgan V          the VQ-GAN's reconstructions of the reference images: the FID floor
                             no prior over its tokens can beat (combine with --prior to get both);
  --random-tokens --vqgan V  N decodes of uniform random tokens: the no-model baseline a prior
                             has to beat (what its sampler starts from).
Sweeps (model mode): `--sweep proportion=0.2,0.4,0.6,0.8` (the paper's Figure 8), `--sweep
steps=10,25,50,100` (Figure 12), `--sweep temperature=0.5,0.7,0.9,1.1` (Figure 13, a constant
tau); each value draws N fresh samples with the same seed, the other settings held fixed.

The reference is a folder of images: its held-out split (the training data loader's split by
name hash, `--val-fraction`), its training split, or all of it. Reference images are first brought
to the canvas the scored images live on (e.g. 256 px art upscaled to the 1024 px canvas an f = 32
model samples), then resized to the network's input like the scored images: the resampling path
alone moved FID by about 1.4 in a test here. Reference features are cached in
`--cache-dir` under a key hashing the files' bytes, the split, the feature network and the
preprocessing, so a changed folder never reuses stale statistics. Every result states both N:
FID is biased at small N (compare FIDs only at equal N), KID is not.

Outputs in --out: eval.json (every number, settings and N), and for sweeps sweep.csv plus
fig8_proportion.png / fig12_steps.png / fig13_temperature.png.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from sundae_core.checkpoint import atomic_write
from sundae_core.cli import doc_summary, run_guarded, write_json_report
from sundae_core.errors import InputError
from sundae_core.grid import to_uint8
from sundae_core.models import EMBEDDED, check_models_fit, inference_dtype, load_prior, load_vqgan, model_path
from sundae_core.sampler import (SamplerSettingError, SamplerSettings, model_logits_fn, random_labels, random_tokens,
                                 sample)

from ..data.image_data import HELD_OUT_FRACTION, image_paths, is_validation, load_rgb
from ..data.latent_data import grey_level_images
from ..sampling.sampler_flags import add_sampler_flags, settings_from_args
from .inception import PREPROCESS_VERSION, FeatureExtractor, InceptionFeatures, extract_features
from .line_plot import Panel, draw_panels
from .metrics import Metrics, all_metrics, feature_stats

SWEEPS = {
    "proportion": ("fig8_proportion.png", "Figure 8: sample quality against the sample proportion p"),
    "steps": ("fig12_steps.png", "Figure 12: sample quality against the number of sampling steps T"),
    "temperature": ("fig13_temperature.png", "Figure 13: sample quality against the temperature tau"),
}
PANELS = (("fid", "FID (lower is better)"), ("kid", "KID (lower is better)"),
          ("density", "density (higher is better)"), ("coverage", "coverage (higher is better)"))
CSV_FIELDS = ("sweep", "value", "steps", "temperature_start", "temperature_end", "proportion", "n_fake",
              "n_real", "fid", "kid", "kid_std", "precision", "recall", "density", "coverage",
              "mean_steps_used", "seconds")


def swept(settings: SamplerSettings, name: str, value: float) -> SamplerSettings:
    """`settings` with one swept value: steps T, a constant temperature tau, or proportion p."""
    if name == "steps":
        return settings.replace(steps=int(value))
    if name == "temperature":
        return settings.replace(temperature=float(value))
    return settings.replace(proportion=float(value))


def sample_points(base: SamplerSettings, sweeps: list[tuple[str, list[float]]]
                  ) -> list[tuple[str | None, float | None, SamplerSettings]]:
    """(sweep name, value, settings) of every sampling run: the base alone without sweeps. Every
    point is validated here, before any model is loaded or feature extracted."""
    if not sweeps:
        return [(None, None, base)]
    points = []
    for name, values in sweeps:
        for value in values:
            try:
                points.append((name, value, swept(base, name, value)))
            except SamplerSettingError as err:
                raise InputError(f"--sweep {name}={value:g}: {err}") from None
    return points


# ---------------------------------------------------------------------------------------------
# Reference images and the feature cache


def reference_files(root: str | Path, split: str, val_fraction: float, limit: int = 0) -> list[Path]:
    """The reference images: the held-out split (as the trainers split by name hash), the
    training split, or all; optionally only the first `limit` (sorted by path)."""
    files = image_paths(root)
    if split != "all":
        files = [f for f in files if is_validation(f, val_fraction) == (split == "val")]
    if limit:
        files = files[:limit]
    if not files:
        raise InputError(f"the {split} split of {root} is empty (val_fraction={val_fraction}); "
                         "use --ref-split all or a larger --val-fraction")
    return files


def content_key(parts: list[str], files: list[Path], root: Path | None = None) -> str:
    """sha256 over the settings strings and every file's relative name and bytes."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() + b"\0")
    for f in files:
        name = str(f.relative_to(root)) if root is not None else f.name
        h.update(name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def decoder_dtype(vqgan) -> str:
    """The dtype a VQ-GAN decodes in (a cache key part: bf16 or float32 by the machine)."""
    return str(next(vqgan.decoder.parameters()).dtype)


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sundae" / "eval"


def cached_features(cache_dir: Path, prefix: str, key: str, compute) -> tuple[np.ndarray, Path, bool]:
    """Features stored as `<prefix>-<key>.npz`; computed and written atomically on a miss."""
    path = Path(cache_dir) / f"{prefix}-{key[:24]}.npz"
    if path.is_file():
        with np.load(path) as data:
            if str(data["key"]) == key:
                return data["features"], path, True
    features = compute()

    def write(tmp: str) -> None:
        buf = io.BytesIO()
        np.savez(buf, features=features, key=np.array(key))
        Path(tmp).write_bytes(buf.getvalue())

    atomic_write(path, write)
    return features, path, False


# ---------------------------------------------------------------------------------------------
# Image sources: every one yields uint8 RGB (h w 3)


def folder_images(files: list[Path], size: int) -> Iterator[np.ndarray]:
    for f in files:
        yield load_rgb(f, size)


class SampleSource:
    """Draws samples from a prior (+ VQ-GAN decoder) in batches; remembers time and steps used."""

    def __init__(self, prior, vqgan, grid: tuple[int, int], batch_size: int, device: torch.device,
                 save_dir: Path | None = None, progress: bool = True, compile: bool = False):
        self.prior, self.vqgan, self.grid = prior, vqgan, grid
        self.logits_fn = model_logits_fn(prior, compile=compile)
        self.decode = None if vqgan is None else vqgan.decode  # eager: faster than compiled (compiled.py)
        self.batch_size, self.device, self.save_dir, self.progress = batch_size, device, save_dir, progress
        self.seconds = 0.0
        self.steps_used: list[int] = []

    def images(self, n: int, settings: SamplerSettings, seed: int, tag: str,
               label: int | None = None) -> Iterator[np.ndarray]:
        """n samples drawn with `settings`; a class-conditional prior gets `label` for every
        sample, or uniform random labels when it is None."""
        c = self.prior.config
        g = torch.Generator(self.device).manual_seed(seed)
        self.seconds, self.steps_used = 0.0, []
        done = 0
        with tqdm(total=n, desc=f"sampling {tag}", unit="img", disable=not self.progress) as bar:
            while done < n:
                b = min(self.batch_size, n - done)
                start = time.perf_counter()
                labels = None
                if c.num_classes:
                    labels = (torch.full((b,), label, device=self.device) if label is not None
                              else random_labels(b, c.num_classes, generator=g, device=self.device))
                z = random_tokens(b, *self.grid, c.vocab_size, generator=g, device=self.device)
                with torch.inference_mode():
                    out = sample(self.logits_fn, z, settings, generator=g, labels=labels,
                                 null_label=self.prior.null_label)
                    pixels = (grey_level_images(out.tokens, c.vocab_size) if self.vqgan is None
                              else self.decode(out.tokens))
                arr = to_uint8(pixels)
                self.seconds += time.perf_counter() - start
                self.steps_used += out.steps_used.tolist()
                for i, image in enumerate(arr):
                    if self.save_dir is not None:
                        folder = self.save_dir / tag
                        folder.mkdir(parents=True, exist_ok=True)
                        Image.fromarray(image).save(folder / f"{done + i:05d}.png")
                    yield image
                done += b
                bar.update(b)


def random_token_decodes(vqgan, grid: tuple[int, int], n: int, batch_size: int, seed: int,
                         device: torch.device) -> Iterator[np.ndarray]:
    """n decodes of uniform random token grids, drawn from `seed`."""
    g = torch.Generator(device).manual_seed(seed)
    for start in range(0, n, batch_size):
        z = random_tokens(min(batch_size, n - start), *grid, vqgan.vocab_size, generator=g, device=device)
        with torch.inference_mode():
            yield from to_uint8(vqgan.decode(z))


def reconstructions(vqgan, files: list[Path], resolution: int, batch_size: int,
                    device: torch.device) -> Iterator[np.ndarray]:
    """The VQ-GAN round trip (encode, quantize, decode) of each reference image at `resolution`."""
    for start in range(0, len(files), batch_size):
        batch = np.stack([load_rgb(f, resolution) for f in files[start:start + batch_size]])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
        with torch.inference_mode():
            y = vqgan.decode(vqgan.encode(x))
        yield from to_uint8(y)


# ---------------------------------------------------------------------------------------------
# Scoring and reporting


@dataclass
class Context:
    args: argparse.Namespace
    extractor: FeatureExtractor
    ref_features: np.ndarray
    ref_stats: object
    progress: bool

    def features(self, images, total: int, desc: str, progress: bool | None = None) -> np.ndarray:
        return extract_features(self.extractor, images, total=total, batch_size=self.args.feature_batch,
                                desc=desc, progress=self.progress if progress is None else progress)

    def score(self, fake: np.ndarray) -> Metrics:
        k = self.args.k
        if fake.shape[0] <= k or self.ref_features.shape[0] <= k:
            raise InputError(f"the k-NN metrics (k={k}) need more than {k} images on each side; got "
                             f"{fake.shape[0]} scored and {self.ref_features.shape[0]} reference images "
                             "(use more images or a smaller --k)")
        return all_metrics(self.ref_features, fake, k=k, kid_subsets=self.args.kid_subsets,
                           kid_subset_size=self.args.kid_subset_size, seed=self.args.seed,
                           real_stats=self.ref_stats)


def _row(what: str, metrics: Metrics, **extra) -> dict:
    return {"what": what, **extra, **metrics.to_dict()}


def summary_line(row: dict) -> str:
    label = row["what"] if "sweep" not in row else f"{row['sweep']}={row['value']}"
    return (f"{label:<22} N={row['n_fake']:<5} vs ref N={row['n_real']:<5} FID {row['fid']:8.3f}  "
            f"KID {row['kid']:.4f} (subset spread {row['kid_std']:.4f})  P {row['precision']:.3f} R {row['recall']:.3f}  "
            f"D {row['density']:.3f} C {row['coverage']:.3f}")


def write_sweep_outputs(out: Path, rows: list[dict], settings: SamplerSettings) -> list[Path]:
    written = [out / "sweep.csv"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    atomic_write(written[0], lambda tmp: Path(tmp).write_text(buf.getvalue()))
    for name, (filename, title) in SWEEPS.items():
        mine = [r for r in rows if r["sweep"] == name]
        if not mine:
            continue
        s = settings.to_dict()
        fixed = {"steps": f"T={s['steps']}",
                 "temperature": f"tau={s['temperature_start']:g}->{s['temperature_end']:g}",
                 "proportion": f"p={s['proportion']:g}"}
        fixed.pop(name)
        n = mine[0]["n_fake"]
        panels = [Panel(label, [r["value"] for r in mine], [r[key] for r in mine], xlabel=name,
                        # the spread over KID's subsets, not a standard error across seeds (session 34)
                        yerr=[r["kid_std"] for r in mine] if key == "kid" else None)
                  for key, label in PANELS]
        image = draw_panels(panels, f"{title}  ({', '.join(fixed.values())}, N={n})")
        path = out / filename
        atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
        written.append(path)
    return written


def parse_sweep(spec: str) -> tuple[str, list[float]]:
    name, _, values = spec.partition("=")
    name = name.strip()
    if name not in SWEEPS or not values:
        raise InputError(f"--sweep {spec!r}: write NAME=V1,V2,... with NAME one of {', '.join(SWEEPS)}")
    try:
        parsed = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--sweep {spec!r}: values must be numbers separated by commas") from None
    if name == "steps" and not all(v.is_integer() for v in parsed):  # the range: sample_points
        raise InputError(f"--sweep {spec!r}: steps must be whole numbers")
    return name, parsed


def label_arg(text: str) -> int | str:
    """--label: a class id, a class name (checked against the prior once it is loaded), or 'null'
    for the null class (no class)."""
    try:
        return int(text)
    except ValueError:
        return text


def parse_grid(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--grid {text!r}: write HxW, e.g. 32x32") from None
    if h < 1 or w < 1:
        raise InputError(f"--grid {text!r}: both sides must be >= 1")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sundae-eval", description=doc_summary(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    src = p.add_argument_group("what to score")
    src.add_argument("--images", help="folder of images to score (png, jpg, webp, ..., searched recursively)")
    src.add_argument("--prior", help="prior checkpoint (.safetensors) to sample from; 'default' = the "
                     "embedded prior (with the embedded VQ-GAN unless --vqgan names another)")
    src.add_argument("--vqgan", help="VQ-GAN checkpoint that decodes the prior's tokens (and for --recon); "
                     "'default' = the embedded VQ-GAN")
    src.add_argument("--recon", action="store_true",
                     help="also score the VQ-GAN's reconstructions of the reference images (the FID floor)")
    src.add_argument("--random-tokens", action="store_true",
                     help="also score --n decodes of uniform random tokens through --vqgan (the no-model baseline)")
    ref = p.add_argument_group("reference")
    ref.add_argument("--ref", required=True, help="folder of reference images (e.g. the training image folder)")
    ref.add_argument("--ref-split", choices=("val", "train", "all"), default="val",
                     help="which images of --ref: the held-out split the trainers leave out (default), "
                          "the training split, or all")
    ref.add_argument("--val-fraction", type=float, default=HELD_OUT_FRACTION,
                     help="held-out fraction used when the models were trained (data.val_fraction; "
                          f"default {HELD_OUT_FRACTION})")
    ref.add_argument("--ref-limit", type=int, default=0, help="use only the first N reference images (0 = all)")
    ref.add_argument("--ref-resolution", type=int,
                     help="square canvas reference images are brought to before the Inception resize (default: "
                          "the size of what is scored: samples, reconstructions, or a square --images folder)")
    ref.add_argument("--cache-dir", help=f"where reference features are cached (default {default_cache_dir()})")
    smp = p.add_argument_group("sampling (with --prior)")
    smp.add_argument("--n", type=int, default=1000, help="number of samples per setting (default 1000)")
    smp.add_argument("--batch-size", type=int, default=16, help="samples drawn (and images reconstructed) at once")
    add_sampler_flags(smp)
    smp.add_argument("--label", type=label_arg,
                     help="class for every sample, by index or name (e.g. flags), or 'null': the null class, "
                          "i.e. no class, as workflows/unconditional_sampling.json samples a class-conditional "
                          "prior (default: uniform random labels)")
    smp.add_argument("--grid", help="token grid HxW (default: the VQ-GAN's resolution / its factor)")
    smp.add_argument("--resolution", type=int,
                     help="image side for --recon and for the default grid (default: the VQ-GAN config's)")
    smp.add_argument("--seed", type=int, default=0, help="seed of the samples and of the KID subsets")
    smp.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2,...",
                     help="sweep one setting (proportion, steps or temperature); repeatable")
    smp.add_argument("--save-samples", action="store_true", help="also write every sample as PNG under OUT/samples/")
    met = p.add_argument_group("metrics and output")
    met.add_argument("--k", type=int, default=5, help="neighbours for precision/recall/density/coverage (default 5)")
    met.add_argument("--kid-subsets", type=int, default=100, help="random subsets KID averages over (default 100)")
    met.add_argument("--kid-subset-size", type=int, default=1000, help="KID subset size, capped at both N (default 1000)")
    met.add_argument("--feature-batch", type=int, default=32, help="images per Inception batch (default 32)")
    met.add_argument("--device", default="cpu", help="torch device for the models and Inception (default cpu)")
    met.add_argument("--out", default="runs/eval", help="output folder for eval.json, sweep.csv and plots")
    met.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def _resolve_defaults(args: argparse.Namespace) -> None:
    """'default' names the embedded model; the embedded prior comes with its VQ-GAN."""
    if args.prior == EMBEDDED and not args.vqgan:
        args.vqgan = EMBEDDED
    for kind in ("prior", "vqgan"):
        if getattr(args, kind) == EMBEDDED:
            setattr(args, kind, str(model_path(EMBEDDED, kind)))


def _check_args(args: argparse.Namespace) -> None:
    if sum(bool(x) for x in (args.images, args.prior)) > 1:
        raise InputError("score either --images or --prior, not both")
    if not (args.images or args.prior or args.recon or args.random_tokens):
        raise InputError("nothing to score: give --images DIR, --prior (with --vqgan), --recon --vqgan "
                         "or --random-tokens --vqgan")
    if args.recon and not args.vqgan:
        raise InputError("--recon needs --vqgan: the reconstructions are that model's")
    if args.random_tokens and not args.vqgan:
        raise InputError("--random-tokens needs --vqgan: it decodes the random tokens")
    if args.sweep and not args.prior:
        raise InputError("--sweep draws samples, so it needs --prior")
    if args.n < 1 or args.batch_size < 1 or args.feature_batch < 1 or args.k < 1 or args.kid_subsets < 1:
        raise InputError("--n, --batch-size, --feature-batch, --k and --kid-subsets must be >= 1")


def main(argv: list[str] | None = None, extractor: FeatureExtractor | None = None) -> int:
    """Entry point; `extractor` replaces the Inception network (tests inject a tiny one)."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        sweeps = [parse_sweep(s) for s in args.sweep]
        _resolve_defaults(args)
        _check_args(args)
        # every sampler setting of every sweep point is checked before any work
        base = settings_from_args(args) if args.prior else None
        points = sample_points(base, sweeps) if base is not None else []
        device = torch.device(args.device)
        progress = not args.no_progress
        out = Path(args.out)
        ext = extractor if extractor is not None else InceptionFeatures(device)
        cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()

        vqgan = load_vqgan(args.vqgan, device=device, dtype=inference_dtype(device)) if args.vqgan else None
        resolution = args.resolution or (vqgan.config.resolution if vqgan is not None else None)
        prior, grid = _load_prior(args, vqgan, resolution, device) if args.prior else (None, None)
        if grid is None and args.random_tokens:
            grid = _vqgan_grid(args, vqgan, resolution)
        image_files = image_paths(args.images) if args.images else []
        canvas = args.ref_resolution or _canvas(vqgan, resolution, grid, image_files, ext.input_size)

        # Reference features, cached by content: the reference images are brought to the canvas
        # the scored images live on, then resized like them (the resampling path moves FID).
        root = Path(args.ref)
        files = reference_files(root, args.ref_split, args.val_fraction, args.ref_limit)
        key_parts = [ext.name, str(ext.input_size), PREPROCESS_VERSION, args.ref_split, str(args.val_fraction),
                     f"canvas={canvas}"]
        ref_key = content_key(key_parts, files, root)
        ref_features, ref_cache, hit = cached_features(
            cache_dir, "ref", ref_key,
            lambda: extract_features(ext, folder_images(files, canvas), total=len(files),
                                     batch_size=args.feature_batch, desc="reference features", progress=progress))
        print(f"reference: {len(files)} images ({args.ref_split} split of {root}) at {canvas} px; features "
              f"{'from cache' if hit else 'cached'} at {ref_cache}")
        ctx = Context(args, ext, ref_features, feature_stats(ref_features), progress)
        report = {"reference": {"path": str(root), "split": args.ref_split, "val_fraction": args.val_fraction,
                                "n": len(files), "canvas": canvas, "key": ref_key, "cache": str(ref_cache)},
                  "extractor": ext.name, "preprocess": PREPROCESS_VERSION, "results": []}
        rows = report["results"]

        if args.recon:
            # the decode's dtype and device too: the inference dtype is bf16 or float32 by the machine
            recon_key = content_key(key_parts + [file_digest(args.vqgan), str(resolution), decoder_dtype(vqgan),
                                                 str(device)], files, root)
            start = time.perf_counter()
            feats, _, _ = cached_features(
                cache_dir, "recon", recon_key,
                lambda: ctx.features(reconstructions(vqgan, files, resolution, args.batch_size, device),
                                     len(files), "reconstruction features"))
            rows.append(_row("reconstruction", ctx.score(feats), vqgan=str(args.vqgan), resolution=resolution,
                             seconds=round(time.perf_counter() - start, 2)))
            print(summary_line(rows[-1]))

        if args.random_tokens:
            start = time.perf_counter()
            feats = ctx.features(random_token_decodes(vqgan, grid, args.n, args.batch_size, args.seed, device),
                                 args.n, "random-token features")
            rows.append(_row("random_tokens", ctx.score(feats), vqgan=str(args.vqgan), grid=list(grid),
                             seconds=round(time.perf_counter() - start, 2)))
            print(summary_line(rows[-1]))

        if image_files:
            start = time.perf_counter()
            feats = ctx.features(folder_images(image_files, ext.input_size), len(image_files), "image features")
            rows.append(_row("images", ctx.score(feats), images=str(args.images),
                             seconds=round(time.perf_counter() - start, 2)))
            print(summary_line(rows[-1]))

        if prior is not None:
            source = SampleSource(prior, vqgan, grid, args.batch_size, device,
                                  out / "samples" if args.save_samples else None, progress, compile=args.compile)
            rows.extend(_score_samples(ctx, source, args, points))
            if sweeps:
                for path in write_sweep_outputs(out, [r for r in rows if "sweep" in r], base):
                    print(f"wrote {path}")

        write_json_report(out / "eval.json", report)
        return 0

    return run_guarded(body, reuse_memory=True)


def _canvas(vqgan, resolution, grid, image_files: list[Path], fallback: int) -> int:
    """Side of the square canvas the scored images live on: the samples' size, the VQ-GAN's
    resolution for reconstructions, a scored folder's (square) image size; else the network's."""
    if grid is not None:
        return max(grid) * (vqgan.factor if vqgan is not None else 1)
    if resolution:
        return resolution
    if image_files:
        with Image.open(image_files[0]) as im:
            w, h = im.size
        return w if w == h else fallback
    return fallback


def _load_prior(args, vqgan, resolution, device) -> tuple[torch.nn.Module, tuple[int, int]]:
    prior = load_prior(args.prior, device=device, dtype=inference_dtype(device))
    c = prior.config
    if vqgan is None:
        if c.vocab_size != 256:
            raise InputError(f"{args.prior} has {c.vocab_size} tokens: give the --vqgan that decodes them "
                             "(without --vqgan the tokens are read as 256 grey levels)")
        if not args.grid:
            raise InputError("a pixel prior needs --grid HxW (e.g. 28x28 for MNIST)")
    else:
        check_models_fit(vqgan, prior, f"--prior {args.prior}: ")
    if args.label == "null" and not c.num_classes:
        raise InputError("--label null: this prior has no classes, so every sample is unconditional already")
    if isinstance(args.label, str) and args.label != "null":
        args.label = c.class_id(args.label, "--label")  # a name: sampled and reported as its index
    if args.label not in (None, "null") and not (c.num_classes and 0 <= args.label < c.num_classes):
        raise InputError(f"--label {args.label}: this prior has {c.num_classes or 'no'} classes")
    return prior, _vqgan_grid(args, vqgan, resolution)


def _vqgan_grid(args, vqgan, resolution) -> tuple[int, int]:
    """--grid, else the VQ-GAN's token grid at `resolution`."""
    if args.grid:
        return parse_grid(args.grid)
    if resolution % vqgan.factor:
        raise InputError(f"--resolution {resolution} is not a multiple of the VQ-GAN factor {vqgan.factor}")
    return (resolution // vqgan.factor,) * 2


def _score_samples(ctx: Context, source: SampleSource, args, points) -> list[dict]:
    rows = []
    for sweep, value, settings in points:
        tag = "samples" if sweep is None else f"{sweep}={value:g}"
        # the sampling bar shows progress; features are extracted as the samples arrive
        label = source.prior.null_label if args.label == "null" else args.label
        feats = ctx.features(source.images(args.n, settings, args.seed, tag, label), args.n,
                             f"{tag} features", progress=False)
        extra = {"prior": str(args.prior), "grid": list(source.grid), **settings.to_dict(),
                 "compile": args.compile, "label": args.label, "seed": args.seed,
                 "mean_steps_used": round(float(np.mean(source.steps_used)), 2),
                 "seconds": round(source.seconds, 2), "seconds_per_sample": round(source.seconds / args.n, 4)}
        if sweep is not None:
            extra = {"sweep": sweep, "value": value, **extra}
        rows.append(_row("samples", ctx.score(feats), **extra))
        print(summary_line(rows[-1]))
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
