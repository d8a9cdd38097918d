"""train.init: a new run starts from a model file's weights (fine-tuning from the shipped models)."""

import dataclasses

import pytest
import torch

from sundae_core.config import HourglassConfig
from sundae_core.errors import CheckpointError
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import save_model
from trainers.training.run_state import init_weights

CONFIG = HourglassConfig(vocab_size=16, dim=16, heads=1, depth=(1, 1, 1), shorten=4, num_classes=3)


def test_init_copies_every_weight_from_a_bf16_file(tmp_path):
    torch.manual_seed(0)
    source = HourglassTransformer(CONFIG).to(torch.bfloat16)
    save_model(tmp_path / "prior.safetensors", source)
    torch.manual_seed(1)
    fresh = HourglassTransformer(CONFIG)
    init_weights(fresh, tmp_path / "prior.safetensors", "prior")
    for name, tensor in source.state_dict().items():
        assert fresh.state_dict()[name].dtype == torch.float32
        assert torch.equal(fresh.state_dict()[name], tensor.float()), name


def test_init_from_a_file_of_another_shape_names_the_fields(tmp_path):
    save_model(tmp_path / "prior.safetensors", HourglassTransformer(CONFIG))
    other = HourglassTransformer(HourglassConfig(vocab_size=16, dim=32, heads=1, depth=(1, 1, 1), shorten=4,
                                                 num_classes=3))
    with pytest.raises(CheckpointError, match="dim"):
        init_weights(other, tmp_path / "prior.safetensors", "prior")


def test_init_ignores_dropout_which_has_no_weights(tmp_path):
    """A fine-tune may regularise with dropout where the file was trained without (the GPU run)."""
    torch.manual_seed(0)
    source = HourglassTransformer(CONFIG)
    save_model(tmp_path / "prior.safetensors", source)
    fresh = HourglassTransformer(dataclasses.replace(CONFIG, dropout=0.1))
    init_weights(fresh, tmp_path / "prior.safetensors", "prior")
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in source.state_dict().items())
    elsewhere = HourglassTransformer(dataclasses.replace(CONFIG, dropout=0.2, attention_dropout_at="output"))
    init_weights(elsewhere, tmp_path / "prior.safetensors", "prior")
    assert all(torch.equal(elsewhere.state_dict()[k], v) for k, v in source.state_dict().items())
