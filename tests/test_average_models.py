import json

import pytest
import torch

from sundae_core.checkpoint import load_checkpoint, read_metadata
from sundae_core.config import HourglassConfig, VQGANConfig
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import TOKEN_VERSION_KEY, load_prior, load_vqgan, save_model
from sundae_core.vqgan import VQGAN
from trainers.checkpoints import average_models

TINY = dict(vocab_size=16, dim=16, heads=2, depth=(1, 1, 1), num_classes=3)


def saved_prior(path, seed, **changes):
    torch.manual_seed(seed)
    model = HourglassTransformer(HourglassConfig(**{**TINY, **changes}))
    save_model(path, model, metadata={"step": str(seed)})
    return model


def test_the_average_is_the_weighted_mean_of_every_weight(tmp_path):
    a = saved_prior(tmp_path / "a.safetensors", 1)
    b = saved_prior(tmp_path / "b.safetensors", 2, dropout=0.2)  # dropout may differ: the weights mean the same
    out = tmp_path / "soup.safetensors"
    assert average_models.main([str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                                "--weights", "3,1", "--out", str(out)]) == 0
    soup = load_prior(out)
    assert soup.config == a.config
    sa, sb = a.state_dict(), b.state_dict()
    for name, value in soup.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.75 * sa[name] + 0.25 * sb[name])
    sources = json.loads(read_metadata(out)["averaged_from"])
    assert [(s["file"], s["step"], s["weight"]) for s in sources] == [("a.safetensors", "1", 0.75),
                                                                      ("b.safetensors", "2", 0.25)]


def test_equal_weights_by_default_and_bf16_on_request(tmp_path):
    for seed in (1, 2, 3):
        saved_prior(tmp_path / f"{seed}.safetensors", seed)
    out = tmp_path / "soup.safetensors"
    assert average_models.main([str(tmp_path / f"{s}.safetensors") for s in (1, 2, 3)]
                               + ["--out", str(out), "--bf16"]) == 0
    weights = [s["weight"] for s in json.loads(read_metadata(out)["averaged_from"])]
    assert weights == pytest.approx([1 / 3] * 3, abs=1e-5)
    assert all(t.dtype == torch.bfloat16 for t in load_checkpoint(out).tensors.values() if t.is_floating_point())


@pytest.mark.parametrize("changes, named", [({"dim": 32}, "dim=32"), ({"num_classes": 4}, "num_classes=4"),
                                            ({"token_version": "abc"}, "token_version='abc'")])
def test_priors_that_do_not_share_an_architecture_are_refused_in_one_line(tmp_path, capsys, changes, named):
    saved_prior(tmp_path / "a.safetensors", 1)
    saved_prior(tmp_path / "b.safetensors", 2, **changes)
    out = tmp_path / "soup.safetensors"
    assert average_models.main([str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                                "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "b.safetensors" in err[0] and named in err[0]
    assert not out.exists()


@pytest.mark.parametrize("argv, says", [(["--weights", "1"], "one per source"),
                                        (["--weights", "1,x"], "one number per source"),
                                        (["--weights", "0,0"], "not all 0"),
                                        (["--weights", "1,nan"], "finite"),
                                        (["--weights", "inf,1"], "finite")])
def test_bad_weights_are_named(tmp_path, capsys, argv, says):
    saved_prior(tmp_path / "a.safetensors", 1)
    saved_prior(tmp_path / "b.safetensors", 2)
    assert average_models.main([str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                                "--out", str(tmp_path / "soup.safetensors"), *argv]) == 1
    err = capsys.readouterr().err
    assert "--weights" in err and says in err


TINY_VQ = dict(resolution=32, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=4,
               embed_dim=4, n_embed=16, norm="channel")


def saved_vqgan(path, seed, encoder_seed=0):
    """A tiny VQ-GAN whose encoding parts come from `encoder_seed` and decoder from `seed`: as a
    decoder run with the encoder frozen leaves them."""
    torch.manual_seed(encoder_seed)
    model = VQGAN(VQGANConfig(**TINY_VQ))
    torch.manual_seed(seed)
    other = VQGAN(VQGANConfig(**TINY_VQ))
    model.decoder.load_state_dict(other.decoder.state_dict())
    model.post_quant_conv.load_state_dict(other.post_quant_conv.state_dict())
    save_model(path, model, metadata={"step": str(seed)})
    return model


def test_vqgan_decoders_of_one_token_version_average_and_keep_the_encoder_bit_for_bit(tmp_path):
    a = saved_vqgan(tmp_path / "a.safetensors", 1)
    b = saved_vqgan(tmp_path / "b.safetensors", 2)
    assert a.token_version == b.token_version
    out = tmp_path / "mean.safetensors"
    assert average_models.main([str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                                "--out", str(out)]) == 0
    mean = load_vqgan(out)
    assert mean.token_version == a.token_version and read_metadata(out)[TOKEN_VERSION_KEY] == a.token_version
    sa, sb = a.state_dict(), b.state_dict()
    for name, value in mean.state_dict().items():
        if name.startswith(("encoder.", "quant_conv.", "quantize.")) or not value.is_floating_point():
            assert torch.equal(value, sa[name])
        else:
            torch.testing.assert_close(value, 0.5 * sa[name] + 0.5 * sb[name])
    assert not torch.equal(mean.state_dict()["decoder.conv_in.weight"], sa["decoder.conv_in.weight"])


def test_vqgans_of_different_token_versions_are_refused_naming_the_fix(tmp_path, capsys):
    saved_vqgan(tmp_path / "a.safetensors", 1)
    saved_vqgan(tmp_path / "b.safetensors", 2, encoder_seed=5)
    out = tmp_path / "mean.safetensors"
    assert average_models.main([str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                                "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "b.safetensors" in err[0] and "train.freeze_encoder" in err[0]
    assert not out.exists()


def test_a_prior_with_a_vqgan_or_a_single_source_is_refused(tmp_path, capsys):
    saved_prior(tmp_path / "a.safetensors", 1)
    assert average_models.main([str(tmp_path / "a.safetensors"), "--out", str(tmp_path / "s.safetensors")]) == 1
    assert "two or more" in capsys.readouterr().err
    saved_vqgan(tmp_path / "v.safetensors", 1)
    assert average_models.main([str(tmp_path / "a.safetensors"), str(tmp_path / "v.safetensors"),
                                "--out", str(tmp_path / "s.safetensors")]) == 1
    assert "average priors with priors and VQ-GANs with VQ-GANs" in capsys.readouterr().err
