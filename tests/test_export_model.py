import torch

from sundae_core.checkpoint import load_checkpoint, read_metadata
from sundae_core.config import HourglassConfig
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import load_prior, save_model
from trainers.checkpoints import export_model


def test_export_casts_to_bf16_and_keeps_config_and_notes(tmp_path, capsys):
    model = HourglassTransformer(HourglassConfig(vocab_size=16, dim=16, heads=2, depth=(1, 1, 1)))
    save_model(tmp_path / "m.safetensors", model, metadata={"step": "7"})
    assert export_model.main([str(tmp_path / "m.safetensors"), str(tmp_path / "out.safetensors"),
                              "--bf16", "--note", "data=test set"]) == 0
    shipped = load_prior(tmp_path / "out.safetensors")
    assert shipped.config == model.config
    assert all(t.dtype == torch.bfloat16 for t in load_checkpoint(tmp_path / "out.safetensors").tensors.values())
    meta = read_metadata(tmp_path / "out.safetensors")
    assert meta["step"] == "7" and meta["data"] == "test set"


def test_export_refuses_a_garbage_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    assert export_model.main([str(bad), str(tmp_path / "out.safetensors")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.safetensors" in err[0]
