"""Token datasets on disk: shards of (n h w) tokens (+ labels), one safetensors file each.

<dir>/manifest.json  {"vocab_size", "height", "width", "num_classes", "decoder": "vqgan"|"pixels",
                       "shards": {"train": [...], "val": [...]},
                       "class_names": [...] (optional: names of labels 0..num_classes-1)}
<dir>/<split>-00000.safetensors  tokens (n h w) int16/int32, labels (n,) int64 (optional)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from sundae_core import bounded_json
from sundae_core.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from sundae_core.errors import ConfigError, InputError

SHARD_KIND = "latent_shard"
# the settings a build ran with (sundae-build-latents, sundae-build-hole-set), beside manifest.json
BUILD_RECORD = "build.json"


@dataclass(frozen=True)
class LatentDataConfig:
    path: str = ""
    # How training draws classes: a sequence's chance is proportional to its class's count raised
    # to (class_balance - 1). 1 = every sequence alike (classes in their natural proportion), 0 =
    # every class alike, between = a compromise. A set extended with many images of one class
    # (sundae-prepare-emoji --variants: 1355 of its 1357 are People & Body) skews the natural one.
    class_balance: float = 1.0
    # a hole set (sundae-build-hole-set) of the same tokens: train.hole_share of each batch comes
    # from it, and validation logs val_hidden_hole_top1 on its held-out holes; "" = none
    hole_set: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.class_balance <= 1:
            raise ConfigError(f"data.class_balance is an exponent in [0, 1] (1 = natural proportions, "
                              f"0 = every class alike), got {self.class_balance}")


def grey_level_images(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The "pixels" decoder: grey-level tokens (b h w) in 0..vocab_size-1 -> images (b 3 h w) in
    [-1, 1] (MNIST-style pixel priors; the one decoding sample grids and evaluations share)."""
    x = tokens.float() / (vocab_size - 1) * 2 - 1
    return x[:, None].expand(-1, 3, -1, -1)


def write_shard(path: Path, tokens: torch.Tensor, labels: torch.Tensor | None, vocab_size: int) -> None:
    dtype = torch.int16 if vocab_size <= 32767 else torch.int32
    tensors = {"tokens": tokens.to(dtype)}
    if labels is not None:
        tensors["labels"] = labels.long()
    save_checkpoint(path, tensors, kind=SHARD_KIND)


def write_manifest(root: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=1)
    atomic_write(root / "manifest.json", lambda tmp: Path(tmp).write_text(text))


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise InputError(f"{root} is not a latent dataset (no manifest.json); build one with sundae-build-latents")
    try:
        return bounded_json.loads(path.read_text())  # nesting bounded: no RecursionError traceback
    except ValueError as err:
        raise InputError(f"{path}: not a readable manifest ({err}); rebuild it with sundae-build-latents") from None


class TokenSet:
    """One split of a latent dataset, in RAM; `class_balance` as in LatentDataConfig."""

    def __init__(self, root: str | Path, split: str, class_balance: float = 1.0):
        self.root = Path(root)
        self.manifest = read_manifest(root)
        shards = self.manifest["shards"].get(split, [])
        if not shards:
            raise InputError(f"latent dataset {root} has no {split!r} shards")
        toks, labs = [], []
        for name in shards:
            t = load_checkpoint(Path(root) / name, kind=SHARD_KIND).tensors
            toks.append(t["tokens"].long())
            if "labels" in t:
                labs.append(t["labels"])
        self.tokens = torch.cat(toks)
        self.labels = torch.cat(labs) if labs else None
        self.weights = None if class_balance == 1 else self._balanced(class_balance, root)

    def _balanced(self, class_balance: float, root) -> torch.Tensor:
        """Per-sequence sampling weights: count(class) ** (class_balance - 1)."""
        if self.labels is None:
            raise ConfigError(f"data.class_balance={class_balance} but {root} has no class labels; leave it at 1")
        counts = torch.bincount(self.labels).double()
        return counts[self.labels] ** (class_balance - 1)

    def check_fits(self, vocab_size: int, num_classes: int, root: str | Path) -> None:
        """Every token id below `vocab_size` and, for a conditional prior, every label below
        `num_classes`: the compiled step does not check its inputs (a label past the null class is a
        device-side assert on a GPU, after the compile), and a label equal to `num_classes` would
        silently train the null class that guidance relies on."""
        low, high = int(self.tokens.min()), int(self.tokens.max())
        if low < 0 or high >= vocab_size:
            raise ConfigError(f"{root} holds token ids {low}..{high} but model.vocab_size={vocab_size}; set "
                              "model.vocab_size to the VQ-GAN's codebook size, or rebuild the set with sundae-build-latents")
        if num_classes and self.labels is not None:
            low, high = int(self.labels.min()), int(self.labels.max())
            if low < 0 or high >= num_classes:
                raise ConfigError(f"{root} holds class labels {low}..{high} but model.num_classes={num_classes}; "
                                  f"set model.num_classes={high + 1} (label {num_classes} is the null class "
                                  "that guidance uses)")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.weights is None:
            idx = torch.randint(0, len(self), (size,), generator=generator)
        else:
            idx = torch.multinomial(self.weights, size, replacement=True, generator=generator)
        return self.tokens[idx], None if self.labels is None else self.labels[idx]


# ---------------------------------------------------------------------------------------------
# Hole sets (sundae-build-hole-set): grids with a hole, beside the tokens the prior is given
# around it when the hole's pixels are hidden before encoding

HOLE_SET_KIND = "hole_set"


def write_hole_shard(path: Path, tokens: torch.Tensor, context: torch.Tensor, hole: torch.Tensor,
                     labels: torch.Tensor | None, vocab_size: int) -> None:
    dtype = torch.int16 if vocab_size <= 32767 else torch.int32
    tensors = {"tokens": tokens.to(dtype), "context": context.to(dtype), "hole": hole.to(torch.uint8)}
    if labels is not None:
        tensors["labels"] = labels.long()
    save_checkpoint(path, tensors, kind=SHARD_KIND)


class HoleRows(NamedTuple):
    """Rows of a hole set: tokens (b h w) the targets, context (b h w) the tokens around each hole
    as the workflow encodes them, hole (b h w) bool, labels (b,) or None."""

    tokens: torch.Tensor
    context: torch.Tensor
    hole: torch.Tensor
    labels: torch.Tensor | None


class HoleSet:
    """One split of a hole set, in RAM: tokens (n h w) the targets, context (n h w) the tokens
    around each hole as the workflow encodes them, hole (n h w) bool, labels (n,) or None.
    `manifest`: root's manifest when the caller has read it already (both splits share one)."""

    def __init__(self, root: str | Path, split: str, manifest: dict | None = None):
        self.manifest = read_manifest(root) if manifest is None else manifest
        if self.manifest.get("kind") != HOLE_SET_KIND:
            raise InputError(f"{root} is a latent dataset, not a hole set (data.hole_set takes a folder "
                             "written by sundae-build-hole-set)")
        shards = self.manifest["shards"].get(split, [])
        if not shards:
            raise InputError(f"hole set {root} has no {split!r} shards")
        parts = [load_checkpoint(Path(root) / name, kind=SHARD_KIND).tensors for name in shards]
        missing = {"tokens", "context", "hole"} - set(parts[0])
        if missing:
            raise InputError(f"{root}/{shards[0]} lacks {', '.join(sorted(missing))}: not a hole-set shard; "
                             "rebuild it with sundae-build-hole-set")
        self.tokens = torch.cat([t["tokens"].long() for t in parts])
        self.context = torch.cat([t["context"].long() for t in parts])
        self.hole = torch.cat([t["hole"].bool() for t in parts])
        self.labels = torch.cat([t["labels"] for t in parts]) if "labels" in parts[0] else None

    def check_matches(self, tokens: "TokenSet", root: str | Path) -> None:
        """The hole set speaks the training set's tokens: the same VQ-GAN and grid (its labels are
        not used: hole rows train the null class, as the inpainting workflow samples)."""
        mine, theirs = self.manifest, tokens.manifest
        for key in ("token_version", "height", "width", "vocab_size"):
            if mine.get(key) != theirs.get(key):
                raise ConfigError(f"data.hole_set {root} has {key}={mine.get(key)!r} but data.path has "
                                  f"{theirs.get(key)!r}: rebuild the hole set with sundae-build-hole-set "
                                  "--vqgan of the training set's VQ-GAN and its --resolution")
        # the same held-out images: a smaller fraction would train on the set's held-out images as
        # hole rows, a larger one score val_hidden_hole_top1 on images the prior trained on
        held_out, split_with = mine.get("val_fraction"), recorded_val_fraction(tokens)
        if None not in (held_out, split_with) and held_out != split_with:
            raise ConfigError(f"data.hole_set {root} has val_fraction={held_out} but data.path was split with "
                              f"val_fraction={split_with}, so their held-out images differ: rebuild the hole set "
                              f"with sundae-build-hole-set --val-fraction {split_with}")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def batch(self, size: int, generator: torch.Generator) -> HoleRows:
        """`size` rows drawn at random."""
        idx = torch.randint(0, len(self), (size,), generator=generator)
        return HoleRows(self.tokens[idx], self.context[idx], self.hole[idx],
                        None if self.labels is None else self.labels[idx])


def read_build_record(root: Path) -> dict | None:
    """root's build record (the settings its build ran with); None where it has none or it is not a
    readable JSON object."""
    path = root / BUILD_RECORD
    try:
        record = bounded_json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def recorded_val_fraction(tokens: TokenSet) -> float | None:
    """The --val-fraction that split a token set, which sundae-build-latents records in its build
    record only (not in manifest.json); None for a set without a readable one (built before the
    record existed, or an MNIST set, whose split is MNIST's own)."""
    record = read_build_record(tokens.root)
    return None if record is None else record.get("val_fraction")
