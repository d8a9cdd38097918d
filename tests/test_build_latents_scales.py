"""sundae-build-latents --extra-scales: the training split also at smaller sizes on the canvas."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from sundae_core.checkpoint import load_checkpoint
from trainers.data import build_latents
from trainers.data.image_data import is_validation, load_rgb_scaled


class _FakeVQGAN:
    """build_latents needs factor, vocab_size, token_version, encoder_dtype and encode; the token is 1 where the
    8 x 8 patch is dark, so the tokens show where the subject sits."""

    factor, vocab_size, token_version = 8, 16, "fake00000000"
    encoder_dtype = torch.float32

    def to(self, **kwargs):
        return self

    def encode(self, x):
        return (x.mean(dim=1) < 0).float().unfold(1, 8, 8).unfold(2, 8, 8).mean((-1, -2)).gt(0.5).long()


def test_load_rgb_scaled_centres_the_shrunk_image_on_white(tmp_path):
    Image.new("RGB", (32, 32), (200, 0, 0)).save(tmp_path / "red.png")
    canvas = load_rgb_scaled(tmp_path / "red.png", 32, 0.5)
    assert (canvas[8:24, 8:24] == [200, 0, 0]).all()
    border = np.ones((32, 32), bool)
    border[8:24, 8:24] = False
    assert (canvas[border] == 255).all()
    assert np.array_equal(load_rgb_scaled(tmp_path / "red.png", 32, 1.0), np.full((32, 32, 3), [200, 0, 0]))


def test_extra_scales_add_training_shards_only_and_extend_a_built_folder(tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(12):
        Image.new("RGB", (32, 32), (0, 0, 0)).save(images / f"{i}.png")
    monkeypatch.setattr(build_latents, "load_vqgan", lambda path, dtype=None: _FakeVQGAN())
    out = tmp_path / "latents"
    args = ["--vqgan", "unused.safetensors", "--images", str(images), "--resolution", "32", "--no-progress",
            "--out", str(out)]
    assert build_latents.main(args) == 0
    plain = out / "train-00000.safetensors"
    stamp = plain.stat().st_mtime_ns
    os.utime(plain, ns=(stamp - 10**9, stamp - 10**9))  # a rewrite would change it
    assert build_latents.main(args + ["--extra-scales", "0.5"]) == 0
    assert plain.stat().st_mtime_ns == stamp - 10**9  # the full-size shards were kept, not re-encoded
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shards"]["train"] == ["train-00000.safetensors", "train-x050-00000.safetensors"]
    assert manifest["shards"]["val"] == ["val-00000.safetensors"] and manifest["extra_scales"] == [0.5]
    n_train = sum(not is_validation(p) for p in images.iterdir())
    full = load_checkpoint(plain, kind="latent_shard").tensors["tokens"]
    half = load_checkpoint(out / "train-x050-00000.safetensors", kind="latent_shard").tensors["tokens"]
    assert len(full) == len(half) == 2 * n_train  # each image and its mirror image
    assert (full == 1).all()  # a black square filling the canvas: every token dark
    assert half[0].tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]


@pytest.mark.parametrize("value", ["1.0", "0", "0.7,0.701", "half"])
def test_extra_scales_must_be_distinct_shares_below_one(value, capsys):
    with pytest.raises(SystemExit):
        build_latents.main(["--out", "x", "--extra-scales", value])
    assert "--extra-scales" in capsys.readouterr().err


def test_extra_scales_do_not_apply_to_mnist(tmp_path, capsys):
    assert build_latents.main(["--mnist", "--out", str(tmp_path / "m"), "--extra-scales", "0.5"]) == 1
    assert "do not apply to --mnist" in capsys.readouterr().err
