"""One home for the sampler settings (issue 15): the nodes' widgets and the CLIs' flags are built
from sundae_core.sampler's SamplerSettings and LIMITS, and read back into one."""

from __future__ import annotations

import argparse

import pytest

from nodes.sampling import SundaeDenoiseStep, SundaeSample
from sundae_core.errors import InputError
from sundae_core.sampler import DEFAULT_SETTINGS, LIMITS, SamplerSettings
from trainers.sampling import demo
from trainers.evaluation import eval_default, evaluate, mnist_eval
from trainers.sampling.sampler_flags import CLASS_WORKFLOW_SAMPLER, add_sampler_flags, settings_from_args


def test_node_widgets_take_their_defaults_and_limits_from_the_settings():
    sample = SundaeSample.INPUT_TYPES()["required"]
    step = SundaeDenoiseStep.INPUT_TYPES()["required"]
    widgets = {"steps": sample["steps"], "min_steps": sample["min_steps"], "temperature": sample["temperature_start"],
               "proportion": sample["proportion"], "guidance": sample["guidance"], "views": sample["views"]}
    for name, (_, options) in widgets.items():
        assert (options["min"], options["max"]) == LIMITS[name]
    for name in ("temperature", "proportion", "guidance"):
        assert (step[name][1]["min"], step[name][1]["max"]) == LIMITS[name]
    d = DEFAULT_SETTINGS
    assert [sample[k][1]["default"] for k in ("steps", "proportion", "min_steps", "guidance", "self_stop")] == [
        d.steps, d.proportion, d.min_steps, d.guidance, d.self_stop]
    assert (sample["temperature_start"][1]["default"], sample["temperature_end"][1]["default"]) == d.temperature
    assert sample["selection"][0] == ["random", "confidence"] and sample["selection"][1]["default"] == d.selection


def _parse(argv, **kw):
    parser = argparse.ArgumentParser()
    add_sampler_flags(parser, **kw)
    return parser.parse_args(argv)


def test_flags_read_back_into_the_same_settings_and_a_cli_may_choose_its_defaults():
    assert settings_from_args(_parse([])) == DEFAULT_SETTINGS
    args = _parse(["--steps", "7", "--temperature", "0.9", "0.1", "--proportion", "0.25", "--min-steps", "3",
                   "--no-self-stop", "--selection", "confidence", "--guidance", "2", "--views", "4"])
    assert settings_from_args(args) == SamplerSettings(steps=7, temperature=(0.9, 0.1), proportion=0.25, min_steps=3,
                                                       self_stop=False, selection="confidence", guidance=2.0,
                                                       views=4)
    assert settings_from_args(_parse([], defaults=SamplerSettings(steps=50))).steps == 50
    assert not hasattr(_parse([], guidance=False), "guidance")
    assert settings_from_args(_parse([], guidance=False), guidance=1.5).guidance == 1.5
    # each CLI's own defaults
    assert settings_from_args(demo.build_parser().parse_args([])) == demo.DEMO_SAMPLER
    assert settings_from_args(eval_default.build_parser().parse_args([])) == CLASS_WORKFLOW_SAMPLER
    assert settings_from_args(evaluate.build_parser().parse_args(["--ref", "r"])) == DEFAULT_SETTINGS


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps: sampler steps 0 is outside [1, 10000]"),
    (["--min-steps", "-1"], "--min-steps: sampler min_steps -1 is outside [0, 10000]"),
    (["--proportion", "1.01"], "--proportion: sampler proportion 1.01 is outside [0, 1]"),
    (["--temperature", "11", "1"], "--temperature: sampler temperature 11.0 is outside [0, 10]"),
    (["--views", "10"], "--views: sampler views 10 is outside [1, 9]"),
])
def test_an_out_of_range_flag_is_an_error_naming_the_flag(argv, message):
    with pytest.raises(InputError) as err:
        settings_from_args(_parse(argv))
    assert str(err.value).startswith(message)


def test_mnist_eval_refuses_a_bad_guidance_scale_before_any_work(tmp_path, capsys):
    argv = ["--prior", str(tmp_path / "missing.safetensors"), "--guidance", "0", "25", "--out", str(tmp_path)]
    assert mnist_eval.main(argv) == 1
    assert capsys.readouterr().err.startswith("error: --guidance 25: sampler guidance 25.0 is outside [0, 20]")


def test_the_prior_trainers_sample_keys_build_the_settings_and_are_checked_when_loaded():
    from sundae_core.config import from_dict
    from sundae_core.errors import ConfigError
    from trainers.training.train_prior import PriorRunConfig

    run = from_dict(PriorRunConfig, {"train": {"sample_steps": 20, "sample_temperature": [1.0, 0.3],
                                               "sample_proportion": 0.4}})
    assert run.train.sampler_settings() == SamplerSettings(steps=20, temperature=(1.0, 0.3), proportion=0.4)
    with pytest.raises(ConfigError, match=r"train.sample_proportion: sampler proportion 1.5 is outside \[0, 1\]"):
        from_dict(PriorRunConfig, {"train": {"sample_proportion": 1.5}})
    with pytest.raises(ConfigError, match="train.sample_temperature"):
        from_dict(PriorRunConfig, {"train": {"sample_temperature": [1.0, 0.9, 0.8]}})
