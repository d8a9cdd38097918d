import json

import pytest
import torch
import torch.nn.functional as F

from sundae_core.checkpoint import read_metadata
from sundae_core.config import HourglassConfig
from sundae_core.errors import ConfigError
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import load_prior, save_model
from trainers.checkpoints import grow_prior
from trainers.training import train_prior
from trainers.training.run_state import init_weights

TINY = dict(vocab_size=16, dim=16, heads=2, depth=(1, (1, 1, 1), 1), shorten=4, num_classes=3)


@pytest.fixture
def source(tmp_path):
    torch.manual_seed(0)
    model = HourglassTransformer(HourglassConfig(**TINY)).eval()
    path = tmp_path / "prior.safetensors"
    save_model(path, model, metadata={"step": "7"})
    return path, model


def test_the_grown_prior_computes_what_its_source_did(source, tmp_path):
    path, model = source
    out = tmp_path / "grown.safetensors"
    assert grow_prior.main([str(path), "--depth", "2, (1, 3, 2), 1", "--out", str(out)]) == 0
    grown = load_prior(out, dtype=torch.float32)
    assert grown.config.depth == (2, (1, 3, 2), 1) and grown.config.num_classes == 3
    tokens, labels = torch.randint(0, 16, (3, 8, 8)), torch.tensor([0, 2, 3])
    with torch.no_grad():
        torch.testing.assert_close(grown(tokens, labels), model(tokens, labels), rtol=0, atol=1e-6)
    assert json.loads(read_metadata(out)["grown_from"]) == {"file": "prior.safetensors", "step": "7",
                                                            "depth": [1, [1, 1, 1], 1]}


def test_the_new_blocks_learn_when_fine_tuned(source, tmp_path):
    """A fine-tune (train.init with model.depth grown) starts from the file, and one optimiser step
    moves the added blocks' zeroed layers and then, through them, the rest of those blocks."""
    path, _ = source
    out = tmp_path / "grown.safetensors"
    assert grow_prior.main([str(path), "--depth", "1,(1,2,1),1", "--out", str(out)]) == 0
    model = HourglassTransformer(HourglassConfig(**{**TINY, "depth": (1, (1, 2, 1), 1)}))
    init_weights(model, out, "prior")
    new = model.body.valley.valley.pre[1]
    assert not new.attn.to_out.weight.any() and not new.mlp[2].weight.any()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    tokens = torch.randint(0, 16, (4, 8, 8))
    for _ in range(2):
        loss = F.cross_entropy(model(tokens, torch.tensor([0, 1, 2, 3])).flatten(0, 2), tokens.flatten())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert new.attn.to_out.weight.abs().sum() > 0 and new.mlp[2].weight.abs().sum() > 0
    assert new.attn.to_q.weight.grad.abs().sum() > 0  # reached through the no longer zero output layer


@pytest.mark.parametrize("depth, named", [("1,(1,1,1),1", "give more blocks"), ("1,(0,2,1),1", "never removes"),
                                          ("1,(1,(1,1,1),1),1", "cannot add or remove levels"),
                                          ("1,[2", "write the hourglass depth")])
def test_depths_that_do_not_grow_the_source_are_refused_in_one_line(source, tmp_path, capsys, depth, named):
    path, _ = source
    out = tmp_path / "grown.safetensors"
    assert grow_prior.main([str(path), "--depth", depth, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]
    assert not out.exists()


def test_added_parameters_are_the_new_blocks_and_need_a_grown_file(source, tmp_path):
    path, _ = source
    out = tmp_path / "grown.safetensors"
    assert grow_prior.main([str(path), "--depth", "1,(1,2,1),1", "--out", str(out)]) == 0
    added = grow_prior.added_parameters(out, load_prior(out).config)
    assert added and all(name.startswith("body.valley.valley.pre.1.") for name in added)
    assert len(added) == len(list(HourglassTransformer(HourglassConfig(**TINY)).body.valley.valley.pre[0].parameters()))
    with pytest.raises(ConfigError, match="not made by sundae-grow-prior"):
        grow_prior.added_parameters(path, load_prior(path).config)


def test_a_fine_tune_of_a_grown_prior_scales_the_new_blocks_rate_and_resumes(source, tmp_path, latents):
    path, _ = source
    grown = tmp_path / "grown.safetensors"
    assert grow_prior.main([str(path), "--depth", "1,(1,2,1),1", "--out", str(grown)]) == 0
    data = latents(num_classes=3, decoder="pixels")
    run = tmp_path / "run"
    sets = ["model.vocab_size=16", "model.dim=16", "model.heads=2", "model.depth=[1, [1, 2, 1], 1]",
            "model.num_classes=3", "train.batch_size=4", "train.warmup=1", "train.lr=0.001", "train.log_every=1",
            "train.val_every=1000", "train.val_samples=0", "train.sample_every=1000", "train.bf16=false",
            f"train.init={grown}", "train.grown_lr_scale=10", f"data.path={data}"]
    command = ["--run-dir", str(run), "--no-progress", *[a for s in sets for a in ("--set", s)]]
    assert train_prior.main(command + ["--set", "train.steps=2"]) == 0
    groups = json.loads(read_metadata(run / "state.safetensors")["param_groups"])["opt"]
    assert [(g["lr_scale"], g["lr"]) for g in groups] == [(1.0, 0.001), (1.0, 0.001), (10.0, 0.01), (10.0, 0.01)]
    added = grow_prior.added_parameters(grown, load_prior(grown).config)
    assert sum(len(g["params"]) for g in groups[2:]) == len(added)
    assert train_prior.main(command + ["--set", "train.steps=3"]) == 0  # resumes with the same groups
    groups = json.loads(read_metadata(run / "state.safetensors")["param_groups"])["opt"]
    assert [g["lr_scale"] for g in groups] == [1.0, 1.0, 10.0, 10.0]


def test_grown_lr_scale_without_a_grown_init_is_one_error_line(source, tmp_path, latents, capsys):
    path, _ = source
    data = latents(num_classes=3, decoder="pixels")
    base = ["--no-progress", "--set", "model.vocab_size=16", "--set", "model.dim=16", "--set", "model.heads=2",
            "--set", "model.depth=[1, [1, 1, 1], 1]", "--set", "model.num_classes=3", "--set", f"data.path={data}",
            "--set", "train.steps=1", "--set", "train.grown_lr_scale=10"]
    assert train_prior.main(["--run-dir", str(tmp_path / "a"), *base]) == 1
    assert train_prior.main(["--run-dir", str(tmp_path / "b"), *base, "--set", f"train.init={path}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "set train.init to the grown prior" in err[0] and "not made by sundae-grow-prior" in err[1]
