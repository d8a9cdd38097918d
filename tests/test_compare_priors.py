"""`sundae-compare-priors`: one row of samples per prior on the same seeds and classes."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from sundae_core.config import HourglassConfig, VQGANConfig
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import save_model
from sundae_core.vqgan import VQGAN
from trainers.evaluation import compare_priors

VQ = VQGANConfig(resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=4,
                 embed_dim=4, n_embed=16, mid_attention=False)
PRIOR = HourglassConfig(vocab_size=16, dim=16, heads=2, depth=(1, 1, 1), num_classes=3, class_names=("a", "b", "c"))


def _files(tmp_path):
    torch.manual_seed(0)
    save_model(tmp_path / "vq.safetensors", VQGAN(VQ))
    for name in ("one", "two"):
        save_model(tmp_path / f"{name}.safetensors", HourglassTransformer(PRIOR))
    save_model(tmp_path / "plain.safetensors", HourglassTransformer(HourglassConfig(vocab_size=16, dim=16, heads=2,
                                                                                    depth=(1, 1, 1))))
    return tmp_path


def test_one_row_per_prior_on_the_same_seeds(tmp_path, capsys):
    d = _files(tmp_path)
    argv = [str(d / "one.safetensors"), str(d / "one.safetensors"), str(d / "two.safetensors"),
            "--vqgan", str(d / "vq.safetensors"), "--n", "3", "--steps", "3", "--thumb", "16",
            "--out", str(d / "out"), "--no-progress"]
    assert compare_priors.main(argv) == 0
    with Image.open(d / "out" / "compare.png") as sheet:
        pixels = torch.from_numpy(np.asarray(sheet.convert("RGB")).copy())
    assert pixels.shape == (3 * 16, compare_priors.LABEL_WIDTH + 3 * 16, 3)
    rows = pixels[:, compare_priors.LABEL_WIDTH:].reshape(3, 16, 3 * 16, 3)
    assert torch.equal(rows[0], rows[1]) and not torch.equal(rows[0], rows[2])  # same prior, same seeds
    report = json.loads((d / "out" / "compare.json").read_text())
    assert len(report["labels"]) == 3 and set(report["labels"]) <= {0, 1, 2}
    assert [p["path"] for p in report["priors"]] == argv[:3]
    assert all(1 <= p["distinct"] <= 16 and 0 <= p["background"] <= 1 for p in report["priors"])
    assert "different tokens a sample" in capsys.readouterr().out


def test_priors_of_different_kinds_are_refused_in_one_line(tmp_path, capsys):
    d = _files(tmp_path)
    argv = [str(d / "one.safetensors"), str(d / "plain.safetensors"), "--vqgan", str(d / "vq.safetensors"),
            "--out", str(d / "out"), "--no-progress"]
    assert compare_priors.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "different numbers of classes" in err and "\n" not in err
    assert compare_priors.main([str(d / "one.safetensors"), "--vqgan", str(d / "vq.safetensors"), "--label", "7",
                                "--out", str(d / "o2"), "--no-progress"]) == 1
    assert "these priors have 3 classes" in capsys.readouterr().err
    assert compare_priors.main([str(d / "one.safetensors"), "--vqgan", str(d / "vq.safetensors"), "--label", "d",
                                "--out", str(d / "o3"), "--no-progress"]) == 1
    assert "--label: class 'd': this prior has classes 0..2 (0 a, 1 b, 2 c)" in capsys.readouterr().err


def test_a_class_by_name(tmp_path):
    d = _files(tmp_path)
    assert compare_priors.main([str(d / "one.safetensors"), "--vqgan", str(d / "vq.safetensors"), "--label", "c",
                                "--n", "2", "--steps", "2", "--thumb", "16", "--out", str(d / "o"),
                                "--no-progress"]) == 0
    assert json.loads((d / "o" / "compare.json").read_text())["labels"] == [2, 2]


def test_a_class_the_priors_number_differently_is_refused(tmp_path, capsys):
    d = _files(tmp_path)
    reordered = HourglassConfig(**{**PRIOR.__dict__, "class_names": ("c", "b", "a")})
    save_model(d / "three.safetensors", HourglassTransformer(reordered))
    argv = [str(d / "one.safetensors"), str(d / "three.safetensors"), "--vqgan", str(d / "vq.safetensors"),
            "--n", "2", "--steps", "2", "--thumb", "16", "--no-progress"]
    assert compare_priors.main(argv + ["--label", "a", "--out", str(d / "o")]) == 1
    assert "--label a: the priors number this class differently ([0, 2])" in capsys.readouterr().err
    assert compare_priors.main(argv + ["--label", "b", "--out", str(d / "o2")]) == 0  # 1 in both
