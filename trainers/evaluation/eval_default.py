"""`sundae-eval-default`: inpainting against baselines, token completion, class accuracy, code colours.

The checks a VQ-GAN + prior pair (the embedded defaults unless given) should pass before it ships.

1. Inpainting against baselines, on held-out images (`image_data.is_validation`): each image gets
   one square hole of --hole x --hole tokens placed ON THE SUBJECT (the windows whose share of
   non-white pixels is within --slack of the best, one of them drawn with the seed; one token of
   margin from the border when the grid allows). Inside the hole, against the original pixels:
   - reconstruction: the VQ-GAN decode of the image's own tokens (what a perfect prior would give);
   - inpaint: the shipped path, the primitives `workflows/inpaint_1024.json` wires (encode, latent
     mask, corrupt inside the mask, `sampler.sample`, decode), with the corrupt rate, sampler
     settings and composite feather read from that workflow's nodes, so the number measures what
     ships; a workflow of several passes (the shipped one refines: its first composite encoded
     whole, the hole sampled again) runs each in turn (--refine N / --refine-rate override them),
     each with the prior adapter its sampler's prior passes through (the shipped one adapts the
     first pass; --adapter none measures without, --adapter FILE puts another file in its place);
   - mean_fill: no model, the hole filled with the mean colour of a ring of --ring pixels around it.
   Every method's output is pasted into the original with the workflow's composite (same feather),
   so the methods differ only in what fills the hole; the workflow's seam matching (its seam_band)
   applies to the reconstruction and the inpainting, not to mean_fill, which stays the flat mean
   colour the aim names (seam matching would turn it into a smooth fill from the ring). Reported:
   mean hole LPIPS-Alex and PSNR per method, the share of images where inpaint beats mean_fill on
   hole LPIPS, inpaint - reconstruction in hole LPIPS, and a picture grid (original with the hole
   outlined, inpaint, mean_fill, reconstruction) of the first --grid-images images. --split train runs 1 and 2 on training images
   instead: beside the held-out report, the gap says how much of the prior's skill is memory.
   --also-vqgan decodes the same tokens (the image's own and the inpainted ones) through a second
   decoder of the same token version and pairs its hole figures with the first's, image by image:
   a decoder candidate judged on the workflow's holes without sampling them again.
2. Token completion: the prior's one-step top-1 accuracy on the hole's true tokens when they are
   replaced by random tokens (the rest clean), next to the accuracy for as many corrupted tokens
   scattered at random over the grid. Taken in float32 (the prior's weights read as fp32): in bf16
   the argmax of near-tied logits flips with the thread count and moved the figure by ~0.015.
   Averaged over --completion-draws random fillings drawn from a generator of its own (--seed + 1),
   so it is a figure of the prior alone, whatever the workflow's sampler settings. Beside both, the
   no-model baseline: each position copies the nearest token left as it was (`nearest_known`).
3. --classes (class-conditional priors): a linear probe (`linear_probe.py`) on Inception pool
   features of the real training images, labelled by their subfolder (sorted names = class ids, as
   `sundae-build-latents --labels-from-folders`); its accuracy on the held-out images; then the
   share of --per-class guided samples of each class the probe labels as that class, and that
   share's ratio to the real held-out accuracy. The samples are drawn with
   `workflows/class_conditional_sampling.json`'s sampler (16 steps keeping 80 %, guidance 2)
   unless the sampler flags say otherwise. Beside it, the probe's accuracy on the held-out
   images through the VQ-GAN (encoded and decoded): the ceiling any prior over these tokens can
   reach, and the samples' ratio to that. Per group, the same three figures. --probe-domain
   reconstructed trains the probe on the training emoji through the VQ-GAN instead, the domain the
   samples are drawn in (the campaign's aim is the default, real). Features are cached in
   --cache-dir under a key hashing the files, their split and the canvas (and the VQ-GAN file, for
   the reconstructions).
4. --code-colours: every code decoded as a 2 x 2 grid of itself and averaged: how many codes are
   red / green / blue dominant (the channel beats both others by 0.05), and a palette of the codes'
   mean colours sorted by hue (a VQ-GAN that decodes every colour as brown fails this at a glance).

Outputs in --out: eval_default.json (every number and setting), inpaint_grid.png, and with the
flags class_samples.png (one row per class) and code_palette.png. Same seed and batch size, same
numbers. --compare-to an earlier report prints the two paired image by image (paired.py): decide
between checkpoints on those differences and their standard errors, not on the means alone.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sundae_core.adapters import AdapterBaseError, apply_adapter, load_adapter
from sundae_core.cli import doc_summary, run_guarded, write_json_report
from sundae_core.corruption import corrupt
from sundae_core.errors import InputError
from sundae_core.graph import default_registry
from sundae_core.grid import make_grid, save_png, to_uint8
from sundae_core.images import hide_masked
from sundae_core.masks import latent_mask
from sundae_core.models import check_models_fit, inference_dtype, load_prior, load_vqgan, model_path
from sundae_core.sampler import SampleResult, model_logits_fn, sample
from sundae_core.shifted_views import ShiftedViews

from ..data.build_latents import _folder_labels, folder_classes
from ..data.image_data import HELD_OUT_FRACTION, image_paths, is_validation
from ..sampling.sampler_flags import CLASS_WORKFLOW_SAMPLER, add_sampler_flags, settings_from_args
from ..training.lpips import load_lpips
from ..training.train_vqgan import psnr
from .code_colours import code_colours, colour_report, palette
from .evaluate import (SampleSource, cached_features, content_key, decoder_dtype, default_cache_dir, file_digest,
                       folder_images)
from .inpaint_setup import (WORKFLOW, InpaintPass, InpaintSettings, hole_crops, hole_masks, image_batches, image_subset,
                            paste, place_hole, scattered_positions, thumbnail, to_model, workflow_settings)
from .inception import PREPROCESS_VERSION, FeatureExtractor, InceptionFeatures, extract_features
from .linear_probe import fit_linear_probe
from .paired import compare_reports, format_comparison, format_figures, load_report, paired_figures
from .token_completion import completion_accuracy, nearest_known_accuracy

REPORT = "eval_default.json"
METHODS = ("reconstruction", "inpaint", "mean_fill")
GRID_COLUMNS = ("original (hole outlined)", "inpaint", "mean_fill", "reconstruction")
COMPLETION_SEED_OFFSET = 1  # the token-completion figure's generator: --seed + this
REFINE_SEED_OFFSET = 100  # the k-th refining pass's generator: --seed + this + k
WORKFLOW_ADAPTER, NO_ADAPTER = "workflow", "none"  # --adapter's two words; anything else is a file
HIDE_FILL = {"hidden": "mean", "smooth": "smooth"}  # --context -> images.hide_masked's fill
# --also-vqgan's figures, paired with the first decoder's: name -> lower is better
ALSO_PAIRED = {"reconstruction_lpips": True, "reconstruction_psnr": False, "inpaint_lpips": True, "inpaint_psnr": False}


# ---------------------------------------------------------------------------------------------
# 1 + 2: inpainting and token completion


@dataclass
class InpaintingResult:
    report: dict  # {"inpainting": ..., "token_completion": ...}
    thumbs: list[torch.Tensor]  # (3 t t) pictures for the grid, GRID_COLUMNS per image


def inpainting(args, vqgan, prior, scorer, lpips, settings: InpaintSettings, device, progress: bool,
               also=None) -> InpaintingResult:
    """prior samples (the shipped path, in the inference dtype); scorer, the same prior in float32,
    takes the one-step token completion; `also`, a second VQ-GAN of the same token version, decodes
    the same tokens beside the first (--also-vqgan)."""
    f, vocab = vqgan.factor, vqgan.vocab_size
    files = image_subset(args.images, args.n, args.val_fraction, args.split)
    passes = eval_passes(settings, args.refine, args.refine_rate, args.adapter)
    models = pass_models(passes, prior, scorer)
    logits_fns = [model_logits_fn(m.sampler, compile=args.compile) for m in models]
    # the one-step figures read the first pass's prior: the one that meets the hidden hole
    score_fn = model_logits_fn(models[0].scorer)
    # with the workflow's shifted views, the completion the sampler sees, beside the prior's own
    views_fn = ShiftedViews(score_fn, settings.sampler.views) if settings.sampler.views > 1 else None
    place_gen = torch.Generator().manual_seed(args.seed)
    g = torch.Generator(device).manual_seed(args.seed)
    # the completion figure draws from its own generator, so it is a figure of the prior alone: on
    # the sampler's, it moved with any workflow setting that changed how many numbers sampling drew
    completion_g = torch.Generator(device).manual_seed(args.seed + COMPLETION_SEED_OFFSET)
    ring = args.ring or f
    # a generator per pass: the first pass draws what a one-pass run draws, so the two pair cleanly
    generators = [g, *(torch.Generator(device).manual_seed(args.seed + REFINE_SEED_OFFSET + k)
                       for k in range(1, len(passes)))]
    rows, thumbs = [], []
    start = time.perf_counter()
    batches = image_batches(files, args.resolution, args.batch_size)
    for batch_files, pixels in tqdm(batches, desc="inpainting", unit="batch", total=-(-len(files) // args.batch_size),
                                    disable=not progress):
        holes = [place_hole(p, f, args.hole, place_gen, args.slack) for p in pixels]
        original = to_model(pixels)
        b, _, H, W = original.shape
        mask = hole_masks(holes, H, W, f)
        filled = hide_masked(original, mask, ring)  # the no-model baseline: the ring's mean colour
        with torch.inference_mode():
            tokens = vqgan.encode(original.to(device))  # the truth, and the reconstruction floor's
            # what the prior is given around the hole: with --context hidden (smooth), tokens encoded
            # with the hole's pixels hidden under its ring's colour (a smooth extension of the image
            # around it), as SUNDAE VQ Encode does given the mask,
            # so nothing of the answer reaches them through the encoder's reach (~330 px)
            context = tokens if args.context == "original" else vqgan.encode(
                hide_masked(original, mask, ring, fill=HIDE_FILL[args.context]).to(device))
            hole = latent_mask(mask, f, tuple(tokens.shape[-2:])).to(device)  # (b h w) the hole's tokens
            # --grow: the tokens beside the hole, which read the fill that hid it, are redrawn too
            repaint = hole if not args.grow else F.max_pool2d(hole[:, None].float(), 2 * args.grow + 1, 1,
                                                              args.grow)[:, 0] > 0
            result = sample_passes(logits_fns, vqgan, prior.null_label, passes, original, mask, context, repaint,
                                   generators)
            decoded = vqgan.decode(torch.cat([tokens, result.tokens])).cpu()  # recon then inpaint
            fillings = completion_g.get_state()  # the views' figure replays the same random fillings
            hole_acc = completion_accuracy(score_fn, tokens, hole, vocab, completion_g, args.completion_draws,
                                           context)
            if views_fn is not None:
                replay = torch.Generator(device)
                replay.set_state(fillings)
                hole_views_acc = completion_accuracy(views_fn, tokens, hole, vocab, replay, args.completion_draws,
                                                     context)
            scattered = scattered_positions(b, *tokens.shape[-2:], args.hole ** 2, completion_g, device)
            scattered_acc = completion_accuracy(score_fn, tokens, scattered, vocab, completion_g,
                                                args.completion_draws)
            hole_near = nearest_known_accuracy(tokens, hole, context)
            scattered_near = nearest_known_accuracy(tokens, scattered)
            outputs = {"reconstruction": paste(original, decoded[:b], mask, settings.feather, settings.seam_band),
                       "inpaint": paste(original, decoded[b:], mask, settings.feather, settings.seam_band),
                       "mean_fill": paste(original, filled, mask, settings.feather)}
            if also is not None:
                redecoded = also.decode(torch.cat([tokens, result.tokens])).cpu()
                outputs |= {f"also_{name}": paste(original, part, mask, settings.feather, settings.seam_band)
                            for name, part in (("reconstruction", redecoded[:b]), ("inpaint", redecoded[b:]))}
            real = hole_crops(original, holes, f)
            scores = {}
            for name, image in outputs.items():
                fake = hole_crops(image, holes, f)
                scores[name] = (lpips(fake.to(device), real.to(device)).float().cpu(), psnr(fake, real))
        for i, path in enumerate(batch_files):
            row = {"file": str(Path(path).relative_to(args.images)), "hole_top": holes[i].top,
                   "hole_left": holes[i].left, "subject_share": holes[i].subject_share,
                   "steps_used": int(result.steps_used[i]),
                   "hole_token_accuracy": round(float(hole_acc[i]), 4),
                   "scattered_token_accuracy": round(float(scattered_acc[i]), 4),
                   **({"hole_token_accuracy_views": round(float(hole_views_acc[i]), 4)} if views_fn else {}),
                   "hole_nearest_known_accuracy": round(float(hole_near[i]), 4),
                   "scattered_nearest_known_accuracy": round(float(scattered_near[i]), 4)}
            for name in scores:
                row[f"{name}_lpips"] = round(float(scores[name][0][i]), 4)
                row[f"{name}_psnr"] = round(float(scores[name][1][i]), 3)
            rows.append(row)
            if len(thumbs) < args.grid_images * len(GRID_COLUMNS):
                thumbs.append(thumbnail(original[i], args.thumb, holes[i].box(f)))
                thumbs += [thumbnail(outputs[name][i], args.thumb)
                           for name in ("inpaint", "mean_fill", "reconstruction")]
    seconds = time.perf_counter() - start

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    inpaint = {
        "n": len(rows), "resolution": args.resolution, "hole_tokens": args.hole, "hole_pixels": args.hole * f,
        "ring_pixels": ring, "slack": args.slack, "context": args.context, "grow": args.grow,
        "workflow": str(args.workflow),
        "workflow_settings": settings.to_dict(), "passes": [p.to_dict() for p in passes],  # as run
        "methods": {name: {"lpips": round(mean(f"{name}_lpips"), 4), "psnr": round(mean(f"{name}_psnr"), 3)}
                    for name in METHODS},
        "inpaint_beats_mean_fill": round(float(np.mean([r["inpaint_lpips"] < r["mean_fill_lpips"] for r in rows])), 4),
        "inpaint_minus_reconstruction_lpips": round(mean("inpaint_lpips") - mean("reconstruction_lpips"), 4),
        "mean_subject_share": round(mean("subject_share"), 4),
        "mean_steps_used": round(mean("steps_used"), 2),
        "seconds": round(seconds, 2), "grid_columns": list(GRID_COLUMNS), "images": rows,
    }
    completion = {"n": len(rows), "tokens_per_image": args.hole ** 2, "dtype": "float32", "context": args.context,
                  "draws": args.completion_draws,
                  "hole_accuracy": round(mean("hole_token_accuracy"), 4),
                  "scattered_accuracy": round(mean("scattered_token_accuracy"), 4),
                  # no model: each position copies the nearest token left as it was
                  "nearest_known": {"hole_accuracy": round(mean("hole_nearest_known_accuracy"), 4),
                                    "scattered_accuracy": round(mean("scattered_nearest_known_accuracy"), 4)}}
    if views_fn is not None:
        completion["with_views"] = {"views": settings.sampler.views,
                                    "hole_accuracy": round(mean("hole_token_accuracy_views"), 4)}
    if also is not None:
        inpaint["also_vqgan"] = also_report(rows, args.also_vqgan)
    return InpaintingResult({"inpainting": inpaint, "token_completion": completion}, thumbs)


def eval_passes(settings: InpaintSettings, refine: int | None, refine_rate: float | None,
                adapter: str = WORKFLOW_ADAPTER) -> tuple[InpaintPass, ...]:
    """The workflow's passes; --refine N keeps its first and N later ones (each the workflow's
    second pass, or its first where it has one only), --refine-rate sets the later ones' rate,
    --adapter none drops every pass's adapter, --adapter FILE puts the file in place of the
    workflow's adapter at its strength (on every pass at strength 1 where no pass has one)."""
    if adapter == NO_ADAPTER:
        settings = InpaintSettings(tuple(replace(p, adapter="", adapter_file="") for p in settings.passes))
    elif adapter != WORKFLOW_ADAPTER:
        file, anywhere = str(Path(adapter).absolute()), any(p.adapted for p in settings.passes)
        settings = InpaintSettings(tuple(
            replace(p, adapter="", adapter_file=file) if p.adapted else
            p if anywhere else replace(p, adapter_file=file, adapter_strength=1.0) for p in settings.passes))
    first, later = settings.passes[0], list(settings.passes[1:])
    if refine is not None:
        later = [later[0] if later else first] * refine
    if refine_rate is not None and not later:
        raise InputError(f"--refine-rate {refine_rate} sets the rate of the refining passes, and this workflow "
                         "has one pass: add --refine N to run N refining passes at that rate")
    if refine_rate is not None:
        later = [replace(p, rate=refine_rate) for p in later]
    return (first, *later)


class PassModels(NamedTuple):
    sampler: object  # the prior a pass samples with (the inference dtype), adapted or not
    scorer: object  # the same in float32, for the one-step figures


def pass_models(passes: tuple[InpaintPass, ...], prior, scorer) -> list[PassModels]:
    """Each pass's prior pair: `prior` and `scorer`, or the pass's adapter applied to both, as
    SUNDAE Apply Prior Adapter applies it (a workflow's adapter found by the node's own lookup);
    unlike the node, an adapter made from another prior than --prior is refused, not passed
    over. Passes with the same adapter share one pair."""
    made = {}
    for p in passes:
        key = (p.adapter, p.adapter_file, p.adapter_strength)
        if key not in made:
            made[key] = PassModels(prior, scorer) if not p.adapted else PassModels(*_adapted((prior, scorer), p))
    return [made[(p.adapter, p.adapter_file, p.adapter_strength)] for p in passes]


def _adapted(models: tuple, p: InpaintPass) -> list:
    if p.adapter_file:
        path, where = Path(p.adapter_file), f"--adapter {p.adapter_file}: "
    else:
        node = default_registry().classes.get("SundaeApplyPriorAdapter")
        if node is None:
            raise InputError("the workflow applies a prior adapter, and the sundae node pack is not installed: "
                             "pip install -e . in the checkout")
        path, where = node.adapter_file(p.adapter), f"the workflow's adapter {p.adapter}: "
    adapter = load_adapter(path)
    try:
        return [apply_adapter(model, adapter, p.adapter_strength, where) for model in models]
    except AdapterBaseError as err:
        raise AdapterBaseError(f"{err} (--adapter {NO_ADAPTER} measures the prior alone)") from None


def sample_passes(logits_fns: list, vqgan, null_label: int | None, passes: tuple[InpaintPass, ...],
                  original: torch.Tensor, mask: torch.Tensor, context: torch.Tensor, repaint: torch.Tensor,
                  generators: list[torch.Generator]) -> SampleResult:
    """The workflow's sampling, pass k drawing from generators[k]: the first pass redraws the hole
    (`repaint`, b h w) in `context`; each later one pastes its predecessor's decode into `original`
    (model layout) with that pass's composite, encodes it whole and redraws the hole around it, so
    the tokens beside the hole read a plausible fill rather than the flat one that hid it, with
    logits_fns[k] (the pass's prior, adapted or not). steps_used adds the passes'."""
    result, steps_used = None, 0
    for step, before, generator, logits_fn in zip(passes, (None, *passes), generators, logits_fns):
        if result is not None:
            pasted = paste(original, vqgan.decode(result.tokens).cpu(), mask, before.feather, before.seam_band)
            context = vqgan.encode(pasted.to(context.device))
        noisy = corrupt(context, vqgan.vocab_size, generator=generator, rate=step.rate).tokens
        result = sample(logits_fn, torch.where(repaint, noisy, context), step.sampler, generator=generator,
                        repaint=repaint, null_label=null_label)
        steps_used = steps_used + result.steps_used
    return SampleResult(result.tokens, steps_used)


def also_report(rows: list[dict], path: str) -> dict:
    """--also-vqgan: the second decoder's hole figures, and each paired with the first's over the
    same images and tokens (differences second - first)."""
    keyed = {(r["file"], r["hole_top"], r["hole_left"]): r for r in rows}
    first = {k: {key: r[key] for key in ALSO_PAIRED} for k, r in keyed.items()}
    second = {k: {key: r[f"also_{key}"] for key in ALSO_PAIRED} for k, r in keyed.items()}
    _, figures = paired_figures(first, second, ALSO_PAIRED)
    return {"vqgan": path, "paired": {"images": len(rows), "unmatched": 0, "figures": figures},
            "inpaint_beats_mean_fill": round(float(np.mean([r["also_inpaint_lpips"] < r["mean_fill_lpips"]
                                                            for r in rows])), 4)}


# ---------------------------------------------------------------------------------------------
# 3: class accuracy


def class_accuracy(args, vqgan, prior, extractor: FeatureExtractor, device, out: Path, progress: bool) -> dict:
    root = Path(args.images)
    files = image_paths(root)
    names = folder_classes(files, root)
    classes = prior.config.num_classes
    prior_names = list(getattr(prior.config, "class_names", ()) or ())
    if prior_names:  # the prior names its classes (from its latent manifest): label i = name i
        unknown = sorted(set(names) - set(prior_names))
        if unknown:
            raise InputError(f"--classes: folders {', '.join(unknown)} of {root} are not among the prior's "
                             f"classes ({', '.join(prior_names)})")
        names = prior_names
    elif len(names) != classes:
        raise InputError(f"--classes: {root} has {len(names)} class folders but the prior has {classes} classes")
    labels_of = _folder_labels(files, root, names)
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    canvas = args.resolution
    split_features = {}
    for split in ("train", "val"):
        mine = [p for p in files if is_validation(p, args.val_fraction) == (split == "val")]
        if not mine:
            raise InputError(f"--classes: the {split} split of {root} is empty (val_fraction={args.val_fraction})")
        key = content_key([extractor.name, str(extractor.input_size), PREPROCESS_VERSION, split,
                           str(args.val_fraction), f"canvas={canvas}"], mine, root)
        feats, path, hit = cached_features(
            cache_dir, f"classes-{split}", key,
            lambda mine=mine, split=split: extract_features(
                extractor, folder_images(mine, canvas), total=len(mine), batch_size=args.feature_batch,
                desc=f"{split} image features", progress=progress))
        print(f"{split}: {len(mine)} images, features {'from cache' if hit else 'cached'} at {path}")
        split_features[split] = (feats, np.array([labels_of[p] for p in mine]))
    (train_x, train_y), (val_x, val_y) = split_features["train"], split_features["val"]
    if args.probe_domain == "reconstructed":
        # the probe learns the training emoji as the VQ-GAN draws them, the domain its samples live in
        train_files = [p for p in files if not is_validation(p, args.val_fraction)]
        train_x = _reconstructed_features(args, vqgan, extractor, train_files, root, "train", cache_dir, device, progress)
    probe = fit_linear_probe(train_x, train_y, classes, l2=args.l2)
    real_hits = probe.predict(val_x) == val_y
    real_accuracy = float(real_hits.mean())
    # the ceiling a prior over this VQ-GAN's tokens can reach: the held-out emoji through the VQ-GAN
    val_files = [p for p in files if is_validation(p, args.val_fraction)]
    recon_x = _reconstructed_features(args, vqgan, extractor, val_files, root, "val", cache_dir, device, progress)
    recon_hits = probe.predict(recon_x) == val_y
    recon_accuracy = float(recon_hits.mean())

    grid = (args.resolution // vqgan.factor,) * 2
    source = SampleSource(prior, vqgan, grid, args.batch_size, device, progress=progress, compile=args.compile)
    base = settings_from_args(args)
    per_class, thumbs, all_hits = [], [], []
    for label, name in enumerate(names):
        images = list(source.images(args.per_class, base, args.seed + label, name, label))
        predicted = probe.predict(extract_features(extractor, images, batch_size=args.feature_batch,
                                                   desc=f"{name} features", progress=False))
        hits = predicted == label
        all_hits += hits.tolist()
        # beside it, the probe on this group's real held-out emoji and on them through the VQ-GAN:
        # a group whose real or reconstructed images it misreads caps that group's figure
        mine = val_y == label
        per_class.append({"label": label, "name": name, "accuracy": round(float(hits.mean()), 4),
                          "real_val_accuracy": _share(real_hits[mine]),
                          "reconstructed_val_accuracy": _share(recon_hits[mine]), "n_val": int(mine.sum()),
                          "predicted": predicted.tolist(),
                          "mean_steps_used": round(float(np.mean(source.steps_used)), 2)})
        thumbs += [thumbnail(to_model(image[None])[0], args.thumb) for image in images]
    path = save_png(make_grid(torch.stack(thumbs), nrow=args.per_class), out / "class_samples.png")
    sample_accuracy = float(np.mean(all_hits))
    # the samples are as many of every group, the held-out emoji are not (people 39, activities 7):
    # the ratios divide by the held-out accuracies weighted as the samples are, each group alike
    by_class = lambda hits: float(np.mean([hits[val_y == label].mean() for label in range(len(names))
                                           if (val_y == label).any()]))
    real_by_class, recon_by_class = by_class(real_hits), by_class(recon_hits)
    return {"classes": names, "n_train": len(train_y), "n_val": len(val_y), "canvas": canvas,
            "extractor": extractor.name, "l2": args.l2,
            "probe_train_accuracy": round(probe.train_accuracy, 4),
            "real_val_accuracy": round(real_accuracy, 4),
            "reconstructed_val_accuracy": round(recon_accuracy, 4),
            "real_val_accuracy_by_class": round(real_by_class, 4),
            "reconstructed_val_accuracy_by_class": round(recon_by_class, 4),
            "sample_accuracy": round(sample_accuracy, 4),
            "ratio_to_real": round(sample_accuracy / real_by_class, 4) if real_by_class else None,
            "ratio_to_reconstructed": round(sample_accuracy / recon_by_class, 4) if recon_by_class else None,
            # the ratio every report before session 34 gave: over the held-out emoji as they come
            "ratio_to_real_by_image": round(sample_accuracy / real_accuracy, 4) if real_accuracy else None,
            "probe_domain": args.probe_domain,
            "per_class_samples": args.per_class, "guidance": args.guidance, "seed": args.seed,
            "sampler": base.to_dict(),
            "per_class": per_class, "grid": str(path)}


def _reconstructed_features(args, vqgan, extractor, files: list[Path], root: Path, split: str, cache_dir: Path,
                            device, progress: bool) -> np.ndarray:
    """Inception features of `files` through the VQ-GAN (encoded and decoded), cached under a key
    hashing the files, the split and the VQ-GAN file."""
    canvas = args.resolution
    key = content_key([extractor.name, str(extractor.input_size), PREPROCESS_VERSION, f"{split}-reconstructed",
                       str(args.val_fraction), f"canvas={canvas}", file_digest(args.vqgan),
                       decoder_dtype(vqgan), str(device)], files, root)  # bf16 or float32 by the machine
    feats, path, hit = cached_features(
        cache_dir, f"classes-{split}-reconstructed", key,
        lambda: extract_features(extractor, reconstructions(vqgan, files, canvas, args.batch_size, device),
                                 total=len(files), batch_size=args.feature_batch,
                                 desc=f"{split} reconstructions' features", progress=progress))
    print(f"{split} reconstructed: {len(files)} images, features {'from cache' if hit else 'cached'} at {path}")
    return feats


def _share(hits: np.ndarray) -> float | None:
    return round(float(hits.mean()), 4) if hits.size else None


def reconstructions(vqgan, files: list[Path], canvas: int, batch_size: int, device) -> Iterator[np.ndarray]:
    """The images of `files` encoded and decoded by the VQ-GAN, as uint8 (h w 3), in order."""
    for _, pixels in image_batches(files, canvas, batch_size):
        with torch.inference_mode():
            decoded = vqgan.decode(vqgan.encode(to_model(pixels).to(device)))
        yield from to_uint8(decoded)


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sundae-eval-default", description=doc_summary(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    models = p.add_argument_group("models and data")
    models.add_argument("--vqgan", help="VQ-GAN checkpoint (absent or 'default': the embedded one)")
    models.add_argument("--prior", help="prior checkpoint over its tokens (absent or 'default': the embedded one)")
    models.add_argument("--also-vqgan", metavar="VQGAN",
                        help="a second decoder of the same token version: the same tokens decoded through it too, "
                             "its hole figures paired with --vqgan's (judge a decoder without sampling again)")
    models.add_argument("--images", default="data/emoji_groups",
                        help="image folder, one subfolder per class (default data/emoji_groups)")
    models.add_argument("--val-fraction", type=float, default=HELD_OUT_FRACTION,
                        help=f"held-out fraction of image_data.is_validation (default {HELD_OUT_FRACTION})")
    models.add_argument("--resolution", type=int, default=1024,
                        help="square canvas images are brought to and samples drawn at (default 1024)")
    inp = p.add_argument_group("inpainting and token completion")
    inp.add_argument("--n", type=int, default=40, help="held-out images to inpaint (default 40)")
    inp.add_argument("--split", choices=("val", "train"), default="val",
                     help="inpaint held-out images (val, the aims' figures) or training images (train: "
                          "beside a val report, how much of the prior's skill is memory; default val)")
    inp.add_argument("--hole", type=int, default=8, help="side of the square hole in tokens (default 8)")
    inp.add_argument("--slack", type=float, default=0.1,
                     help="hole windows whose non-white share is within this of the best are candidates (default 0.1)")
    inp.add_argument("--ring", type=int, default=0,
                     help="width in pixels of the ring the mean-fill colour comes from (default: one token)")
    inp.add_argument("--context", choices=("hidden", "smooth", "original"), default="hidden",
                     help="the tokens around the hole: encoded with the hole's pixels hidden under its ring's "
                          "mean colour (hidden: a user's image, where what is under the mask is to be replaced), "
                          "under a smooth extension of the pixels around it (smooth), "
                          "or from the whole original (original: the encoder's reach carries some of the "
                          "hole's content into them; every report before session 34; default hidden)")
    inp.add_argument("--grow", type=int, default=0,
                     help="also redraw this many rings of tokens around the hole (the composite still pastes "
                          "the hole's pixels only; default 0, as the workflow)")
    inp.add_argument("--refine", type=int,
                     help="sampling passes after the first (default: the workflow's): each pastes its "
                          "predecessor's picture into the original, encodes it whole and samples the hole "
                          "again around it; 0 measures the first pass alone")
    inp.add_argument("--refine-rate", type=float,
                     help="the later passes' corrupt rate, the share of the hole redrawn from noise "
                          "(default: the workflow's)")
    inp.add_argument("--adapter", default=WORKFLOW_ADAPTER,
                     help="'workflow' (default: each pass's SUNDAE Apply Prior Adapter, if any), 'none' (the "
                          "prior alone on every pass), or a .safetensors path: that adapter in place of the "
                          "workflow's, on the passes that apply one (on every pass where none does)")
    inp.add_argument("--workflow", default=str(WORKFLOW),
                     help="inpainting workflow whose corrupt rate, sampler settings and feather are used "
                          "(default workflows/inpaint_1024.json)")
    inp.add_argument("--completion-draws", type=int, default=4,
                     help="random fillings the one-step token completion is averaged over (default 4)")
    inp.add_argument("--grid-images", type=int, default=6, help="images shown in inpaint_grid.png (default 6)")
    inp.add_argument("--thumb", type=int, default=192, help="side in pixels of each picture in the grids (default 192)")
    cls = p.add_argument_group("class accuracy (--classes, class-conditional priors)")
    cls.add_argument("--classes", action="store_true",
                     help="score guided class-conditional samples with a linear probe on Inception features")
    cls.add_argument("--per-class", type=int, default=10, help="samples drawn per class (default 10)")
    # the class workflow's sampler, as inpainting takes the inpainting workflow's
    add_sampler_flags(cls, defaults=CLASS_WORKFLOW_SAMPLER)
    cls.add_argument("--l2", type=float, default=1e-2, help="L2 weight of the linear probe (default 0.01)")
    cls.add_argument("--probe-domain", choices=("real", "reconstructed"), default="real",
                     help="train the probe on the real training emoji (default; the campaign's aim) or on "
                          "their VQ-GAN reconstructions, the domain the samples are drawn in")
    cls.add_argument("--cache-dir", help=f"where real image features are cached (default {default_cache_dir()})")
    cls.add_argument("--feature-batch", type=int, default=32, help="images per Inception batch (default 32)")
    col = p.add_argument_group("code colours")
    col.add_argument("--code-colours", action="store_true",
                     help="decode every code, count red/green/blue-dominant ones, write code_palette.png")
    run = p.add_argument_group("run")
    run.add_argument("--batch-size", type=int, default=4, help="images inpainted / sampled at once (default 4)")
    run.add_argument("--seed", type=int, default=0, help="seed of hole placement, corruption and sampling")
    run.add_argument("--device", default="cpu", help="torch device (default cpu)")
    run.add_argument("--out", default="runs/eval_default", help="output folder (default runs/eval_default)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument("--compare-to", metavar="REPORT",
                     help="an earlier eval_default.json: print this run's figures against it, paired image by "
                          "image (trainers/evaluation/paired.py), and keep the comparison in the report")
    return p


def _check_args(args: argparse.Namespace) -> None:
    if min(args.n, args.hole, args.batch_size, args.per_class, args.feature_batch, args.thumb,
           args.completion_draws) < 1:
        raise InputError("--n, --hole, --batch-size, --per-class, --feature-batch, --thumb and "
                         "--completion-draws must be >= 1")
    if args.ring < 0 or args.grid_images < 0 or (args.refine or 0) < 0 or not 0 <= args.slack <= 1:
        raise InputError("--ring, --grid-images and --refine must be >= 0 and --slack in [0, 1]")
    if args.refine_rate is not None and args.refine == 0:
        raise InputError("--refine-rate sets the rate of the refining passes, and --refine 0 runs none")
    if args.refine_rate is not None and not 0 <= args.refine_rate <= 1:
        raise InputError(f"--refine-rate is the share of the hole redrawn, in [0, 1]; got {args.refine_rate}")


def main(argv: list[str] | None = None, extractor: FeatureExtractor | None = None, lpips=None) -> int:
    """Entry point; `extractor` replaces the Inception network and `lpips` the LPIPS-Alex distance
    (`(b 3 h w) x2 in [-1, 1] -> (b,)`): tests inject tiny ones."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        _check_args(args)
        if args.classes:
            settings_from_args(args)  # bad sampler flags fail before the models load
        settings = workflow_settings(args.workflow)
        eval_passes(settings, args.refine, args.refine_rate)  # so does a --refine-rate with no pass to set
        if args.adapter not in (WORKFLOW_ADAPTER, NO_ADAPTER):
            if not Path(args.adapter).is_file():
                raise InputError(f"--adapter {args.adapter} is not a file; give a prior adapter "
                                 f"(sundae-extract-adapter), '{NO_ADAPTER}' or '{WORKFLOW_ADAPTER}'")
            load_adapter(args.adapter)  # a file of another kind fails before the models load
        baseline = load_report(args.compare_to) if args.compare_to else None  # a bad path fails early too
        device = torch.device(args.device)
        progress = not args.no_progress
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        dtype = inference_dtype(device)
        args.vqgan = str(model_path(args.vqgan, "vqgan"))
        args.prior = str(model_path(args.prior, "prior"))
        vqgan = load_vqgan(args.vqgan, device=device, dtype=dtype)
        scorer = load_prior(args.prior, device=device, dtype=torch.float32)  # read once; sampled in `dtype`
        prior = copy.deepcopy(scorer).to(dtype)
        check_models_fit(vqgan, prior, f"--prior {args.prior} with --vqgan {args.vqgan}: ")
        also = None
        if args.also_vqgan:
            args.also_vqgan = str(model_path(args.also_vqgan, "vqgan"))
            also = load_vqgan(args.also_vqgan, device=device, dtype=dtype)
            if also.token_version != vqgan.token_version:
                raise InputError(f"--also-vqgan {args.also_vqgan} reads other tokens (token version "
                                 f"{also.token_version}) than --vqgan {args.vqgan} ({vqgan.token_version}): "
                                 "give a decoder trained with that VQ-GAN's encoder frozen")
        if args.resolution % vqgan.factor:
            raise InputError(f"--resolution {args.resolution} is not a multiple of the VQ-GAN factor {vqgan.factor}")
        if args.classes and not prior.config.num_classes:
            raise InputError("--classes needs a class-conditional prior; this one is unconditional")
        lp = lpips if lpips is not None else load_lpips("alex", device=device)
        if lpips is None and args.hole * vqgan.factor < lp.min_size:
            raise InputError(f"the hole is {args.hole * vqgan.factor} px; LPIPS-Alex needs at least "
                             f"{lp.min_size}: use a larger --hole")

        report = {"vqgan": str(args.vqgan), "prior": str(args.prior), "images": str(args.images),
                  "val_fraction": args.val_fraction, "split": args.split, "seed": args.seed,
                  "batch_size": args.batch_size, "prior_classes": prior.config.num_classes}
        result = inpainting(args, vqgan, prior, scorer, lp, settings, device, progress, also)
        report.update(result.report)
        if result.thumbs:
            path = save_png(make_grid(torch.stack(result.thumbs), nrow=len(GRID_COLUMNS)), out / "inpaint_grid.png")
            report["inpainting"]["grid"] = str(path)

        if args.classes:
            ext = extractor if extractor is not None else InceptionFeatures(device)
            report["class_accuracy"] = class_accuracy(args, vqgan, prior, ext, device, out, progress)

        if args.code_colours:
            colours = code_colours(vqgan, device, 64, progress)
            path = save_png(palette(colours), out / "code_palette.png")
            report["code_colours"] = {**colour_report(colours), "palette": str(path)}

        print(summary(report))
        if baseline is not None:  # a comparison that cannot be made must not cost the run its report
            try:
                comparison = compare_reports(baseline, report)
                print(format_comparison(comparison))
            except InputError as err:
                comparison = {"error": str(err)}
                print(f"not compared with {args.compare_to}: {err}")
            report["compared_to"] = {"report": str(args.compare_to), **comparison}
        write_json_report(out / REPORT, report)
        return 0

    return run_guarded(body, reuse_memory=True)


def summary(report: dict) -> str:
    inp, comp = report["inpainting"], report["token_completion"]
    which = "training" if report.get("split") == "train" else "held-out"  # reports before --split: held-out
    lines = [f"inpainting, {inp['n']} {which} images, {inp['hole_tokens']}x{inp['hole_tokens']}-token hole "
             f"({inp['hole_pixels']} px), hole LPIPS-Alex / PSNR:"]
    lines += [f"  {name:<15} {m['lpips']:.4f} / {m['psnr']:.2f} dB" for name, m in inp["methods"].items()]
    lines.append(f"  inpaint beats mean_fill on {inp['inpaint_beats_mean_fill']:.0%} of images; "
                 f"inpaint - reconstruction = {inp['inpaint_minus_reconstruction_lpips']:+.4f} LPIPS")
    if "also_vqgan" in inp:
        also = inp["also_vqgan"]
        lines.append(f"the same tokens through --also-vqgan {also['vqgan']} (beats mean_fill on "
                     f"{also['inpaint_beats_mean_fill']:.0%}), against --vqgan:")
        lines += format_figures(also["paired"])[1:]
    lines.append(f"token completion (one step, top-1, {comp['dtype']}, {comp['draws']} draws): "
                 f"hole {comp['hole_accuracy']:.3f}, "
                 f"scattered {comp['scattered_accuracy']:.3f} ({comp['tokens_per_image']} tokens per image)")
    if "with_views" in comp:
        v = comp["with_views"]
        lines.append(f"  with the workflow's {v['views']} shifted views (the same fillings): hole {v['hole_accuracy']:.3f}")
    if "nearest_known" in comp:  # reports written before session 17 lack the baseline
        near = comp["nearest_known"]
        lines.append(f"  no model (each position copies the nearest known token): hole {near['hole_accuracy']:.3f}, "
                     f"scattered {near['scattered_accuracy']:.3f}")
    if "class_accuracy" in report:
        c = report["class_accuracy"]
        if c.get("probe_domain", "real") != "real":
            lines.append(f"class probe trained on the training emoji's {c['probe_domain']} images")
        by_class = ""
        if "real_val_accuracy_by_class" in c:  # since session 34 the ratios divide by these
            by_class = (f"; each group alike {c['real_val_accuracy_by_class']:.3f} "
                        f"({c['reconstructed_val_accuracy_by_class']:.3f})")
        lines.append(f"class accuracy: real held-out {c['real_val_accuracy']:.3f} (through the VQ-GAN "
                     f"{c['reconstructed_val_accuracy']:.3f}{by_class}), guided samples {c['sample_accuracy']:.3f} "
                     f"(ratio {c['ratio_to_real']} to real, {c['ratio_to_reconstructed']} to reconstructed)")
        for row in c["per_class"]:
            if "real_val_accuracy" in row:  # reports before session 17 lack the per-group real figures
                real, recon = row["real_val_accuracy"], row["reconstructed_val_accuracy"]
                lines.append(f"  {row['name']:<18} samples {row['accuracy']:.2f}   held-out real "
                             f"{'-' if real is None else f'{real:.2f}'}, through the VQ-GAN "
                             f"{'-' if recon is None else f'{recon:.2f}'} ({row['n_val']} images)")
    if "code_colours" in report:
        c = report["code_colours"]
        lines.append(f"code colours: {c['red_dominant']} red, {c['green_dominant']} green, {c['blue_dominant']} blue "
                     f"dominant, {c['grey']} grey of {c['n_codes']}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
