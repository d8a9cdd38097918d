"""The sampler flags every sampling CLI shares, built from sundae_core.sampler.SamplerSettings:
one spelling, the settings' defaults (or a CLI's own, given as a SamplerSettings) and their
limits, checked once when the flags are read."""

from __future__ import annotations

import argparse

from sundae_core.errors import InputError
from sundae_core.sampler import DEFAULT_SETTINGS, LIMITS, MEANINGS, SELECTIONS, SamplerSettingError, SamplerSettings

# The sampler of the shipped sampling workflows (workflows/unconditional_sampling.json; the class
# workflow adds guidance): on the embedded emoji model 16 steps keeping 80 % of the proposals score
# KID 0.040 against 0.055 for 50 steps keeping half (500 samples; model card), in a third of the
# time. The demo draws with it, and the prior trainer's sample-spread figure measures with it.
WORKFLOW_SAMPLER = SamplerSettings(steps=16, proportion=0.8)
# workflows/class_conditional_sampling.json's: the same with guidance 2 (guidance 1.5 and 3 scored
# within noise of each other on the class probe; 6 fills the canvas with texture). The demo's class
# grid and sundae-eval-default's class probe draw with it (tests hold both to the workflow).
CLASS_WORKFLOW_SAMPLER = WORKFLOW_SAMPLER.replace(guidance=2.0)

# SamplerSettings field -> the flag that sets it
FLAGS = {"steps": "--steps", "temperature": "--temperature", "proportion": "--proportion",
         "min_steps": "--min-steps", "self_stop": "--no-self-stop", "guidance": "--guidance",
         "selection": "--selection", "views": "--views"}


def _range(setting: str) -> str:
    low, high = LIMITS[setting]
    return f"{low:g}..{high:g}"


def add_sampler_flags(group: argparse._ArgumentGroup | argparse.ArgumentParser,
                      defaults: SamplerSettings = DEFAULT_SETTINGS, guidance: bool = True) -> None:
    """--steps, --temperature START END, --proportion, --min-steps, --no-self-stop, --selection,
    --views, --guidance (unless `guidance=False`: a CLI with its own guidance flag) and --compile.
    Defaults are `defaults`' (the paper's FFHQ1024 sampler unless a CLI chooses others)."""
    d = defaults.to_dict()
    group.add_argument("--steps", type=int, default=d["steps"],
                       help=f"{MEANINGS['steps']}, T ({_range('steps')}; default {d['steps']})")
    group.add_argument("--temperature", type=float, nargs=2, default=(d["temperature_start"], d["temperature_end"]),
                       metavar=("START", "END"),
                       help=f"temperature annealed linearly from START to END ({_range('temperature')}; 0 = the most "
                            f"likely token; default {d['temperature_start']:g} {d['temperature_end']:g})")
    group.add_argument("--proportion", type=float, default=d["proportion"],
                       help=f"{MEANINGS['proportion']}, p ({_range('proportion')}; default {d['proportion']:g})")
    group.add_argument("--min-steps", type=int, default=d["min_steps"],
                       help=f"{MEANINGS['min_steps']} ({_range('min_steps')}; default {d['min_steps']})")
    group.add_argument("--no-self-stop", dest="self_stop", action="store_false", default=d["self_stop"],
                       help="run every sample for all --steps (default: " + MEANINGS["self_stop"] + ")")
    group.add_argument("--selection", choices=SELECTIONS, default=d["selection"],
                       help=f"{MEANINGS['selection']} (default {d['selection']})")
    group.add_argument("--views", type=int, default=d["views"],
                       help=f"{MEANINGS['views']} ({_range('views')}; default {d['views']})")
    if guidance:
        group.add_argument("--guidance", type=float, default=d["guidance"],
                           help=f"{MEANINGS['guidance']} ({_range('guidance')}; default {d['guidance']:g})")
    group.add_argument("--compile", action="store_true",
                       help="run the prior through torch.compile (needs a C++ compiler; compiling takes a "
                            "minute or two, so it pays for long runs)")


def settings_from_args(args: argparse.Namespace, **changes) -> SamplerSettings:
    """The SamplerSettings the flags of `add_sampler_flags` give, with `changes` on top (a sweep
    value, one of several guidance scales); a flag's value out of range is an InputError naming
    the flag, a bad `changes` value the SamplerSettingError for the caller to place."""
    values = {"steps": args.steps, "temperature": tuple(args.temperature), "proportion": args.proportion,
              "min_steps": args.min_steps, "self_stop": args.self_stop, "selection": args.selection,
              "views": getattr(args, "views", 1)}
    if "guidance" not in changes and hasattr(args, "guidance"):
        values["guidance"] = args.guidance
    values.update(changes)
    try:
        return SamplerSettings(**values)
    except SamplerSettingError as err:
        if err.setting in changes:
            raise  # the caller knows where that value came from
        raise InputError(f"{FLAGS[err.setting]}: {err}") from None
