"""Configs: strict YAML loading, `--set a.b=value` overrides, round-trips, type errors."""

from dataclasses import dataclass, field

import pytest
import yaml

from sundae_core.config import (HourglassConfig, VQGANConfig, apply_overrides, from_dict, load_yaml,
                                to_dict)
from sundae_core.errors import ConfigError


@dataclass(frozen=True)
class Train:
    lr: float = 1e-3
    steps: int = 10
    betas: tuple[float, ...] = (0.9, 0.99)
    name: str = "run"
    bf16: bool = True


@dataclass(frozen=True)
class Run:
    """A nested run config shaped like the trainers' (model / train sections)."""

    model: HourglassConfig = field(default_factory=lambda: HourglassConfig(dim=16, heads=2, depth=(1, 1, 1)))
    train: Train = field(default_factory=Train)


def _write(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_unknown_keys_are_rejected_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*chanels"):
        from_dict(VQGANConfig, {"chanels": 3})
    # nested: the message names the section too
    with pytest.raises(ConfigError, match=r"train: unknown key\(s\) lrr"):
        from_dict(Run, {"train": {"lrr": 0.1}})
    path = _write(tmp_path, {"model": {"dim": 16, "heads": 2, "depth": [1, 1, 1], "hedas": 4}})
    with pytest.raises(ConfigError) as err:
        load_yaml(path, Run)
    assert "hedas" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        apply_overrides(Run(), ["train.nope=1"])
    with pytest.raises(ConfigError, match="not a config section"):
        apply_overrides(Run(), ["trian.lr=1"])


def test_overrides_set_nested_values_and_parse_them_as_yaml():
    run = apply_overrides(Run(), ["train.lr=3e-4", "train.steps=5", "model.depth=[2, [1, 3, 1], 2]",
                                  "train.betas=[0.5, 0.9]", "train.name=a=b", "train.bf16=false"])
    assert run.train.lr == pytest.approx(3e-4) and isinstance(run.train.lr, float)
    assert run.train.steps == 5
    assert run.model.depth == (2, (1, 3, 1), 2)
    assert run.train.betas == (0.5, 0.9)
    assert run.train.name == "a=b"  # only the first '=' splits
    assert run.train.bf16 is False
    assert Run().train.lr == 1e-3  # the original is frozen and untouched
    with pytest.raises(ConfigError, match="key.subkey=value"):
        apply_overrides(Run(), ["train.lr"])
    # an override that makes the config invalid is caught by the config's own checks
    with pytest.raises(ConfigError, match="divisible"):
        apply_overrides(Run(), ["model.heads=3"])


def test_yaml_round_trip(tmp_path):
    run = apply_overrides(Run(), ["model.depth=[1, [1, 2, 1], 1]", "model.num_classes=10",
                                  "train.betas=[0.5, 0.9]"])
    path = _write(tmp_path, yaml.safe_dump(to_dict(run), sort_keys=False))
    assert load_yaml(path, Run) == run
    vq = VQGANConfig(ch_mult=(1, 2, 2, 4, 4, 4), attn_resolutions=(8,), n_embed=64, l2_normalize_codes=True)
    assert from_dict(VQGANConfig, to_dict(vq)) == vq
    assert vq.factor == 32
    # an empty file is the defaults
    assert load_yaml(_write(tmp_path, "", "empty.yaml"), Run) == Run()


@pytest.mark.parametrize("data, message", [
    ({"train": {"steps": "ten"}}, r"train.steps: expected int"),
    ({"train": {"steps": 1.5}}, r"train.steps: expected int"),
    ({"train": {"steps": True}}, r"train.steps: expected int"),
    ({"train": {"lr": "fast"}}, r"train.lr: expected float"),
    ({"train": {"lr": True}}, r"train.lr: expected float"),
    ({"train": {"bf16": "yes please"}}, r"train.bf16: expected bool"),
    ({"train": {"betas": 0.9}}, r"train.betas: expected a list"),
    ({"train": {"betas": [0.9, "x"]}}, r"train.betas\[1\]: expected float"),
    ({"train": 3}, r"train: expected a mapping"),
    ({"model": {"ch_mult": [1, 2]}}, r"unknown key"),
    ({"model": {"depth": [1, 2]}}, r"depth must be"),
    ({"model": {"heads": 0}}, r"heads must be >= 1"),
    ({"model": {"shorten": 2}}, r"shorten must be a square"),
])
def test_bad_types_and_values_are_config_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Run, data)


def test_ints_become_floats_and_yaml_errors_are_reported(tmp_path):
    assert from_dict(Train, {"lr": 1, "betas": [1, 0]}) == Train(lr=1.0, betas=(1.0, 0.0))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(_write(tmp_path, "train: [1, 2", "bad.yaml"), Run)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml", Run)
    with pytest.raises(ConfigError, match="n_embed"):
        from_dict(VQGANConfig, {"n_embed": 1})


def test_a_deeply_nested_yaml_config_is_one_config_error(tmp_path):
    from sundae_core.config import VQGANConfig, load_yaml
    path = tmp_path / "deep.yaml"
    path.write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(ConfigError, match="nested too deeply|not valid YAML"):
        load_yaml(path, VQGANConfig)


def test_trainer_configs_refuse_alias_bombs_before_expanding_them(tmp_path):
    """A 300-byte YAML whose aliases expand to 9**6 values is refused in one line, not expanded."""
    from sundae_core.config import load_yaml
    from trainers.training.train_prior import PriorRunConfig

    lines = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for prev, name in zip("abcde", "bcdef"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="aliases expand"):
        load_yaml(path, PriorRunConfig)
