import os
from pathlib import Path

import pytest

from sundae_core import models
from sundae_core.config import HourglassConfig
from sundae_core.errors import MissingAssetError
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import save_model
from sundae_nodes import model_files


def test_symlinked_models_resolve_but_paths_may_not_leave_the_folder(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    folder = tmp_path / "models"
    elsewhere.mkdir()
    folder.mkdir()
    save_model(elsewhere / "p.safetensors", HourglassTransformer(HourglassConfig(vocab_size=8, dim=8, heads=2, depth=1)))
    os.symlink(elsewhere / "p.safetensors", folder / "prior.safetensors")
    monkeypatch.setenv(model_files.ENV_VAR, str(folder))
    assert model_files.resolve_model("default", "prior") == folder / "prior.safetensors"
    with pytest.raises(MissingAssetError):
        model_files.resolve_model("../elsewhere/p.safetensors", "prior")


def test_a_cli_checkpoint_argument_names_the_embedded_model_when_absent_or_default(tmp_path, monkeypatch):
    assert models.model_path(None, "vqgan") == models.model_path("default", "vqgan") == models.DEFAULT_DIR / "vqgan.safetensors"
    assert models.model_path("default", "prior") == models.DEFAULT_DIR / "prior.safetensors"
    assert models.model_path("runs/x/model.safetensors", "prior") == Path("runs/x/model.safetensors")
    monkeypatch.setattr(models, "DEFAULT_DIR", tmp_path)  # a checkout without the weights
    with pytest.raises(MissingAssetError, match="embedded default vqgan"):
        models.model_path("default", "vqgan")
