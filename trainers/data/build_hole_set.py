"""Build a hole set: token grids of images with holes, each beside the tokens the inpainting
workflow gives the prior around that hole (the hole's pixels hidden before encoding).

    sundae-build-hole-set --vqgan sundae_core/default_models/vqgan.safetensors \\
        --images data/emoji_groups --resolution 1024 --labels-from-folders --out data/emoji_holes

Why: SUNDAE VQ Encode hides the masked pixels (images.hide_masked) so that nothing of what a user
removes reaches the tokens kept around the hole, as the encoder reads ~330 px around each token.
Those tokens then encode the fill's flat colour and edge, which the prior never met in training
(its grids are encoded whole): on 32 held-out holes its one-step top-1 fell from 0.405 to 0.355
(session 34). The prior trainer's `data.hole_set` / `train.hole_share` train on what the
workflow hands it: these context tokens around random tokens in the hole, the whole image's
tokens as the target, and `val_hidden_hole_top1` reads the figure on the held-out holes.

Per image, --holes holes (sides drawn from --sides), each placed on the subject as
sundae-eval-default places its holes (inpaint_setup.place_hole), from a generator seeded by the
image's name and the hole's index: the same holes on every build. Shard tensors (one row per
hole): tokens (n h w) the image's own, context (n h w) those encoded with the hole hidden, hole
(n h w) uint8 1 = the hole's tokens, labels (n,) with --labels-from-folders. Split as
sundae-build-latents splits (image_data.is_validation); shards are written atomically and skipped
when present (a killed build resumes); under torchrun each process encodes its share of shards.

--extend HOLES grows a hole set built on a --subset of an image folder to a larger --subset of
the same folder without re-encoding it: only the images the larger share adds are encoded (the
subsets nest, image_data.in_subset), and the new manifest lists the base's shards (as paths
relative to --out, so the base folder must stay beside it) before the new ones. The base must
hold exactly its share of the folder as it is now (its record's image list is checked), and
every setting that shapes the holes must be its own. Classes the base's share did not meet are
numbered after its own.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sundae_core.cli import doc_summary, run_guarded
from sundae_core.errors import InputError
from sundae_core.images import HIDE_FILLS, hide_masked
from sundae_core.models import inference_dtype, load_vqgan

from ..evaluation.inpaint_setup import hole_masks, place_hole
from ..training import distributed as dist
from .build_latents import (BUILD_RECORD, _folder_labels, build_settings, check_out_folder, folder_classes,
                           image_list_digest, read_build_record, write_build_record)
from .image_data import HELD_OUT_FRACTION, image_paths, in_subset, is_validation, load_rgb_scaled
from .latent_data import HOLE_SET_KIND, read_manifest, write_hole_shard, write_manifest


def hole_generator(path: Path, index: int) -> torch.Generator:
    """The generator that places hole `index` of this image: seeded by its file name, so a rebuild
    (or another process) places the same holes."""
    seed = int.from_bytes(hashlib.sha1(f"{path.name}:{index}".encode()).digest()[:8], "big") >> 1
    return torch.Generator().manual_seed(seed)


def encode_holes(vqgan, pixels: np.ndarray, path: Path, sides: tuple[int, ...], holes: int, slack: float,
                 fill: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image (H W 3) uint8 -> (tokens, context, hole), each (holes h w): the image's tokens
    repeated, the tokens encoded with each hole's pixels hidden, each hole's token mask."""
    f = vqgan.factor
    placed = []
    for k in range(holes):
        g = hole_generator(path, k)
        side = sides[int(torch.randint(len(sides), (1,), generator=g))]
        placed.append(place_hole(pixels, f, side, g, slack))
    x = torch.tensor(pixels).permute(2, 0, 1).float()[None] / 127.5 - 1  # (1 3 H W)
    masks = hole_masks(placed, *pixels.shape[:2], f)  # (holes H W)
    hidden = hide_masked(x.expand(holes, -1, -1, -1), masks, ring=f, fill=fill)
    with torch.inference_mode():
        both = torch.cat([x, hidden]).contiguous(memory_format=torch.channels_last)
        t = vqgan.encode(both)
    grid = t.shape[-2:]
    hole = torch.zeros(holes, *grid, dtype=torch.uint8)
    for i, h in enumerate(placed):
        hole[i, h.top:h.top + h.size, h.left:h.left + h.size] = 1
    return t[:1].expand(holes, -1, -1).clone(), t[1:], hole


def build(args) -> int:
    rank, world = dist.setup()
    out = Path(args.out)
    vqgan = load_vqgan(args.vqgan, dtype=inference_dtype("cpu"))
    if args.resolution % vqgan.factor:
        raise InputError(f"--resolution {args.resolution} must be a multiple of the VQ-GAN factor {vqgan.factor}")
    grid = args.resolution // vqgan.factor
    if max(args.sides) > grid - 2:
        raise InputError(f"--sides {max(args.sides)} does not fit the {grid}x{grid} token grid with a margin")
    base = extended_holes(args, vqgan.token_version, grid) if args.extend else None
    # with --extend, the images the base's share took are in it already (the subsets nest)
    above = base["subset"] if base is not None else 0.0
    files = [p for p in image_paths(args.images)[: args.limit or None] if in_subset(p, args.subset, above)]
    if not files:
        raise InputError(f"no images to encode in {args.images}" + (
            f" beyond the {above:g} share --extend {args.extend} holds; give a larger --subset" if base else ""))
    class_names = folder_classes(files, Path(args.images)) if args.labels_from_folders else []
    if base is not None:  # the base's labels keep their numbers; classes it did not meet come after them
        class_names = grown_classes(base, class_names, args.extend)
    labels_of = _folder_labels(files, Path(args.images), class_names) if class_names else None
    shards: dict[str, list[str]] = {"train": [], "val": []}
    plan = []
    for split in ("train", "val"):
        chosen = [p for p in files if is_validation(p, args.val_fraction) == (split == "val")]
        for i in range(0, len(chosen), args.shard_size):
            name = f"{split}-{i // args.shard_size:05d}.safetensors"
            shards[split].append(name)
            plan.append((name, chosen[i:i + args.shard_size]))
    # what the shards depend on: build_latents' record (the image list by its digest, the token
    # version, size, split, grouping) and how the holes are drawn and hidden
    check_settings(out, {**build_settings(args, vqgan.token_version, files, class_names), "holes": args.holes,
                         "sides": list(args.sides), "slack": args.slack, "fill": args.fill,
                         **({"extends": str(Path(args.extend).resolve()), "subset_from": above}
                            if base is not None else {})})
    mine = [item for j, item in enumerate(plan) if j % world == rank and not (out / item[0]).is_file()]
    bar = tqdm(total=sum(len(p) for _, p in mine), desc=f"holes (rank {rank})", unit="image",
               disable=args.no_progress)
    for name, paths in mine:
        parts = []
        for p in paths:
            parts.append(encode_holes(vqgan, load_rgb_scaled(p, args.resolution), p, args.sides, args.holes,
                                      args.slack, args.fill))
            bar.update(1)
        tokens, context, hole = (torch.cat(ts) for ts in zip(*parts))
        labels = torch.tensor([labels_of[p] for p in paths for _ in range(args.holes)]) if labels_of else None
        write_hole_shard(out / name, tokens, context, hole, labels, vqgan.vocab_size)
    bar.close()
    dist.barrier()
    if dist.is_main():
        if base is not None:  # the base's shards first, as paths from this folder
            shards = {split: [os.path.relpath(Path(args.extend) / name, out) for name in base["shards"].get(split, [])]
                      + names for split, names in shards.items()}
        write_manifest(out, {"kind": HOLE_SET_KIND, "vocab_size": vqgan.vocab_size, "height": grid, "width": grid,
                             "num_classes": len(class_names), "class_names": class_names, "decoder": "vqgan",
                             "vqgan": str(args.vqgan), "token_version": vqgan.token_version,
                             "images": str(args.images), "resolution": args.resolution,
                             "holes_per_image": args.holes, "sides": list(args.sides), "slack": args.slack,
                             "fill": args.fill, "val_fraction": args.val_fraction, "subset": args.subset,
                             "shards": shards, **({"extends": str(args.extend)} if base is not None else {})})
        print(f"hole set written to {out} ({len(files)} images x {args.holes} holes of sides "
              f"{', '.join(map(str, args.sides))}, {grid}x{grid} tokens)")
    dist.cleanup()
    return 0


# what every hole of one set must share: the manifest key and this build's value of it
HOLE_SETTINGS = {"resolution": "resolution", "holes_per_image": "holes", "sides": "sides", "slack": "slack",
                 "fill": "fill", "val_fraction": "val_fraction"}


def extended_holes(args, token_version: str, grid: int) -> dict:
    """The manifest of the hole set --extend names, checked against this build: the same encoding,
    the same kind of holes, and the same image folder, of which it holds exactly the share its
    record names (checked by the image list's digest), so this build encodes the rest."""
    where = f"--extend {args.extend}"
    if Path(args.extend).resolve() == Path(args.out).resolve():
        raise InputError(f"{where} is --out itself: give the grown set another --out")
    if args.limit:
        raise InputError(f"{where}: --limit does not combine with --extend (the grown set would miss the images "
                         "past the limit); drop --limit")
    base = read_manifest(args.extend)
    if base.get("kind") != HOLE_SET_KIND:
        raise InputError(f"{where} is a latent dataset, not a hole set: give a folder written by "
                         "sundae-build-hole-set")
    if base.get("token_version") != token_version:
        raise InputError(f"{where} was encoded with token version {base.get('token_version')}, "
                         f"--vqgan {args.vqgan} gives {token_version}: extend it with the VQ-GAN that built it")
    for key, flag in HOLE_SETTINGS.items():
        mine = list(getattr(args, flag)) if key == "sides" else getattr(args, flag)
        if base.get(key) != mine:
            raise InputError(f"{where} was built with --{flag.replace('_', '-')} {base.get(key)}, not {mine}: "
                             "give the same value, so that its holes and the new ones are alike")
    if base.get("height") != grid:
        raise InputError(f"{where} has {base.get('height')}x{base.get('width')} token grids, this VQ-GAN gives "
                         f"{grid}x{grid} at --resolution {args.resolution}: use the VQ-GAN that built it")
    record = read_build_record(Path(args.extend)) or {}
    folder = record.get("images") or base.get("images", "")
    if not folder or Path(folder).resolve() != Path(args.images).resolve():
        raise InputError(f"{where} was built from the images in {folder or 'an unrecorded folder'}, not "
                         f"{args.images}: --extend grows a hole set over its own image folder (give that "
                         "folder); build other images' holes as a set of their own")
    base["subset"] = share = float(base.get("subset", 1.0))
    if share >= 1:
        raise InputError(f"{where} holds every image of {args.images} already: nothing to add")
    if args.subset <= share:
        raise InputError(f"{where} holds the {share:g} share of {args.images} already: give a larger --subset "
                         "(1 = every image)")
    # what the base holds, from its record: the images of its share (above its own base's, if any)
    held = [p for p in image_paths(args.images) if in_subset(p, share, float(record.get("subset_from", 0.0)))]
    digest, count = record.get("image_list_sha256"), record.get("image_count", record.get("files"))
    if (digest is None and count is None) or (digest is not None and digest != image_list_digest(held, Path(args.images))) \
            or (count is not None and count != len(held)):
        raise InputError(f"{where} does not hold the {share:g} share of {args.images} as the folder is now (it was "
                         "built with --limit, or images were added or removed since): rebuild it, or build the "
                         "whole set afresh with --subset 1 and no --extend")
    return base


def grown_classes(base: dict, here: list[str], base_path: str) -> list[str]:
    """The grown set's class names: the base's in their order (its labels keep their numbers),
    then this build's folders it did not meet (its share may have missed a small class)."""
    names = list(base.get("class_names") or [])
    if bool(names) != bool(here):
        raise InputError(f"--extend {base_path} is {'labelled' if names else 'not labelled'}: "
                         f"{'add' if names else 'drop'} --labels-from-folders to match it")
    return names + sorted(set(here) - set(names))


def check_settings(out: Path, settings: dict) -> None:
    """Record what the shards are built from (build_latents' build.json), or refuse a folder built
    otherwise: a resumed build skips the shards already there, which must then be of the same holes."""
    if (out / BUILD_RECORD).is_file():
        check_out_folder(out, settings)  # build_latents' comparison with the record
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} is not empty and is not a hole set; give another --out")
    dist.barrier()  # every process has looked before the first writes the record
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        write_build_record(out, settings)
    dist.barrier()


def sides_list(text: str) -> tuple[int, ...]:
    try:
        sides = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sides takes whole numbers of tokens like 6,8,10, got {text!r}") from None
    if not sides or min(sides) < 1:
        raise argparse.ArgumentTypeError(f"--sides takes positive token counts like 6,8,10, got {text!r}")
    return sides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument("--out", required=True, help="output folder of shards + manifest.json")
    parser.add_argument("--vqgan", required=True, help="VQ-GAN checkpoint (.safetensors) that encodes the images")
    parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--resolution", type=int, default=1024, help="square size images are resized to (default 1024)")
    parser.add_argument("--holes", type=int, default=2, help="holes per image (default 2)")
    parser.add_argument("--sides", type=sides_list, default=(6, 8, 10), metavar="S1,S2,...",
                        help="hole sides in tokens, one drawn per hole (default 6,8,10)")
    parser.add_argument("--slack", type=float, default=0.1,
                        help="hole windows whose subject share is within this of the best are candidates (default 0.1)")
    parser.add_argument("--fill", choices=HIDE_FILLS, default="mean",
                        help="how the hole's pixels are hidden before encoding (default mean, as SUNDAE VQ Encode)")
    parser.add_argument("--val-fraction", type=float, default=HELD_OUT_FRACTION,
                        help="share of source images held out (image_data.is_validation)")
    parser.add_argument("--shard-size", type=int, default=128, help="source images per shard (default 128)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images (0 = all)")
    parser.add_argument("--subset", type=float, default=1.0,
                        help="use only this stable random share of the images (1 = all; each encode of a "
                             "1024 px emoji takes ~3 s of one CPU thread, three per image at --holes 2)")
    parser.add_argument("--extend", default="", metavar="HOLES",
                        help="a hole set built on a smaller --subset (or other images): encode only what this "
                             "build adds, and list the base's shards before the new ones")
    parser.add_argument("--labels-from-folders", action="store_true",
                        help="class label = name of the image's first-level subfolder")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.holes < 1:
        parser.error("--holes must be at least 1")
    return run_guarded(lambda: build(args), reuse_memory=True)


if __name__ == "__main__":
    raise SystemExit(main())
