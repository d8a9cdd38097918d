"""Frozen dataclass configs, strict YAML loading and `a.b=value` overrides.

Every model is built from exactly one of these configs, and every checkpoint embeds the config
it was trained with, so a file alone is enough to rebuild its model.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from . import bounded_yaml
from .errors import ConfigError, InputError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class VQGANConfig:
    """The taming-transformers VQ-GAN first stage (encoder, quantizer, decoder).

    The downsampling factor is f = 2 ** (len(ch_mult) - 1). `attn_resolutions` are feature-map
    sizes relative to `resolution`, as in the reference implementation, so imported configs
    mean the same thing here.
    """

    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    z_channels: int = 256
    embed_dim: int = 256
    n_embed: int = 1024
    dropout: float = 0.0
    # The reference model always has a global attention block in the middle. A model trained on
    # crops and used on larger canvases generalises better without it, hence the switch.
    mid_attention: bool = True
    l2_normalize_codes: bool = False
    beta: float = 0.25
    # "group": the reference's GroupNorm (imported checkpoints); "channel": LayerNorm over the
    # channels of each position, which keeps flat colours and is the same on crops and canvases.
    norm: str = "group"
    # "vq": the paper's learned codebook (n_embed codes of width embed_dim). "fsq": finite scalar
    # quantisation with `fsq_levels` values per latent channel; then n_embed = prod(fsq_levels)
    # and embed_dim = len(fsq_levels). See sundae_core/quantize.py for why it exists.
    quantizer: str = "vq"
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)
    # Res blocks per decoder level, where the decoder has more than the encoder (None: as many,
    # num_res_blocks, the reference's shape). `sundae-grow-decoder` appends blocks that start as
    # identities to a trained VQ-GAN; the encoder and so the tokens stay as they were.
    decoder_res_blocks: int | None = None

    @property
    def factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def decoder_blocks(self) -> int:
        """Res blocks per decoder level, counted as num_res_blocks is (each level has one more)."""
        return self.num_res_blocks if self.decoder_res_blocks is None else self.decoder_res_blocks

    def __post_init__(self) -> None:
        if self.n_embed < 2:
            raise ConfigError(f"vqgan.n_embed must be at least 2, got {self.n_embed}")
        if not self.ch_mult:
            raise ConfigError("vqgan.ch_mult must list at least one level")
        if self.decoder_res_blocks is not None and self.decoder_res_blocks < 0:
            raise ConfigError(f"vqgan.decoder_res_blocks must be at least 0 (or null: num_res_blocks), "
                              f"got {self.decoder_res_blocks}")
        if self.norm not in ("group", "channel"):
            raise ConfigError(f"vqgan.norm must be 'group' or 'channel', got {self.norm!r}")
        if self.quantizer not in ("vq", "fsq"):
            raise ConfigError(f"vqgan.quantizer must be 'vq' or 'fsq', got {self.quantizer!r}")
        if self.quantizer == "fsq":
            if not self.fsq_levels or any(int(v) < 2 for v in self.fsq_levels):
                raise ConfigError(f"vqgan.fsq_levels must list levels >= 2, got {self.fsq_levels!r}")
            size = 1
            for v in self.fsq_levels:
                size *= int(v)
            if self.n_embed != size or self.embed_dim != len(self.fsq_levels):
                raise ConfigError(f"with vqgan.quantizer 'fsq' and fsq_levels {list(self.fsq_levels)}, set "
                                  f"n_embed to {size} (their product) and embed_dim to {len(self.fsq_levels)}; "
                                  f"got n_embed {self.n_embed}, embed_dim {self.embed_dim}")


@dataclasses.dataclass(frozen=True)
class HourglassConfig:
    """The 2D hourglass transformer denoiser f_theta.

    depth is (pre, valley, post); valley is an int (layers at the shortened resolution) or
    itself a (pre, valley, post) triple for a further level of shortening.
    """

    vocab_size: int = 1024
    dim: int = 1024
    heads: int = 8
    depth: tuple = (2, 12, 2)
    shorten: int = 4
    mlp_ratio: int = 4
    num_classes: int = 0
    dropout: float = 0.0
    # Where an attention block's dropout goes. "weights": on the attention weights (the GPU runs').
    # "output": on the attention branch's output, as the MLP's; a CPU has no fused attention kernel
    # that drops weights, so "weights" makes its full-resolution attention materialise every
    # weight map (~3.5x the step), while "output" keeps the fused kernel. No effect at inference.
    attention_dropout_at: str = "weights"
    # Names of classes 0..num_classes-1 for messages (empty: unnamed). Checkpoints made before
    # this field load with it empty.
    class_names: tuple[str, ...] = ()
    # The token version (sundae_core.token_version) of the VQ-GAN whose tokens the prior learnt,
    # set by the prior trainer from the latent dataset; "" = unknown (made before versions existed).
    token_version: str = ""

    def __post_init__(self) -> None:
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ConfigError(f"prior.class_names must be empty or name all {self.num_classes} classes "
                              f"(prior.num_classes), got {len(self.class_names)} names")
        if self.dim < 1 or self.heads < 1:
            raise ConfigError(f"prior.dim and prior.heads must be >= 1, got {self.dim} and {self.heads}")
        if self.attention_dropout_at not in ("weights", "output"):
            raise ConfigError(f"model.attention_dropout_at must be 'weights' or 'output', got {self.attention_dropout_at!r}")
        if self.dim % self.heads:
            raise ConfigError(f"prior.dim ({self.dim}) must be divisible by prior.heads ({self.heads})")
        if (self.dim // self.heads) % 4:
            raise ConfigError(
                f"prior head width dim/heads = {self.dim // self.heads} must be a multiple of 4 "
                "(2D rotary splits it into row and column halves of sin/cos pairs)")
        side = int(round(self.shorten ** 0.5))
        if side * side != self.shorten or side < 2:
            raise ConfigError(f"prior.shorten must be a square >= 4 (4, 9, 16), got {self.shorten}")
        parse_depth(self.depth)

    def depth_levels(self) -> "DepthLevels":
        """`depth` parsed: the blocks around each shortening and in the valley (see DepthLevels)."""
        return parse_depth(self.depth)

    @property
    def patch(self) -> int:
        """Side of the square patch one shortening step pools (sqrt(k))."""
        return int(round(self.shorten ** 0.5))

    def describe_classes(self, shown: int = 12) -> str:
        """'classes 0..8 (0 activities, 1 animals_nature, ...)' for range errors; the names are
        cut after `shown` so a 1000-class prior gives a readable line."""
        text = f"classes 0..{self.num_classes - 1}"
        if not self.class_names:
            return text
        named = [f"{i} {n}" for i, n in enumerate(self.class_names[:shown])]
        if self.num_classes > shown:
            named.append(f"..., {self.num_classes - 1} {self.class_names[-1]}")
        return f"{text} ({', '.join(named)})"

    def class_id(self, name: str, field: str = "") -> int:
        """The index of the class called `name`; a name this prior lacks is refused with its classes,
        the message led by `field` (the flag or input that gave the name) when there is one."""
        if name in self.class_names:
            return self.class_names.index(name)
        classes = self.describe_classes() if self.num_classes else "no classes"
        raise InputError(f"{field}{': ' if field else ''}class {name!r}: this prior has {classes}")


@dataclasses.dataclass(frozen=True)
class DepthLevels:
    """A parsed hourglass depth. `shortened[i] = (pre, post)`: the blocks before and after the
    (i+1)-th shortening, outermost first; `valley`: the blocks at the innermost resolution (at full
    resolution when nothing is shortened). depth (2, (1, 3, 1), 2) -> shortened ((2, 2), (1, 1)),
    valley 3; depth 5 -> shortened (), valley 5."""

    shortened: tuple[tuple[int, int], ...]
    valley: int

    @property
    def total(self) -> int:
        """All transformer blocks (what a vanilla transformer of the same depth has)."""
        return sum(pre + post for pre, post in self.shortened) + self.valley

    def inner(self) -> "DepthLevels":
        """The levels inside the outermost shortening."""
        return DepthLevels(self.shortened[1:], self.valley)


def parse_depth(depth: Any) -> DepthLevels:
    """The one parser of `HourglassConfig.depth`: an int, or (pre, valley, post) with valley
    itself a depth; ConfigError naming prior.depth otherwise."""
    shortened = []
    while not isinstance(depth, int) or isinstance(depth, bool):
        if not (isinstance(depth, (tuple, list)) and len(depth) == 3):
            raise ConfigError(f"prior.depth must be an int or a (pre, valley, post) triple, got {depth!r}")
        pre, depth, post = depth
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (pre, post)):
            raise ConfigError(f"prior.depth pre and post must be ints, got {pre!r} and {post!r}")
        if pre < 0 or post < 0:
            raise ConfigError(f"prior.depth entries must be >= 0, got pre {pre} and post {post}")
        shortened.append((pre, post))
    if depth < 0:
        raise ConfigError(f"prior.depth entries must be >= 0, got {depth}")
    return DepthLevels(tuple(shortened), depth)


def _freeze(value: Any) -> Any:
    """Lists from YAML/JSON become tuples so configs stay hashable and frozen."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build a (possibly nested) config dataclass; unknown keys are errors naming the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {', '.join(unknown)}; "
            f"known keys are {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, f"{where}.{name}" if where else name)
        else:
            kwargs[name] = _coerce(value, hint, f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where or cls.__name__}: {err}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    value = _freeze(value)
    origin = typing.get_origin(hint)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 (PyYAML) reads `3e-4` as a string: it wants `3.0e-4`. Accept what people write.
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[int, ...]: check every element
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is typing.Union and value is not None:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return _coerce(value, args[0], where)
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def load_yaml(path: str | Path, cls: type[T]) -> T:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = bounded_yaml.safe_load(path.read_bytes()) or {}  # aliases and size bounded
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    except RecursionError:  # a hostile file nested thousands of levels deep
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    try:
        return from_dict(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None


def apply_overrides(config: T, overrides: list[str] | tuple[str, ...]) -> T:
    """Apply `section.key=value` strings (value parsed as YAML) to a nested frozen config."""
    data = to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.subkey=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                raise ConfigError(f"override {item!r}: {key!r} is not a config section")
            node = node[key]
        if keys[-1] not in node:
            raise ConfigError(f"override {item!r}: unknown key {keys[-1]!r}; known: {', '.join(node)}")
        try:
            node[keys[-1]] = bounded_yaml.safe_load(raw)
        except bounded_yaml.YAMLShapeError as err:
            raise ConfigError(f"override {dotted.strip()}: {err}") from None
        except RecursionError:
            raise ConfigError(f"override {item!r}: value nested too deeply") from None
        except yaml.YAMLError:
            node[keys[-1]] = raw
    return from_dict(type(config), data)
