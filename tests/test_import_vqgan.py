"""Importing reference-layout (taming-transformers) VQ-GAN checkpoints built here in the test."""

import pytest
import torch
import yaml

from sundae_core.config import VQGANConfig, to_dict
from sundae_core.models import load_vqgan
from sundae_core.vqgan import VQGAN
from trainers.checkpoints.import_vqgan import config_from_yaml, main

# ch 32 keeps GroupNorm(32) valid; attention at feature size 16 of resolution 32 = level 1.
CONFIG = VQGANConfig(resolution=32, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,),
                     z_channels=8, embed_dim=4, n_embed=16, mid_attention=True)


class ModelCheckpoint:
    """Stands for a Lightning callback class stored (as a dict key) in real checkpoints."""


def _reference_yaml(path, config=CONFIG, **dd_overrides):
    dd = {"double_z": False, "z_channels": config.z_channels, "resolution": config.resolution,
          "in_channels": 3, "out_ch": 3, "ch": config.ch, "ch_mult": list(config.ch_mult),
          "num_res_blocks": config.num_res_blocks, "attn_resolutions": list(config.attn_resolutions),
          "dropout": 0.0, **dd_overrides}
    doc = {"model": {"base_learning_rate": 4.5e-6, "target": "taming.models.vqgan.VQModel",
                     "params": {"embed_dim": config.embed_dim, "n_embed": config.n_embed, "ddconfig": dd,
                                "lossconfig": {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                                               "params": {"disc_start": 15000, "disc_weight": 0.5}}}}}
    path.write_text(yaml.safe_dump(doc))
    return path


def _reference_ckpt(path, model, prefix=""):
    state = {prefix + k: v.clone() for k, v in model.state_dict().items()}
    state["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4)
    state["loss.logvar"] = torch.zeros(())
    if prefix:  # a checkpoint bundled with a transformer carries other models too
        state["transformer.tok_emb.weight"] = torch.randn(16, 8)
    torch.save({"epoch": 3, "global_step": 1234, "state_dict": state,
                "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.5)}},
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6}]}]}, path)
    return path


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = VQGAN(CONFIG).eval()
    with torch.no_grad():  # spread the codebook so random tokens decode to distinct images
        m.quantize.embedding.weight.normal_()
    return m


def _assert_same_model(path, model):
    imported = load_vqgan(path)
    assert imported.config == model.config
    tokens = torch.randint(0, CONFIG.n_embed, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(imported.decode(tokens), model.decode(tokens))
        assert torch.equal(imported.encode(images), model.encode(images))


@pytest.mark.parametrize("prefix", ["first_stage_model.", ""])
def test_import_with_yaml_decodes_identically(tmp_path, model, prefix, capsys):
    ckpt = _reference_ckpt(tmp_path / "last.ckpt", model, prefix)
    cfg = _reference_yaml(tmp_path / "model.yaml")
    out = tmp_path / "vqgan.safetensors"
    assert main([str(ckpt), "--config", str(cfg), "-o", str(out)]) == 0
    _assert_same_model(out, model)
    printed = capsys.readouterr().out
    assert "global step 1234" in printed and "ModelCheckpoint" in printed


def test_import_without_yaml_reads_the_architecture_off_the_weights(tmp_path, model):
    ckpt = _reference_ckpt(tmp_path / "last.ckpt", model, "first_stage_model.")
    assert main([str(ckpt)]) == 0  # output defaults to last.safetensors beside it
    imported = load_vqgan(tmp_path / "last.safetensors")
    # resolution is only an anchor for attn_resolutions; the built network is the same
    assert imported.config.resolution == 256 and imported.config.attn_resolutions == (128,)
    tokens = torch.randint(0, CONFIG.n_embed, (1, 3, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(imported.decode(tokens), model.decode(tokens))


def test_transformer_yaml_and_megapixel_fields(tmp_path):
    doc = {"model": {"target": "taming.models.cond_transformer.Net2NetTransformer", "params": {
        "first_stage_config": {"target": "taming.models.vqgan.VQModel", "params": {
            "embed_dim": 256, "n_embed": 8192, "ddconfig": {
                "double_z": False, "z_channels": 256, "resolution": 1024, "in_channels": 3, "out_ch": 3,
                "ch": 128, "ch_mult": [1, 1, 2, 2, 4, 4], "num_res_blocks": 1, "attn_resolutions": [64],
                "dropout": 0.0}}}}}}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    config = config_from_yaml(path)
    assert config.factor == 32 and config.n_embed == 8192 and config.mid_attention
    assert to_dict(config)["ch_mult"] == [1, 1, 2, 2, 4, 4]


def _run_error(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1, err
    return err


def test_errors_are_one_clear_line(tmp_path, model, capsys):
    assert "does not exist" in _run_error(capsys, [str(tmp_path / "missing.ckpt")])
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    assert "not a readable PyTorch checkpoint" in _run_error(capsys, [str(junk)])
    torch.save({"state_dict": {"foo.weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    assert "not a reference VQ-GAN" in _run_error(capsys, [str(tmp_path / "other.ckpt")])

    ckpt = _reference_ckpt(tmp_path / "last.ckpt", model)
    wrong = _reference_yaml(tmp_path / "wrong.yaml", VQGANConfig(**{**to_dict(CONFIG), "ch_mult": (1, 2),
                                                                     "n_embed": 32}))
    assert "shape mismatch" in _run_error(capsys, [str(ckpt), "-c", str(wrong), "-o", str(tmp_path / "a.st")])
    double_z = _reference_yaml(tmp_path / "d.yaml", double_z=True)
    assert "double_z" in _run_error(capsys, [str(ckpt), "-c", str(double_z), "-o", str(tmp_path / "b.st")])
    assert not (tmp_path / "a.st").exists() and not (tmp_path / "b.st").exists()

    out = tmp_path / "exists.safetensors"
    out.write_bytes(b"keep me")
    assert "--force" in _run_error(capsys, [str(ckpt), "-o", str(out)])
    assert out.read_bytes() == b"keep me"
    assert main([str(ckpt), "-o", str(out), "--force"]) == 0


def test_malicious_checkpoint_is_refused_without_running(tmp_path, capsys):
    import os

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"encoder.conv_in.weight": torch.zeros(1)}, "x": Payload()}, ckpt)
    assert "refused" in _run_error(capsys, [str(ckpt)])
    assert not marker.exists()


def test_an_absurd_yaml_is_refused_before_the_model_is_allocated(tmp_path, model, capsys):
    ckpt = _reference_ckpt(tmp_path / "last.ckpt", model)
    huge = _reference_yaml(tmp_path / "huge.yaml", ch=10 ** 6)  # 36 TB of convolutions
    err = _run_error(capsys, [str(ckpt), "-c", str(huge), "-o", str(tmp_path / "out.safetensors")])
    assert "GiB of parameters, over the ceiling" in err and "SUNDAE_MAX_MODEL_BYTES" in err
    deep = tmp_path / "deep.yaml"
    deep.write_text("model: " + "[" * 1000 + "]" * 1000)
    assert "nested too deeply" in _run_error(capsys, [str(ckpt), "-c", str(deep), "-o", str(tmp_path / "o.st")])
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "o.st").exists()
