"""`sundae-extract-adapter`: a fine-tuned prior kept as a small adapter of the prior it started from.

    sundae-extract-adapter --base default --tuned runs/holes_step400.safetensors --rank 16 \
        --purpose "inpainting: trained on hidden holes" --out inpaint_adapter.safetensors

Each weight matrix's change is kept at rank --rank (truncated SVD), the small tensors whole
(sundae_core/adapters.py); the file is a few MB where the prior is 24. Load it in a workflow with
**SUNDAE Apply Prior Adapter** after the base prior's loader. The report says how much of the
change each rank keeps (its share of the change's squared norm); judge the adapter by what the
fine-tune was for (sundae-eval-default --adapter for inpainting adapters), as rank 16 of a
fine-tune that keeps half the norm may keep most of the skill.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from sundae_core.adapters import apply_adapter, extract_adapter, load_adapter, save_adapter
from sundae_core.cli import doc_summary, run_guarded
from sundae_core.errors import InputError
from sundae_core.models import load_prior, model_path

from .average_models import FREE_FIELDS

MAX_RANK = 256


# settings of how a prior trains, not of what its weights compute: a fine-tune may change them
# (sundae-average-models' free fields, and where the attention's dropout goes)
TRAINING_ONLY = FREE_FIELDS | {"attention_dropout_at"}


def config_differences(base, tuned) -> list[str]:
    """`field base -> tuned` for every config field that differs, training-only ones aside."""
    return [f"{f.name} {getattr(base, f.name)!r} -> {getattr(tuned, f.name)!r}" for f in dataclasses.fields(base)
            if f.name not in TRAINING_ONLY and getattr(base, f.name) != getattr(tuned, f.name)]


def kept_share(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], changes: dict[str, torch.Tensor]) -> float:
    """The adapter's share of the fine-tune's whole change (squared norms over every tensor)."""
    total = sum(float((tuned[k].double() - base[k].double()).square().sum()) for k in base)
    missed = sum(float((tuned[k].double() - base[k].double() - changes.get(k, 0.0)).square().sum()) for k in base)
    return 1.0 - missed / total if total else 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sundae-extract-adapter", description=doc_summary(__doc__))
    parser.add_argument("--base", default="default", help="the prior the fine-tune started from ('default': "
                                                          "the embedded one)")
    parser.add_argument("--tuned", required=True, help="the fine-tuned prior (a checkpoint of the same config)")
    parser.add_argument("--rank", type=int, default=16, help="rank of each weight matrix's change (default 16)")
    parser.add_argument("--purpose", default="", help="what the fine-tune taught, stored in the file for people "
                                                      "choosing an adapter")
    parser.add_argument("--out", required=True, help="where to write the adapter (.safetensors)")
    args = parser.parse_args(argv)

    def body() -> int:
        if not 1 <= args.rank <= MAX_RANK:
            raise InputError(f"--rank must be in [1, {MAX_RANK}], got {args.rank}")
        base = load_prior(model_path(args.base, "prior"), dtype=torch.float32)
        tuned = load_prior(args.tuned, dtype=torch.float32)
        differ = config_differences(base.config, tuned.config)
        if differ:
            raise InputError(f"--tuned {args.tuned} is a prior of another config than --base {args.base} "
                             f"({', '.join(differ)}): an adapter holds the change of a fine-tune from the base")
        base_state, tuned_state = base.state_dict(), tuned.state_dict()
        adapter = extract_adapter(base_state, tuned_state, args.rank, base.config.token_version or "", args.purpose)
        if not adapter.tensors:
            raise InputError(f"--tuned {args.tuned} holds the same weights as --base {args.base}: nothing to keep")
        save_adapter(args.out, adapter)
        saved = load_adapter(args.out)  # the file a user gets loads and applies, or this fails here
        apply_adapter(base, saved)
        share = kept_share(base_state, tuned_state, saved.changes())
        size = sum(t.numel() * t.element_size() for t in saved.tensors.values())
        print(f"wrote {args.out}: rank {args.rank}, {len(saved.changes())} tensors changed, {size / 1e6:.2f} MB, "
              f"keeps {share:.1%} of the fine-tune's change (squared norm), base fingerprint "
              f"{saved.config.base_fingerprint}")
        return 0

    return run_guarded(body)


if __name__ == "__main__":
    raise SystemExit(main())
