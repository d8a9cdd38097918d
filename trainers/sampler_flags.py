"""The sampler flags every sampling CLI shares, with one wording and one set of defaults."""

from __future__ import annotations

import argparse

from sundae_core.sampler import SELECTIONS


def add_sampler_flags(group: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    """--steps, --temperature START END, --proportion, --min-steps (the paper's FFHQ1024 defaults),
    --selection, --compile."""
    group.add_argument("--steps", type=int, default=100, help="sampling step budget T (default 100)")
    group.add_argument("--temperature", type=float, nargs=2, default=(1.0, 0.7), metavar=("START", "END"),
                       help="temperature annealed linearly from START to END (default 1.0 0.7)")
    group.add_argument("--proportion", type=float, default=0.5, help="sample proportion p (default 0.5)")
    group.add_argument("--min-steps", type=int, default=10,
                       help="steps before self-stopping may end a sample (default 10)")
    group.add_argument("--selection", choices=SELECTIONS, default="random",
                       help="which positions update each step: 'random' (each with probability p, the paper) "
                            "or 'confidence' (the p share whose proposal the model is surest of)")
    group.add_argument("--compile", action="store_true",
                       help="run the prior through torch.compile (needs a C++ compiler; compiling takes a "
                            "minute or two, so it pays for long runs)")
