"""`sundae-average-models`: one prior, or one VQ-GAN decoder, whose weights are the (weighted)
mean of several checkpoints' (`sundae-average-priors` is the same command, its name until session 26).

    sundae-average-models runs/a/model.safetensors frozen/a_500.safetensors frozen/b.safetensors \
        --out soup.safetensors [--weights 2,1,1] [--bf16]

Fine-tunes that start from the same prior stay in one basin of the loss, so the mean of their
weights is itself a good model, and often a better one than any of them (weight averaging:
Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima"; Wortsman et al. 2022, "Model
soups"). On the campaign's CPU fine-tunes at batch 16 it is the cheapest lever there is: averaging
checkpoints of one run, or of runs from the same start, costs seconds and no training.

Priors must share the architecture, the vocabulary, the classes and the token version; settings
that leave the weights' shapes and meaning alone (dropout) may differ, and the output takes the
first source's. VQ-GANs must share the config and the token version: the mean of two encoders
would move the codes, and every token dataset and prior trained on them would no longer match
(sundae_core/token_version.py), so only decoders trained with the encoder frozen
(`train.freeze_encoder`) are averaged, and the encoding parts are the first source's, bit for bit.
Checkpoints of one decoder run at a constant rate swing about a better mean: steps 1400 and 2300
of session 26's run read 0.0870 and 0.0874 hole LPIPS, their mean 0.0851.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from sundae_core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sundae_core.cli import doc_summary, run_guarded
from sundae_core.errors import CheckpointError, InputError
from sundae_core.models import TOKEN_VERSION_KEY, load_prior, load_vqgan
from sundae_core.token_version import ENCODING_PARTS, token_version_of

# config fields that do not change what the weights mean; every other field must agree
FREE_FIELDS = frozenset({"dropout"})


def parse_weights(text: str | None, count: int) -> list[float]:
    """--weights "2,1,1" -> [0.5, 0.25, 0.25]; None -> equal shares."""
    if text is None:
        return [1.0 / count] * count
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise InputError(f"--weights {text!r}: give one number per source, separated by commas") from None
    if len(weights) != count:
        raise InputError(f"--weights has {len(weights)} numbers for {count} sources: give one per source")
    if any(not 0 <= w < math.inf for w in weights) or sum(weights) <= 0:
        raise InputError(f"--weights {text!r}: the weights must be finite, >= 0 and not all 0")
    total = sum(weights)
    return [w / total for w in weights]


KINDS = {"prior": ("priors", "priors of one architecture, vocabulary, class set and token version"),
         "vqgan": ("VQ-GANs", "VQ-GANs of one architecture and token version (decoders trained with the "
                              "encoder frozen)")}


def check_compatible(first: Checkpoint, other: Checkpoint, first_path: str, other_path: str) -> None:
    """CheckpointError naming the first field or tensor where `other` cannot be averaged with `first`."""
    if other.kind != first.kind:
        raise CheckpointError(f"{other_path}: is a {other.kind!r} checkpoint but {first_path} is a {first.kind!r} "
                              "one; average priors with priors and VQ-GANs with VQ-GANs")
    for key in sorted(set(first.config) | set(other.config)):
        if key not in FREE_FIELDS and first.config.get(key) != other.config.get(key):
            raise CheckpointError(f"{other_path}: its config has {key}={other.config.get(key)!r} but {first_path} "
                                  f"has {first.config.get(key)!r}; only {KINDS[first.kind][1]} can be averaged")
    if first.tensors.keys() != other.tensors.keys():
        missing = sorted(first.tensors.keys() ^ other.tensors.keys())[0]
        raise CheckpointError(f"{other_path}: its tensors differ from {first_path}'s (e.g. {missing!r})")
    for name, tensor in first.tensors.items():
        if other.tensors[name].shape != tensor.shape:
            raise CheckpointError(f"{other_path}: tensor {name!r} has shape {tuple(other.tensors[name].shape)}, "
                                  f"{first_path}'s {tuple(tensor.shape)}")


def check_same_tokens(checkpoints: list[Checkpoint], paths: list[str]) -> None:
    """CheckpointError unless every VQ-GAN turns pixels into the same ids (one token version)."""
    versions = [token_version_of(c.config, c.tensors) for c in checkpoints]
    for path, version in zip(paths[1:], versions[1:]):
        if version != versions[0]:
            raise CheckpointError(f"{path}: its encoder gives token version {version} but {paths[0]}'s gives "
                                  f"{versions[0]}; only decoders trained with the encoder frozen "
                                  "(train.freeze_encoder) can be averaged: a mean of encoders moves the codes")


def average(checkpoints: list[Checkpoint], weights: list[float]) -> dict[str, torch.Tensor]:
    """The weighted mean of every floating-point tensor, in float32; other tensors (integer
    buffers) and a VQ-GAN's encoding parts (identical in every source) are the first checkpoint's."""
    first = checkpoints[0].tensors
    keep = ENCODING_PARTS if checkpoints[0].kind == "vqgan" else ()
    mean = {}
    for name, tensor in first.items():
        if not tensor.is_floating_point() or name.startswith(keep):
            mean[name] = tensor
            continue
        total = torch.zeros(tensor.shape, dtype=torch.float32)
        for ckpt, weight in zip(checkpoints, weights):
            total.add_(ckpt.tensors[name].float(), alpha=weight)
        mean[name] = total
    return mean


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sundae-average-models", description=doc_summary(__doc__))
    parser.add_argument("sources", nargs="+", help="prior checkpoints, or VQ-GAN checkpoints of one token "
                                                   "version (two or more), from one start")
    parser.add_argument("--out", required=True, help="where to write the average (.safetensors)")
    parser.add_argument("--weights", help="one weight per source, comma-separated (normalised to sum 1; "
                                          "default: equal)")
    parser.add_argument("--bf16", action="store_true", help="store the weights as bfloat16 (as shipped)")
    args = parser.parse_args(argv)

    def body() -> int:
        if len(args.sources) < 2:
            raise InputError("give two or more checkpoints to average")
        weights = parse_weights(args.weights, len(args.sources))
        checkpoints = [load_checkpoint(path) for path in args.sources]
        kind = checkpoints[0].kind
        if kind not in KINDS:
            raise CheckpointError(f"{args.sources[0]}: is a {kind!r} checkpoint; priors and VQ-GANs can be averaged")
        for path, ckpt in zip(args.sources[1:], checkpoints[1:]):
            check_compatible(checkpoints[0], ckpt, args.sources[0], path)
        if kind == "vqgan":
            check_same_tokens(checkpoints, args.sources)
        tensors = average(checkpoints, weights)
        if args.bf16:
            tensors = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()}
        sources = [{"file": Path(p).name, "step": c.metadata.get("step", ""), "weight": round(w, 6)}
                   for p, c, w in zip(args.sources, checkpoints, weights)]
        meta = {"averaged_from": json.dumps(sources)}
        version = checkpoints[0].config.get("token_version") or checkpoints[0].metadata.get(TOKEN_VERSION_KEY)
        if version:
            meta[TOKEN_VERSION_KEY] = version
        save_checkpoint(args.out, tensors, kind=kind, config=checkpoints[0].config, metadata=meta)
        (load_prior if kind == "prior" else load_vqgan)(args.out)  # the file a user gets loads, or this fails here
        print(f"wrote {args.out}: the mean of {len(sources)} {KINDS[kind][0]}, weights "
              f"{', '.join(f'{w:.3g}' for w in weights)}")
        return 0

    return run_guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
