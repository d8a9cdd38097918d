"""Curate Fluent Emoji 3D into a labelled image folder: one image per emoji, one folder per group.

    npm install @lobehub/fluent-emoji-3d@1.1.0 emoji-datasource@16.0.0     (in data/assets)
    sundae-prepare-emoji --assets data/assets/node_modules --out data/emoji_groups

The recipe (also in the default model card):
- Skin-tone variants collapse to one image: the file whose name, with the skin-tone modifiers
  1f3fb-1f3ff and the variation selector fe0f removed, gives the emoji's key (`emoji_key`); of the
  files sharing a key, the one without a skin-tone modifier is kept (the default yellow tone),
  else the first by name.
- Labels: the `category` field of `emoji.json` in emoji-datasource (9 Unicode groups; the few
  "Component" images, skin-tone swatches and hair parts, are dropped). File names the data set
  spells differently (keycaps without leading zeros, subdivision flags joined with "_") are
  matched after normalising them.
- Output: `<out>/<group>/<file>.webp`, so `sundae-build-latents --labels-from-folders` labels
  each image with its folder, plus `<out>/catalog.json` (file, key, group, split).
- The held-out split is `image_data.is_validation` (a hash of the key), so a variant never lands
  on the other side of its default image.

`--variants` writes the other images instead: the skin-tone variants the recipe leaves out, of
training emoji only (so the held-out set stays the same), in the same group folders. Encoded with
`sundae-build-latents --extend LATENTS` they add to a latent set built from the default folder.
1355 of the 1357 are People & Body, so they shift the class balance towards people.

`--animated N` writes frames of Microsoft's animated Fluent emoji instead (the same 3D art in
motion: a smiley blinking, a dog tilting its head; `npm install` the four
`@lobehub/fluent-emoji-anim-K` packages, 1.0.0, MIT, ~730 MB): N frames spread evenly over each
animation of a training emoji in its default tone, named `<stem>__frame<index>.webp` (lossless), so
`emoji_key` gives the source emoji's key and every frame lands on the source's side of the split.
665 training emoji are animated, none of them symbols and 5 flags; held-out emoji and skin-tone
variants stay out.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from sundae_core.checkpoint import atomic_write
from sundae_core.cli import doc_summary, run_guarded
from sundae_core.errors import InputError, MissingAssetError

from .image_data import HELD_OUT_FRACTION, SKIN_TONES, emoji_key, is_validation

FLUENT = "@lobehub/fluent-emoji-3d/assets"
DATASOURCE = "emoji-datasource/emoji.json"
INSTALL = "npm install @lobehub/fluent-emoji-3d@1.1.0 emoji-datasource@16.0.0"
ANIMATED = tuple(f"@lobehub/fluent-emoji-anim-{k}/assets" for k in range(1, 5))
ANIMATED_INSTALL = "npm install " + " ".join(f"@lobehub/fluent-emoji-anim-{k}@1.0.0" for k in range(1, 5))
# Unicode group -> folder name; folders sort into the class indices the prior learns.
GROUPS = {
    "Activities": "activities",
    "Animals & Nature": "animals_nature",
    "Flags": "flags",
    "Food & Drink": "food_drink",
    "Objects": "objects",
    "People & Body": "people_body",
    "Smileys & Emotion": "smileys_emotion",
    "Symbols": "symbols",
    "Travel & Places": "travel_places",
}


def normalise_code(stem: str) -> str:
    """A Fluent file stem as emoji-datasource spells `unified`: 4+ hex digits per code point, "-"
    between them, and subdivision flags ending in their cancel tag e007f."""
    stem = stem.lower().replace("_", "-")
    parts = [p.rjust(4, "0") for p in stem.split("-")]
    if parts[0] == "1f3f4" and len(parts) > 1 and parts[1].startswith("e00") and parts[-1] != "e007f":
        parts.append("e007f")
    return "-".join(parts)


def category_table(emoji_json: Path) -> dict[str, str]:
    """Every spelling of every emoji (qualified, non-qualified, skin variations) -> its group."""
    table: dict[str, str] = {}
    for entry in json.loads(emoji_json.read_text()):
        codes = [entry.get("unified"), entry.get("non_qualified")]
        codes += [v.get("unified") for v in (entry.get("skin_variations") or {}).values()]
        for code in codes:
            if code:
                table[code.lower()] = entry["category"]
    return table


def has_skin_tone(path: Path) -> bool:
    return bool(SKIN_TONES & set(path.stem.lower().split("-")))


def curate(files: list[Path], table: dict[str, str]) -> dict[str, tuple[Path, str]]:
    """key -> (the file kept for that emoji, its group); unlabelled and Component files dropped."""
    by_key: dict[str, list[Path]] = defaultdict(list)
    for f in sorted(files):
        by_key[emoji_key(f.stem)].append(f)
    chosen = {}
    for key, group in sorted(by_key.items()):
        plain = [f for f in group if not has_skin_tone(f)]
        keep = (plain or group)[0]
        category = table.get(keep.stem.lower()) or table.get(normalise_code(keep.stem))
        if category in GROUPS:
            chosen[key] = (keep, category)
    return chosen


def training_variants(files: list[Path], chosen: dict[str, tuple[Path, str]]) -> list[tuple[str, Path, str]]:
    """(key, file, group) for every file `curate` left out whose emoji it kept and holds for
    training; a held-out emoji's variants stay out, so adding these cannot leak the held-out set."""
    kept = {path for path, _ in chosen.values()}
    extra = []
    for f in sorted(files):
        key = emoji_key(f.stem)
        if key in chosen and f not in kept and not is_validation(f):
            extra.append((key, f, chosen[key][1]))
    return extra


def frame_indices(n_frames: int, count: int) -> list[int]:
    """`count` frames spread evenly over an animation, each from the middle of its share of the
    frames (so frame 0, which often repeats the still, is taken only from short animations)."""
    count = min(count, n_frames)
    return sorted({int((i + 0.5) * n_frames / count) for i in range(count)})


def training_animations(files: list[Path], chosen: dict[str, tuple[Path, str]]) -> list[tuple[str, Path, str]]:
    """(key, file, group) for every animation of a training emoji in its default tone. Skin-tone
    variants stay out (1220 of them, all People & Body: they would make people two thirds of the
    frames), and so do the single-frame files the packages hold for emoji without an animation."""
    picked = []
    for f in sorted(files):
        key = emoji_key(f.stem)
        if key in chosen and not is_validation(f) and not has_skin_tone(f):
            with Image.open(f) as movie:
                if getattr(movie, "n_frames", 1) > 1:
                    picked.append((key, f, chosen[key][1]))
    return picked


def write_frames(animation: Path, folder: Path, count: int) -> list[str]:
    """Save `count` frames of `animation` into `folder` as lossless RGBA WebP; their file names."""
    names = []
    with Image.open(animation) as movie:
        for index in frame_indices(movie.n_frames, count):
            movie.seek(index)
            name = f"{animation.stem}__frame{index:03d}.webp"
            frame = movie.convert("RGBA")
            atomic_write(folder / name, lambda tmp: frame.save(tmp, format="WEBP", lossless=True))
            names.append(name)
    return names


def animation_files(assets: Path) -> list[Path]:
    folders = [assets / a for a in ANIMATED]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise MissingAssetError(f"--animated needs {', '.join(missing)}: run `{ANIMATED_INSTALL}` in {assets.parent}")
    return sorted(f for folder in folders for f in folder.glob("*.webp"))


def prepare(assets: Path, out: Path, variants: bool = False, animated: int = 0) -> dict:
    fluent, source = assets / FLUENT, assets / DATASOURCE
    if not fluent.is_dir() or not source.is_file():
        raise MissingAssetError(f"{assets} lacks {FLUENT} or {DATASOURCE}: run `{INSTALL}` in its parent folder")
    if variants and animated:
        raise InputError("--variants and --animated write different image sets: run them into separate --out folders")
    files = sorted(fluent.glob("*.webp"))
    chosen = curate(files, category_table(source))
    if animated:
        files = animation_files(assets)
        picked = training_animations(files, chosen)
    elif variants:
        picked = training_variants(files, chosen)
    else:
        picked = [(k, p, c) for k, (p, c) in chosen.items()]
    catalog = []
    for key, path, category in tqdm(picked, desc="emoji", unit="file", disable=len(picked) < 50):
        folder = out / GROUPS[category]
        folder.mkdir(parents=True, exist_ok=True)
        if animated:
            names = write_frames(path, folder, animated)
        else:
            shutil.copyfile(path, folder / path.name)
            names = [path.name]
        for name in names:
            catalog.append({"file": f"{GROUPS[category]}/{name}", "key": key, "group": category,
                            "split": "val" if is_validation(path) else "train"})
    summary = {"source_files": len(files), "emoji": len(catalog),
               "held_out": sum(c["split"] == "val" for c in catalog),
               "groups": {g: sum(c["group"] == g for c in catalog) for g in GROUPS}}
    text = json.dumps({"summary": summary, "files": catalog}, indent=1)
    atomic_write(out / "catalog.json", lambda tmp: Path(tmp).write_text(text))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument("--assets", default="data/assets/node_modules",
                        help=f"node_modules folder holding the two npm packages ({INSTALL})")
    parser.add_argument("--out", default="data/emoji_groups", help="output folder (one subfolder per group)")
    parser.add_argument("--variants", action="store_true",
                        help="write the skin-tone variants of the training emoji instead of one image per emoji")
    parser.add_argument("--animated", type=int, default=0, metavar="N",
                        help="write N frames of each training emoji's animation instead "
                             f"(needs `{ANIMATED_INSTALL}`)")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.animated < 0:
            raise InputError(f"--animated {args.animated}: give a number of frames per animation, 1 or more")
        s = prepare(Path(args.assets), Path(args.out), args.variants, args.animated)
        what = ("frames of training emoji's animations" if args.animated
                else "skin-tone variants of training emoji" if args.variants else "emoji")
        print(f"{s['emoji']} {what} from {s['source_files']} files written to {args.out}; "
              f"{s['held_out']} held out ({HELD_OUT_FRACTION:.0%} rule); per group: {s['groups']}")
        return 0

    return run_guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
