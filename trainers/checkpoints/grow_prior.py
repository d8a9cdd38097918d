"""`sundae-grow-prior`: a deeper prior that computes exactly what a trained one computes.

    sundae-grow-prior sundae_core/default_models/prior.safetensors --depth "1,(2,10,2),1" \
        --out runs/grown/prior_grown.safetensors

Every block list of the hourglass (each level's pre and post blocks, the valley's) may get blocks
appended. A new block starts as the identity: its attention output and its MLP's last layer are
zeroed, so `x + attn(...) + mlp(...)` returns x, and the grown prior's logits are the source's
(the CLI checks this on a random batch before it writes the file). Training then gives the new
blocks weight through those zeroed layers first (function-preserving growth, as in Net2Net: Chen
et al. 2016, "Net2Net: Accelerating Learning via Knowledge Transfer").

Why: the campaign's prior fills 8 x 8-token holes in its own training emoji barely better than in
held-out ones (hole LPIPS 0.231 against 0.257, one-step top-1 0.425 against 0.383;
`sundae-eval-default --split train`), so it underfits the task rather than memorising it. More
capacity where the hole's context is gathered (the coarse levels, cheap: the 8 x 8 valley costs
a sixteenth of a full-resolution block per block) is the lever that test points at, and growing
keeps the 1.6 M samples the prior has already seen instead of training a larger one from scratch.
Fine-tune the output with `train.init` and `model.depth` set to the grown depth, and give the new
blocks a rate of their own with `train.grown_lr_scale` (a multiplier of `train.lr`; the file
records the depth it grew from, so the trainer knows which blocks are new): at a fine-tune's
rate their zeroed layers barely move (std 5e-4 after 250 CPU steps at lr 5e-5, where the trained
blocks' output layers have std ~0.045).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from sundae_core.checkpoint import read_metadata, save_checkpoint
from sundae_core.cli import doc_summary, run_guarded
from sundae_core.config import HourglassConfig, parse_depth, to_dict
from sundae_core.errors import ConfigError, InputError
from sundae_core.hourglass import Block, HourglassTransformer
from sundae_core.models import TOKEN_VERSION_KEY, load_prior

# metadata key: the source file, its step and its depth
GROWN_FROM = "grown_from"


def grown_from_record(source: str | Path, **shape) -> dict[str, str]:
    """The metadata a grown file carries: the source file's name and step, and its `shape` before growing."""
    return {GROWN_FROM: json.dumps({"file": Path(source).name, "step": read_metadata(source).get("step", ""),
                                    **shape})}


def parse_depth_text(text: str):
    """--depth "1,(2,10,2),1" -> (1, (2, 10, 2), 1); "12" -> 12."""
    cleaned = text.replace(" ", "")
    try:
        value = json.loads("[" + cleaned.replace("(", "[").replace(")", "]") + "]")
    except json.JSONDecodeError:
        raise InputError(f"--depth {text!r}: write the hourglass depth as the config does, e.g. "
                         "\"1,(2,10,2),1\" or \"12\"") from None
    value = value[0] if len(value) == 1 else value

    def freeze(v):
        return tuple(freeze(x) for x in v) if isinstance(v, list) else v

    return freeze(value)


def _lists(depth) -> list[int]:
    """Block counts in a fixed order: (pre, post) of each shortening outermost first, then the valley."""
    levels = parse_depth(depth)
    return [n for pair in levels.shortened for n in pair] + [levels.valley]


def check_growth(old, new) -> None:
    """InputError unless `new` has `old`'s levels with as many blocks or more in every list, and more in one."""
    try:
        old_levels, new_levels = parse_depth(old), parse_depth(new)
    except ConfigError as err:
        raise InputError(f"--depth: {err}") from None
    if len(old_levels.shortened) != len(new_levels.shortened):
        raise InputError(f"--depth {new}: the source prior has {len(old_levels.shortened)} shortenings "
                         f"(depth {old}); growing adds blocks within its levels, it cannot add or remove levels")
    pairs = list(zip(_lists(old), _lists(new)))
    if any(n < o for o, n in pairs):
        raise InputError(f"--depth {new}: every block count must be at least the source's (depth {old}); "
                         "growing never removes blocks")
    if all(n == o for o, n in pairs):
        raise InputError(f"--depth {new} is the source's own depth: give more blocks somewhere")


def identity_block_(block: Block) -> Block:
    """Zero the layers that write into the residual stream, so the block returns its input."""
    with torch.no_grad():
        for layer in (block.attn.to_out, block.mlp[2]):
            layer.weight.zero_()
            layer.bias.zero_()
    return block


def grow(source: HourglassTransformer, depth, generator_seed: int = 0) -> HourglassTransformer:
    """The grown prior (float32): the source's weights where they exist, new blocks initialised as
    the prior's own init does and then made identities."""
    check_growth(source.config.depth, depth)
    torch.manual_seed(generator_seed)  # nn.Module init draws from the global generator
    model = HourglassTransformer(replace(source.config, depth=depth)).eval()
    load_source_weights(model, source, Block, identity_block_, "prior")
    return model


def load_source_weights(grown: torch.nn.Module, source: torch.nn.Module, block_type: type[torch.nn.Module],
                        identity: Callable[[torch.nn.Module], object], what: str) -> None:
    """Copy `source`'s weights into `grown` (as float32) and make each `block_type` block that is
    wholly new in `grown` (appended by the growth) an identity with `identity`; InputError where
    the two differ otherwise. Shared by sundae-grow-prior and sundae-grow-decoder."""
    missing, unexpected = grown.load_state_dict({k: v.float() for k, v in source.state_dict().items()},
                                                strict=False)
    if unexpected:
        raise InputError(f"the source {what} has weights the grown one lacks ({unexpected[0]!r}): "
                         f"is it a {what} of this code?")
    missing = set(missing)
    for prefix, block in grown.named_modules():
        keys = {f"{prefix}.{name}" for name in block.state_dict()}
        if isinstance(block, block_type) and keys <= missing:
            identity(block)
            missing -= keys
    if missing:
        raise InputError(f"the source {what} lacks {sorted(missing)[0]!r}, which is not part of an added block: "
                         "its weights do not match its own config")


def added_parameters(init: str | Path, config: HourglassConfig) -> set[str]:
    """Names of the parameters of a `config` prior that sundae-grow-prior added to the one `init`
    grew from (its grown_from record names that prior's depth); ConfigError if `init` has no record."""
    return grown_parameters(init, config, HourglassTransformer, "depth", "sundae-grow-prior")


def grown_parameters(init: str | Path, config, model_class: type[torch.nn.Module], field: str, tool: str) -> set[str]:
    """Names of the parameters a `model_class` of `config` has and the model `init` grew from lacks:
    that model is `config` with `field` as the file's grown_from record gives it."""
    record = read_metadata(init).get(GROWN_FROM)
    if not record:
        raise ConfigError(f"train.grown_lr_scale: train.init {init} was not made by {tool} (its file has "
                          "no grown_from record), so no blocks are new; leave grown_lr_scale at 1")
    source = json.loads(record)[field]
    with torch.device("meta"):  # names only: no weights are allocated
        before = {name for name, _ in model_class(replace(config, **{field: source})).named_parameters()}
        after = {name for name, _ in model_class(config).named_parameters()}
    return after - before


def max_logit_change(source: HourglassTransformer, grown: HourglassTransformer, seed: int = 0) -> float:
    """Largest |logit difference| between the two on a random batch (tokens and, if any, labels)."""
    g = torch.Generator().manual_seed(seed)
    c = source.config
    tokens = torch.randint(0, c.vocab_size, (2, 8, 8), generator=g)
    labels = torch.randint(0, c.num_classes + 1, (2,), generator=g) if c.num_classes else None
    with torch.no_grad():
        return float((source(tokens, labels) - grown(tokens, labels)).abs().max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sundae-grow-prior", description=doc_summary(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("source", help="prior checkpoint to grow")
    parser.add_argument("--depth", required=True,
                        help="the grown hourglass depth, shaped as the source's (e.g. \"1,(2,10,2),1\" from "
                             "1,(2,6,2),1): new blocks are appended to each list that grows")
    parser.add_argument("--out", required=True, help="where to write the grown prior (.safetensors)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new blocks' inner layers (default 0)")
    args = parser.parse_args(argv)

    def body() -> int:
        depth = parse_depth_text(args.depth)
        source = load_prior(args.source, dtype=torch.float32)  # float32 loads stay unpacked: plain state keys
        grown = grow(source, depth, args.seed)
        change = max_logit_change(source, grown)
        if change > 1e-4:
            raise RuntimeError(f"growing changed the logits by {change:.2g}: the new blocks are not identities")
        meta = grown_from_record(args.source, depth=to_dict(source.config)["depth"])
        if grown.config.token_version:
            meta[TOKEN_VERSION_KEY] = grown.config.token_version
        save_checkpoint(args.out, grown.state_dict(), kind="prior", config=to_dict(grown.config), metadata=meta)
        load_prior(args.out)  # the file a user gets loads as a prior, or this run fails here
        old_n, new_n = sum(_lists(source.config.depth)), sum(_lists(depth))
        print(f"wrote {args.out}: depth {args.depth} ({new_n} blocks, {old_n} before), logits within "
              f"{change:.1g} of the source's; fine-tune it with --set train.init={args.out} and "
              f"model.depth set to the grown depth")
        return 0

    return run_guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
