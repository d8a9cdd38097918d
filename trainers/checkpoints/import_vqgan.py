"""Convert a reference (taming-transformers) VQ-GAN checkpoint into this project's safetensors.

    sundae-import-vqgan last.ckpt --config model.yaml -o vqgan.safetensors

Input: a PyTorch-Lightning `.ckpt` ({"state_dict": ..., "global_step": ..., ...}) or a bare state
dict, keys as in the reference (`encoder.down.0.block.0.norm1.weight`, ...), optionally under the
`first_stage_model.` prefix of a checkpoint bundled with a transformer; the loss module's
`loss.*` weights (LPIPS, discriminator) are dropped. The YAML config supplies the architecture
(`model.params.{ddconfig, n_embed, embed_dim}`, or the same under
`model.params.first_stage_config.params`); without one it is read off the weight shapes.

The checkpoint is never unpickled with code execution: torch's `weights_only` loader rebuilds the
tensors and any other class Lightning stored becomes an inert placeholder (trainers.checkpoints.safe_pickle).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from sundae_core import bounded_yaml
from sundae_core.cli import run_guarded
from sundae_core.config import VQGANConfig, from_dict
from sundae_core.errors import CheckpointError, ConfigError, SundaeError, one_line
from sundae_core.models import build_with_weights, save_model

from .safe_pickle import load_torch_checkpoint

PREFIX = "first_stage_model."
# ddconfig keys of the reference that have no counterpart here, with the value we can honour.
_FIXED_DDCONFIG = {"double_z": False, "resamp_with_conv": True, "give_pre_end": False, "tanh_out": False}
_DDCONFIG_FIELDS = ("resolution", "in_channels", "out_ch", "ch", "ch_mult", "num_res_blocks",
                    "attn_resolutions", "z_channels", "dropout")
WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def extract_state(data: Any, source: str) -> tuple[dict[str, torch.Tensor], int]:
    """The first-stage weights of a loaded checkpoint, prefix stripped, `loss.*` dropped.

    Returns (state, number of keys dropped)."""
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{source}: no state_dict found (is this a VQ-GAN checkpoint?)")
    if any(str(k).startswith(PREFIX) for k in state):
        picked = {k[len(PREFIX):]: v for k, v in state.items() if str(k).startswith(PREFIX)}
    else:
        picked = {k: v for k, v in state.items() if not str(k).startswith("loss.")}
    for key, value in picked.items():
        what = f"{source}: state_dict entry {one_line(repr(key), 100)}"
        if not isinstance(key, str):
            raise CheckpointError(f"{what}: keys must be parameter names (text), not {type(key).__name__}")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{what} is not a tensor")
        if value.layout != torch.strided:
            raise CheckpointError(f"{what} is stored {str(value.layout).replace('torch.', '')}; save the "
                                  "weights dense (tensor.to_dense()) before importing")
        if value.dtype not in WEIGHT_DTYPES:
            raise CheckpointError(f"{what} is stored as {value.dtype}; only float16, bfloat16, float32 and "
                                  "float64 weights import")
    return picked, len(state) - len(picked)


def config_from_yaml(path: str | Path) -> VQGANConfig:
    """VQGANConfig from a reference model YAML (a VQModel config or a transformer's)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        doc = bounded_yaml.safe_load(path.read_bytes())  # bytes: yaml reports bad UTF-8 itself
    except bounded_yaml.YAMLShapeError as err:  # a "billion laughs" file
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a model config") from None
    model = doc.get("model") if isinstance(doc, dict) else None
    params = model.get("params") if isinstance(model, dict) else None
    if isinstance(params, dict) and "ddconfig" not in params and isinstance(params.get("first_stage_config"), dict):
        model = params["first_stage_config"]
        params = model.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("ddconfig"), dict):
        raise ConfigError(f"{path}: no model.params.ddconfig (or model.params.first_stage_config.params."
                          "ddconfig); is this a taming-transformers VQ-GAN config?")
    target = str(model.get("target", ""))
    if "Gumbel" in target or "EMAVQ" in target:
        raise ConfigError(f"{path}: {target} uses a different quantizer; only VQModel checkpoints import")
    if params.get("remap") is not None:
        raise ConfigError(f"{path}: codebook remapping (params.remap) is not supported")
    dd = dict(params["ddconfig"])
    for key, ok in _FIXED_DDCONFIG.items():
        if key in dd and dd.pop(key) != ok:
            raise ConfigError(f"{path}: ddconfig.{key} must be {ok} for a VQ-GAN")
    unknown = sorted(set(dd) - set(_DDCONFIG_FIELDS))
    if unknown:
        raise ConfigError(f"{path}: ddconfig key(s) {', '.join(unknown)} are not supported")
    for key in ("n_embed", "embed_dim"):
        if key not in params:
            raise ConfigError(f"{path}: model.params.{key} is missing")
        dd[key] = params[key]
    # The reference always builds the middle attention block.
    return from_dict(VQGANConfig, {**dd, "mid_attention": True}, where=str(path))


def _count(state: dict[str, torch.Tensor], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := rx.match(k))})


def infer_config(state: dict[str, torch.Tensor], source: str = "checkpoint") -> VQGANConfig:
    """Read the architecture off the weight shapes (when no YAML config is given).

    `resolution` only anchors `attn_resolutions` (attention sits where the feature map is that
    size at training resolution), so any consistent pair is equivalent; 256 is used."""
    try:
        ch, in_channels = state["encoder.conv_in.weight"].shape[:2]
        levels = _count(state, r"encoder\.down\.(\d+)\.block\.0\.conv1\.weight")
        ch_mult = tuple(int(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) // int(ch)
                        for i in levels)
        blocks = _count(state, r"encoder\.down\.0\.block\.(\d+)\.conv1\.weight")
        resolution = max(256, 2 ** len(levels))
        attn = tuple(resolution // 2 ** i for i in levels if f"encoder.down.{i}.attn.0.q.weight" in state)
        config = {
            "resolution": resolution, "in_channels": int(in_channels),
            "out_ch": int(state["decoder.conv_out.weight"].shape[0]), "ch": int(ch),
            "ch_mult": ch_mult, "num_res_blocks": len(blocks), "attn_resolutions": attn,
            "z_channels": int(state["encoder.conv_out.weight"].shape[0]),
            "embed_dim": int(state["quant_conv.weight"].shape[0]),
            "n_embed": int(state["quantize.embedding.weight"].shape[0]),
            "mid_attention": "encoder.mid.attn_1.q.weight" in state,
        }
    except KeyError as err:
        raise CheckpointError(f"{source}: not a reference VQ-GAN state dict (no {err.args[0]}); "
                              "pass --config with its YAML if it is one") from None
    except (ValueError, TypeError, IndexError, ZeroDivisionError):  # a weight of an odd shape
        raise CheckpointError(f"{source}: cannot read the architecture off the weight shapes (a weight has "
                              "an unexpected shape); pass --config with its YAML") from None
    if not levels or list(levels) != list(range(len(levels))) or not blocks:
        raise CheckpointError(f"{source}: cannot read the encoder levels off the weights; pass --config")
    return from_dict(VQGANConfig, config, where=source)


def import_checkpoint(ckpt: str | Path, output: str | Path, config_path: str | Path | None = None,
                      ) -> tuple[VQGANConfig, dict[str, Any]]:
    """Convert `ckpt` (+ optional YAML) to a `vqgan` safetensors checkpoint at `output`.

    Returns the config and a small report (dropped keys, placeholders, global step)."""
    loaded = load_torch_checkpoint(ckpt)
    state, dropped = extract_state(loaded.data, str(ckpt))
    config = config_from_yaml(config_path) if config_path else infer_config(state, str(ckpt))
    # Strict: every key and shape must match the config, or nothing is written; an absurd YAML
    # (ch 10**6) is refused before the model is allocated.
    model = build_with_weights(config, state, ckpt)
    step = loaded.data.get("global_step") if isinstance(loaded.data, dict) else None
    metadata = {"sundae.source": Path(ckpt).name, "sundae.imported_from": "taming-transformers"}
    if isinstance(step, int):
        metadata["sundae.step"] = str(step)
    save_model(output, model, metadata=metadata)
    return config, {"dropped": dropped, "opaque": loaded.opaque, "step": step}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sundae-import-vqgan",
        description="Convert a taming-transformers VQ-GAN checkpoint (.ckpt) to SUNDAE safetensors.")
    p.add_argument("checkpoint", help="the reference .ckpt (Lightning checkpoint or bare state dict)")
    p.add_argument("--config", "-c", help="the reference model YAML (model.params.ddconfig ...); "
                   "without it the architecture is read off the weight shapes")
    p.add_argument("--output", "-o", help="output .safetensors (default: next to the checkpoint)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    return p


def main(argv: list[str] | None = None) -> int:
    """Every failure ends as one `error:` line (exit 1; Ctrl-C: exit 130), never a traceback."""
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: _convert(args))


def _convert(args: argparse.Namespace) -> int:
    ckpt = Path(args.checkpoint)
    output = Path(args.output) if args.output else ckpt.with_suffix(".safetensors")
    if output.exists() and not args.force:
        raise SundaeError(f"{output} already exists; pass --force to overwrite it")
    if output.resolve() == ckpt.resolve():
        raise SundaeError(f"the output {output} would overwrite the input checkpoint")
    try:
        config, report = import_checkpoint(ckpt, output, args.config)
    except (ValueError, TypeError, RuntimeError, NotImplementedError, IndexError, KeyError, AttributeError,
            RecursionError) as err:  # whatever else a strange file makes torch or a check trip on
        raise CheckpointError(f"{ckpt}: cannot be converted ({type(err).__name__}: {err})") from None
    source = "YAML config" if args.config else "weight shapes"
    print(f"wrote {output}: f={config.factor}, {config.n_embed} codes of width {config.embed_dim} "
          f"(architecture from the {source}; dropped {report['dropped']} non-VQ-GAN keys"
          + (f"; global step {report['step']}" if report["step"] is not None else "") + ")")
    if report["opaque"]:
        print("ignored non-tensor objects stored in the checkpoint: " + ", ".join(report["opaque"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
