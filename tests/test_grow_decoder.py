"""sundae-grow-decoder: a deeper decoder that decodes as its source did, keeps the token version,
and whose new blocks train when the VQ-GAN trainer fine-tunes it with the encoder frozen."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from sundae_core.checkpoint import read_metadata
from sundae_core.config import VQGANConfig
from sundae_core.errors import ConfigError
from sundae_core.models import load_vqgan, save_model
from sundae_core.vqgan import VQGAN
from trainers.checkpoints import grow_decoder
from trainers.training import train_vqgan
from trainers.training.run_state import init_weights

TINY = dict(resolution=32, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=4,
            embed_dim=4, n_embed=500, quantizer="fsq", fsq_levels=(5, 5, 5, 4), norm="channel", mid_attention=False)
NEW_BLOCK = "decoder.up.0.block.2"  # the full-resolution level's appended block


@pytest.fixture
def source(tmp_path):
    torch.manual_seed(0)
    model = VQGAN(VQGANConfig(**TINY)).eval()
    path = tmp_path / "vqgan.safetensors"
    save_model(path, model, metadata={"step": "9"})
    return path, model


def test_the_grown_decoder_draws_what_its_source_did_from_the_same_tokens(source, tmp_path):
    path, model = source
    out = tmp_path / "grown.safetensors"
    assert grow_decoder.main([str(path), "--res-blocks", "2", "--out", str(out)]) == 0
    grown = load_vqgan(out, dtype=torch.float32)
    assert grown.config.decoder_res_blocks == 2 and grown.config.num_res_blocks == 1
    assert all(len(level.block) == 3 for level in grown.decoder.up)  # one block more than the number
    assert all(len(level.block) == 1 for level in grown.encoder.down)
    assert grown.token_version == model.token_version
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        tokens = model.encode(images)
        assert torch.equal(grown.encode(images), tokens)
        torch.testing.assert_close(grown.decode(tokens), model.decode(tokens), rtol=0, atol=1e-6)
    assert json.loads(read_metadata(out)["grown_from"]) == {"file": "vqgan.safetensors", "step": "9",
                                                            "decoder_res_blocks": 1}


def test_a_decoder_that_would_not_grow_is_refused_in_one_line(source, tmp_path, capsys):
    path, _ = source
    out = tmp_path / "grown.safetensors"
    assert grow_decoder.main([str(path), "--res-blocks", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--res-blocks 1" in err[0] and "never removes" in err[0]
    assert not out.exists()


def test_the_new_blocks_learn_from_a_reconstruction_loss(source, tmp_path):
    """The zeroed convolution moves at the first step and then, through it, the block's first one."""
    path, _ = source
    out = tmp_path / "grown.safetensors"
    assert grow_decoder.main([str(path), "--res-blocks", "2", "--out", str(out)]) == 0
    model = VQGAN(VQGANConfig(**TINY, decoder_res_blocks=2))
    init_weights(model, out, "vqgan")
    new = model.decoder.up[0].block[2]
    assert not new.conv2.weight.any()
    optimiser = torch.optim.Adam(model.decoder.parameters(), lr=1e-2)
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    for _ in range(2):
        loss = F.l1_loss(model(images)[0], images)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert new.conv2.weight.abs().sum() > 0 and new.conv1.weight.grad.abs().sum() > 0


@pytest.fixture
def vqgan_run(tmp_path):
    """A tiny VQ-GAN trainer set-up: (config file, run folder) over 6 random 32 px images."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    config = tmp_path / "vqgan.yaml"
    config.write_text(yaml.safe_dump({
        "model": {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()},
        "data": {"path": str(images), "resolution": 32, "crop": 32, "cache_size": 8, "val_fraction": 0.2},
        "train": {"steps": 2, "batch_size": 2, "disc_start": 100, "lpips_net": "alex", "log_every": 1,
                  "sample_every": 1000, "ckpt_every": 1, "val_images": 2, "bf16": False, "lr": 0.001}}))
    return config, tmp_path / "run"


def test_added_parameters_are_the_new_blocks_and_need_a_grown_file(source, tmp_path):
    path, _ = source
    out = tmp_path / "grown.safetensors"
    assert grow_decoder.main([str(path), "--res-blocks", "2", "--out", str(out)]) == 0
    added = grow_decoder.added_parameters(out, load_vqgan(out).config)
    assert {name.rsplit(".", 2)[0] for name in added} == {f"decoder.up.{level}.block.2" for level in range(2)}
    with pytest.raises(ConfigError, match="not made by sundae-grow-decoder"):
        grow_decoder.added_parameters(path, load_vqgan(path).config)


def test_the_trainer_fine_tunes_a_grown_file_at_its_own_rate_keeps_the_tokens_and_resumes(source, tmp_path,
                                                                                           vqgan_run):
    path, model = source
    grown = tmp_path / "grown.safetensors"
    assert grow_decoder.main([str(path), "--res-blocks", "2", "--out", str(grown)]) == 0
    config, run = vqgan_run
    argv = ["--config", str(config), "--run-dir", str(run), "--no-progress", "--set", f"train.init={grown}",
            "--set", "train.freeze_encoder=true", "--set", "model.decoder_res_blocks=2",
            "--set", "train.grown_lr_scale=10"]
    assert train_vqgan.main(argv) == 0
    groups = json.loads(read_metadata(run / "state.safetensors")["param_groups"])["ae"]
    assert [(g["lr_scale"], g["lr"]) for g in groups] == [(1.0, 0.001), (10.0, 0.01)]
    assert len(groups[1]["params"]) == len(grow_decoder.added_parameters(grown, load_vqgan(grown).config))
    trained = load_vqgan(run / "model.safetensors", dtype=torch.float32)
    assert trained.config.decoder_res_blocks == 2 and trained.token_version == model.token_version
    assert trained.state_dict()[f"{NEW_BLOCK}.conv2.weight"].abs().sum() > 0
    assert train_vqgan.main(argv + ["--set", "train.steps=3"]) == 0  # resumes with the same groups and rates
    groups = json.loads(read_metadata(run / "state.safetensors")["param_groups"])["ae"]
    assert [(g["lr_scale"], g["lr"]) for g in groups] == [(1.0, 0.001), (10.0, 0.01)]


def test_grown_lr_scale_without_a_grown_init_is_one_error_line(source, vqgan_run, capsys):
    path, _ = source
    config, run = vqgan_run
    base = ["--config", str(config), "--no-progress", "--set", "train.grown_lr_scale=10"]
    assert train_vqgan.main([*base, "--run-dir", str(run / "a")]) == 1
    assert train_vqgan.main([*base, "--run-dir", str(run / "b"), "--set", f"train.init={path}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "set train.init to the grown file" in err[0]
    assert "not made by sundae-grow-decoder" in err[1]
