import os

import pytest

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
