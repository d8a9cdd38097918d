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
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path

from sundae_core.checkpoint import atomic_write
from sundae_core.cli import doc_summary, run_guarded
from sundae_core.errors import MissingAssetError

from .image_data import HELD_OUT_FRACTION, SKIN_TONES, emoji_key, is_validation

FLUENT = "@lobehub/fluent-emoji-3d/assets"
DATASOURCE = "emoji-datasource/emoji.json"
INSTALL = "npm install @lobehub/fluent-emoji-3d@1.1.0 emoji-datasource@16.0.0"
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


def curate(files: list[Path], table: dict[str, str]) -> dict[str, tuple[Path, str]]:
    """key -> (the file kept for that emoji, its group); unlabelled and Component files dropped."""
    by_key: dict[str, list[Path]] = defaultdict(list)
    for f in sorted(files):
        by_key[emoji_key(f.stem)].append(f)
    chosen = {}
    for key, group in sorted(by_key.items()):
        plain = [f for f in group if not SKIN_TONES & set(f.stem.lower().split("-"))]
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


def prepare(assets: Path, out: Path, variants: bool = False) -> dict:
    fluent, source = assets / FLUENT, assets / DATASOURCE
    if not fluent.is_dir() or not source.is_file():
        raise MissingAssetError(f"{assets} lacks {FLUENT} or {DATASOURCE}: run `{INSTALL}` in its parent folder")
    files = sorted(fluent.glob("*.webp"))
    chosen = curate(files, category_table(source))
    picked = training_variants(files, chosen) if variants else [(k, p, c) for k, (p, c) in chosen.items()]
    catalog = []
    for key, path, category in picked:
        folder = out / GROUPS[category]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / path.name)
        catalog.append({"file": f"{GROUPS[category]}/{path.name}", "key": key, "group": category,
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
    args = parser.parse_args(argv)

    def body() -> int:
        s = prepare(Path(args.assets), Path(args.out), args.variants)
        what = "skin-tone variants of training emoji" if args.variants else "emoji"
        print(f"{s['emoji']} {what} from {s['source_files']} files written to {args.out}; "
              f"{s['held_out']} held out ({HELD_OUT_FRACTION:.0%} rule); per group: {s['groups']}")
        return 0

    return run_guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
