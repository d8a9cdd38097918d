"""Prior adapters (sundae_core/adapters.py): a fine-tune kept as the low-rank change of its
weights, extracted, saved, applied by the node, refused on another prior."""

import json

import pytest
import torch

from sundae_core.adapters import (AdapterBaseError, AdapterConfig, apply_adapter, base_fingerprint, extract_adapter,
                                  load_adapter, save_adapter)
from sundae_core.checkpoint import save_checkpoint, weights_fingerprint
from sundae_core.config import HourglassConfig
from sundae_core.errors import CheckpointError, ConfigError, InputError
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import load_prior, save_model
from sundae_nodes import NODE_CLASS_MAPPINGS as N
from sundae_nodes.model_files import list_models
from trainers.checkpoints import extract_adapter as extract_cli

VOCAB = 16
CONFIG = HourglassConfig(vocab_size=VOCAB, dim=32, heads=2, depth=(1, 1, 1), shorten=4, num_classes=3,
                         token_version="abcdef012345")


def _prior(seed: int) -> HourglassTransformer:
    torch.manual_seed(seed)
    return HourglassTransformer(CONFIG).eval()


def _low_rank_tuning(base: HourglassTransformer, rank: int, seed: int = 1) -> HourglassTransformer:
    """`base` with every matrix moved by an exactly rank-`rank` change and every other tensor by noise."""
    g = torch.Generator().manual_seed(seed)
    tuned = _prior(0)
    tuned.load_state_dict(base.state_dict())
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if p.ndim == 2 and min(p.shape) >= 2 * rank:
                p += 0.05 * torch.randn(p.shape[0], rank, generator=g) @ torch.randn(rank, p.shape[1], generator=g)
            else:
                p += 0.05 * torch.randn(p.shape, generator=g)
    return tuned


def _logits(model: HourglassTransformer) -> torch.Tensor:
    tokens = torch.randint(0, VOCAB, (2, 8, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return model(tokens, torch.tensor([0, 1])).float()


def test_an_exactly_low_rank_fine_tune_comes_back_whole_and_strength_scales_it():
    base = _prior(0)
    tuned = _low_rank_tuning(base, rank=2)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    adapter = extract_adapter(base.state_dict(), tuned.state_dict(), rank=2, token_version=CONFIG.token_version)
    assert any(k.endswith(".up") for k in adapter.tensors) and any(k.endswith(".delta") for k in adapter.tensors)
    assert torch.allclose(_logits(apply_adapter(base, adapter)), _logits(tuned), atol=1e-4)
    assert apply_adapter(base, adapter, strength=0.0) is base
    other = _prior(3)
    assert apply_adapter(other, adapter, strength=0.0) is other  # 0 switches it off on any prior
    half = apply_adapter(base, adapter, strength=0.5).state_dict()
    for name, value in half.items():
        assert torch.allclose(value, (before[name] + tuned.state_dict()[name]) / 2, atol=1e-5), name
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())  # the base is left as it was


def test_a_lower_rank_keeps_the_largest_part_of_the_change():
    base = _prior(0)
    tuned = _low_rank_tuning(base, rank=4)
    errors = []
    for rank in (1, 2, 4):
        merged = apply_adapter(base, extract_adapter(base.state_dict(), tuned.state_dict(), rank, "")).state_dict()
        errors.append(sum(float((merged[k] - v).square().sum()) for k, v in tuned.state_dict().items()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-8


def test_an_adapter_is_refused_on_another_prior_and_its_strength_is_bounded():
    base, other = _prior(0), _prior(3)
    adapter = extract_adapter(base.state_dict(), _low_rank_tuning(base, 2).state_dict(), 2, "")
    with pytest.raises(AdapterBaseError, match="made from the prior with weights fingerprint"):
        apply_adapter(other, adapter)
    with pytest.raises(InputError, match="strength must be in"):
        apply_adapter(base, adapter, strength=-1.0)


def test_the_fingerprint_is_the_files_whatever_dtype_the_prior_runs_in(tmp_path):
    base = _prior(0).to(torch.bfloat16).float()  # bf16 values, as the embedded prior is stored
    assert weights_fingerprint(base.state_dict()) == weights_fingerprint(base.to(torch.bfloat16).state_dict())
    assert weights_fingerprint(_prior(3).state_dict()) != weights_fingerprint(base.state_dict())
    save_model(tmp_path / "prior.safetensors", base)
    adapter = extract_adapter(base.state_dict(), _low_rank_tuning(base, 2).state_dict(), 2, CONFIG.token_version)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):  # float16: the record made at load decides
        loaded = load_prior(tmp_path / "prior.safetensors", dtype=dtype)
        assert base_fingerprint(loaded) == adapter.config.base_fingerprint, dtype
        merged = apply_adapter(loaded, adapter)
        assert all(p.dtype == dtype for p in merged.parameters()) and not merged.training


def test_adapters_of_one_prior_stack_and_not_on_another():
    base = _prior(0)
    first = extract_adapter(base.state_dict(), _low_rank_tuning(base, 2, seed=1).state_dict(), 2, "")
    second = extract_adapter(base.state_dict(), _low_rank_tuning(base, 2, seed=2).state_dict(), 2, "")
    both = apply_adapter(apply_adapter(base, first), second).state_dict()
    changes = (first.changes(), second.changes())
    for name, value in base.state_dict().items():
        expected = value + sum(c.get(name, 0.0) for c in changes)
        assert torch.allclose(both[name], expected, atol=1e-5), name
    # the base checked is the one the first adapter was applied to, not the merged weights: a prior
    # holding the base's weights but recorded as adapted from another is refused
    stacked = apply_adapter(_prior(3), extract_adapter(_prior(3).state_dict(), base.state_dict(), 2, ""))
    assert stacked.adapted_from == weights_fingerprint(_prior(3).state_dict())
    lookalike = _prior(0)
    lookalike.adapted_from = stacked.adapted_from
    apply_adapter(_prior(0), first)  # the same weights without the record: applies
    with pytest.raises(AdapterBaseError, match="made from the prior with weights fingerprint"):
        apply_adapter(lookalike, first)


def test_save_and_load_round_trip_and_a_damaged_file_is_refused(tmp_path):
    base = _prior(0)
    adapter = extract_adapter(base.state_dict(), _low_rank_tuning(base, 2).state_dict(), 2, "v", "holes")
    save_adapter(tmp_path / "a.safetensors", adapter)
    loaded = load_adapter(tmp_path / "a.safetensors")
    assert loaded.config == adapter.config and loaded.tensors.keys() == adapter.tensors.keys()
    assert all(v.dtype == torch.bfloat16 for v in loaded.tensors.values())
    config = json.loads(json.dumps(adapter.config.__dict__))
    broken = {k: v for k, v in adapter.tensors.items() if not k.endswith(".down")}
    save_checkpoint(tmp_path / "b.safetensors", broken, kind="prior_adapter", config=config)
    with pytest.raises(CheckpointError, match="no matching .down factor"):
        load_adapter(tmp_path / "b.safetensors")
    factored = next(k for k in adapter.tensors if k.endswith(".up"))[: -len(".up")]
    twice = {**adapter.tensors, f"{factored}.delta": torch.zeros(1)}
    save_checkpoint(tmp_path / "c.safetensors", twice, kind="prior_adapter", config=config)
    with pytest.raises(CheckpointError, match="changed both as factors and whole"):
        load_adapter(tmp_path / "c.safetensors")
    save_model(tmp_path / "p.safetensors", base)
    with pytest.raises(CheckpointError, match="'prior_adapter' checkpoint is needed"):
        load_adapter(tmp_path / "p.safetensors")


def test_extract_cli_writes_an_adapter_the_node_lists_and_applies(tmp_path, monkeypatch, capsys, caplog):
    base = _prior(0)
    save_model(tmp_path / "prior.safetensors", base)
    save_model(tmp_path / "tuned.safetensors", _low_rank_tuning(base, 2))
    out = tmp_path / "adapters" / "holes.safetensors"
    argv = ["--base", str(tmp_path / "prior.safetensors"), "--tuned", str(tmp_path / "tuned.safetensors"),
            "--rank", "2", "--out", str(out), "--purpose", "a test"]
    assert extract_cli.main(argv) == 0
    assert "keeps 100.0% of the fine-tune's change" in capsys.readouterr().out
    assert load_adapter(out).config.purpose == "a test"
    assert extract_cli.main([*argv[:2], "--tuned", str(tmp_path / "prior.safetensors"), "--out",
                             str(tmp_path / "same.safetensors")]) == 1
    assert "same weights" in capsys.readouterr().err
    assert extract_cli.main([*argv, "--rank", "0"]) == 1
    assert "--rank must be in [1, 256], got 0" in capsys.readouterr().err
    save_model(tmp_path / "wide.safetensors", HourglassTransformer(HourglassConfig(**{**CONFIG.__dict__, "heads": 4})))
    assert extract_cli.main([*argv[:2], "--tuned", str(tmp_path / "wide.safetensors"), "--out",
                             str(tmp_path / "wide_adapter.safetensors")]) == 1  # the same shapes, other attention
    err = capsys.readouterr().err
    assert "another config than --base" in err and "heads 2 -> 4" in err

    monkeypatch.setenv("SUNDAE_MODEL_DIR", str(tmp_path))
    assert "adapters/holes.safetensors" in list_models("prior_adapter", with_default=False)
    node = N["SundaeApplyPriorAdapter"]
    assert node.INPUT_TYPES()["required"]["adapter_name"][0] == list_models("prior_adapter", with_default=False)
    assert node.IS_CHANGED(adapter_name="adapters/holes.safetensors").startswith("adapters/holes.safetensors:sha256:")
    prior = N["SundaePriorLoader"]().load("default")[0]
    adapted = node().apply(prior, "adapters/holes.safetensors", 1.0)[0]
    tuned = load_prior(tmp_path / "tuned.safetensors", dtype=next(prior.parameters()).dtype)
    assert torch.allclose(_logits(adapted), _logits(tuned), atol=0.05)
    # another prior (a user's own in place of the embedded one): passed through, with a warning
    other = _prior(3)
    with caplog.at_level("WARNING", logger="sundae"):
        assert node().apply(other, "adapters/holes.safetensors", 1.0)[0] is other
    assert "SUNDAE Apply Prior Adapter (adapters/holes.safetensors): this adapter was made from" in caplog.text


def test_an_adapter_config_needs_a_rank():
    with pytest.raises(ConfigError, match="rank must be >= 1"):
        AdapterConfig(rank=0, base_fingerprint="", token_version="")
