"""Token versions: a prior refuses a VQ-GAN (and token grids) whose ids mean something else, in the
library, the nodes and the executor; the decoder may keep training without changing the version."""

import dataclasses
from pathlib import Path

import pytest
import torch

from sundae_core.checkpoint import read_metadata
from sundae_core.config import HourglassConfig, VQGANConfig
from sundae_core.graph import run_workflow
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import TOKEN_VERSION_KEY, check_models_fit, load_prior, load_vqgan, save_model
from sundae_core.run import main
from sundae_core.token_version import TokenVersionError, tag, version_of
from sundae_core.vqgan import VQGAN
from sundae_nodes import NODE_CLASS_MAPPINGS as N
from .conftest import write_inpaint_adapter

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
TINY = VQGANConfig(resolution=64, ch=4, ch_mult=(1, 1, 1, 1, 1, 1), num_res_blocks=1, attn_resolutions=(),
                   mid_attention=False, z_channels=4, embed_dim=4, n_embed=16)


def tiny_vqgan(seed: int) -> VQGAN:
    torch.manual_seed(seed)
    return VQGAN(TINY)


def tiny_prior(version: str) -> HourglassTransformer:
    torch.manual_seed(0)
    return HourglassTransformer(HourglassConfig(vocab_size=16, dim=16, heads=1, depth=(1, 1, 1), shorten=4,
                                                num_classes=3, token_version=version))


def test_version_follows_the_encoder_not_the_decoder_nor_the_dtype():
    vqgan = tiny_vqgan(0)
    version = vqgan.token_version
    assert len(version) == 12 and version == tiny_vqgan(0).token_version != tiny_vqgan(1).token_version
    assert vqgan.to(torch.bfloat16).token_version == version  # the shipped bf16 file keeps it
    vqgan = vqgan.float()
    with torch.no_grad():
        vqgan.decoder.conv_out.weight.add_(1.0)  # decoder training (train.freeze_encoder)
    assert vqgan.token_version == version
    with torch.no_grad():
        vqgan.encoder.conv_in.weight.add_(1.0)  # an in-place optimiser step on the encoder
    assert vqgan.token_version != version


def test_checkpoints_carry_the_version_and_a_mismatched_pair_is_one_line(tmp_path):
    vqgan, other = tiny_vqgan(0), tiny_vqgan(1)
    save_model(tmp_path / "vqgan.safetensors", vqgan)
    save_model(tmp_path / "prior.safetensors", tiny_prior(vqgan.token_version))
    assert read_metadata(tmp_path / "vqgan.safetensors")[TOKEN_VERSION_KEY] == vqgan.token_version
    assert read_metadata(tmp_path / "prior.safetensors")[TOKEN_VERSION_KEY] == vqgan.token_version
    prior = load_prior(tmp_path / "prior.safetensors")
    check_models_fit(load_vqgan(tmp_path / "vqgan.safetensors", dtype=torch.bfloat16), prior)
    check_models_fit(other, tiny_prior(""))  # a prior of unknown version is not refused
    with pytest.raises(TokenVersionError) as err:
        check_models_fit(other, prior)
    assert "\n" not in str(err.value) and other.token_version in str(err.value)


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    """A VQ-GAN, a second VQ-GAN with other tokens, and a prior trained on the first's tokens."""
    vqgan = tiny_vqgan(0)
    save_model(tmp_path / "vqgan.safetensors", vqgan)
    save_model(tmp_path / "other_vqgan.safetensors", tiny_vqgan(1))
    save_model(tmp_path / "prior.safetensors", tiny_prior(vqgan.token_version))
    write_inpaint_adapter(tmp_path)
    monkeypatch.setenv("SUNDAE_MODEL_DIR", str(tmp_path))
    return tmp_path


def test_nodes_carry_the_version_on_tokens_and_refuse_foreign_ones(model_dir):
    vqgan = N["SundaeVQGANLoader"]().load("vqgan.safetensors")[0]
    other = N["SundaeVQGANLoader"]().load("other_vqgan.safetensors")[0]
    prior = N["SundaePriorLoader"]().load("prior.safetensors")[0]
    image = torch.rand(1, 64, 64, 3)
    tokens = N["SundaeVQEncode"]().encode(vqgan, image)[0]
    assert version_of(tokens) == vqgan.token_version
    sample = dict(seed=0, steps=2, temperature_start=1.0, temperature_end=0.5, proportion=0.5, self_stop=False,
                  min_steps=1, guidance=0.0, selection="random")
    out = N["SundaeSample"]().sample(prior, tokens, **sample)[0]
    assert version_of(out) == vqgan.token_version
    N["SundaeVQDecode"]().decode(vqgan, out)
    foreign = N["SundaeVQEncode"]().encode(other, image)[0]
    with pytest.raises(TokenVersionError, match="this prior"):
        N["SundaeSample"]().sample(prior, foreign, **sample)
    with pytest.raises(TokenVersionError, match="this prior"):
        N["SundaeDenoiseStep"]().step(prior, foreign, seed=0, temperature=1.0, proportion=0.5, guidance=0.0,
                                      selection="random")
    with pytest.raises(TokenVersionError, match="this VQ-GAN"):
        N["SundaeVQDecode"]().decode(other, out)
    with pytest.raises(TokenVersionError, match="preview VQ-GAN"):
        N["SundaeSample"]().sample(prior, tokens, **sample, vqgan=other)
    corrupted = N["SundaeCorrupt"]().corrupt(vqgan, tokens, rate=1.0, seed=0)[0]
    assert version_of(corrupted) == vqgan.token_version
    assert version_of(tag(torch.zeros(1, 2, 2, dtype=torch.long), "")) == ""


def test_the_executor_refuses_a_prior_with_another_vqgans_tokens_in_one_line(model_dir, tmp_path, capsys):
    workflow = str(WORKFLOWS / "inpaint_1024.json")
    ok = run_workflow(workflow, output_dir=tmp_path / "ok", overrides=["Sample.steps=2"], progress=False)
    assert ok.files
    # the inpainting workflow's VQ-GAN loader is node 2 (the API view); pick the other VQ-GAN
    code = main([workflow, "--output-dir", str(tmp_path / "bad"), "--no-progress",
                 "--set", "Load SUNDAE VQ-GAN.vqgan_name=other_vqgan.safetensors", "--set", "Sample.steps=2"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "token version" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad" / "sundae").exists() or not any((tmp_path / "bad" / "sundae").iterdir())


def test_the_prior_trainer_records_the_datasets_token_version(tmp_path):
    from trainers.training.train_prior import with_token_version
    from sundae_core.errors import ConfigError

    config = HourglassConfig(vocab_size=16, dim=16, heads=1, depth=(1, 1, 1), shorten=4)
    assert with_token_version(config, {"token_version": "abc"}, "data").token_version == "abc"
    assert with_token_version(config, {}, "data").token_version == ""
    with pytest.raises(ConfigError, match="token_version"):
        with_token_version(dataclasses.replace(config, token_version="xyz"), {"token_version": "abc"}, "data")
