"""Copy a trained model checkpoint for shipping: optionally cast to bf16 (half the size; the
samplers run models in bf16 anyway), keep its config, add provenance metadata.

    python -m trainers.checkpoints.export_model runs/prior/model.safetensors \
        sundae_core/default_models/prior.safetensors --bf16
"""

from __future__ import annotations

import argparse

import torch

from sundae_core.checkpoint import load_checkpoint, save_checkpoint
from sundae_core.models import TOKEN_VERSION_KEY, load_vqgan
from sundae_core.cli import doc_summary, run_guarded
from sundae_core.errors import CheckpointError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument("source", help="model.safetensors of a run (kind vqgan or prior)")
    parser.add_argument("target", help="where to write the shipped copy")
    parser.add_argument("--bf16", action="store_true", help="store floating-point weights as bfloat16")
    parser.add_argument("--note", action="append", default=[], metavar="KEY=VALUE",
                        help="extra metadata, e.g. --note data='Fluent Emoji 3D (MIT)' (repeatable)")
    args = parser.parse_args(argv)

    def body() -> int:
        ckpt = load_checkpoint(args.source)
        if ckpt.kind not in ("vqgan", "prior"):
            raise CheckpointError(f"{args.source}: a {ckpt.kind!r} file; only vqgan and prior models are exported")
        tensors = {k: v.to(torch.bfloat16) if args.bf16 and v.is_floating_point() else v
                   for k, v in ckpt.tensors.items()}
        # save_checkpoint writes kind, format and config afresh; the token version is kept (a copy
        # for people and tools: the weights and the config are what loaders check)
        meta = {k: v for k, v in ckpt.metadata.items() if not k.startswith("sundae.") or k == TOKEN_VERSION_KEY}
        version = (load_vqgan(args.source).token_version if ckpt.kind == "vqgan"
                   else ckpt.config.get("token_version", ""))
        if version:
            meta[TOKEN_VERSION_KEY] = version
        for item in args.note:
            key, _, value = item.partition("=")
            meta[key] = value
        save_checkpoint(args.target, tensors, kind=ckpt.kind, config=ckpt.config, metadata=meta)
        print(f"wrote {args.target} ({sum(t.numel() for t in tensors.values()) / 1e6:.1f} M values)")
        return 0

    return run_guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
