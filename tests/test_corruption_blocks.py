"""Block corruption (issue 12), class names, and a tiny prior that learns to fill a hole."""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from sundae_core.checkpoint import save_checkpoint
from sundae_core.config import HourglassConfig, from_dict, to_dict
from sundae_core.corruption import CONTEXT_RATE, BlockShapes, block_mask, corrupt
from sundae_core.errors import ConfigError, InputError
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import load_prior
from sundae_core.unroll import unrolled_loss
from sundae_nodes import NODE_CLASS_MAPPINGS as N
from trainers.data import build_latents
from trainers.training import train_prior

V = 16


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _papers_corrupt(tokens, vocab_size, generator, rate=None):
    """corrupt() as it was before block corruption, kept verbatim as the reference."""
    b = tokens.shape[0]
    if rate is None:
        t = torch.rand(b, generator=generator)
    else:
        t = torch.as_tensor(rate, dtype=torch.float32).expand(b).clone()
    r = torch.rand(tokens.shape, generator=generator)
    replaced = r < t.view(b, *([1] * (tokens.ndim - 1)))
    noise = torch.randint(0, vocab_size, tokens.shape, generator=generator)
    return torch.where(replaced, noise, tokens), t, replaced


def _prior(**kw) -> HourglassTransformer:
    """A tiny prior, built without moving the global RNG that other tests may rely on."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return HourglassTransformer(HourglassConfig(**{"vocab_size": V, "dim": 16, "heads": 2,
                                                       "depth": (1, 1, 1), **kw}))


def _components(mask: torch.Tensor) -> int:
    """Number of 4-connected components of a (h w) bool mask."""
    todo = {tuple(p) for p in mask.nonzero().tolist()}
    count = 0
    while todo:
        count += 1
        queue = deque([todo.pop()])
        while queue:
            y, x = queue.popleft()
            for q in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if q in todo:
                    todo.remove(q)
                    queue.append(q)
    return count


# --- corruption ------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [None, 0.3])
def test_block_share_zero_is_the_papers_corruption_token_for_token(rate):
    tokens = torch.randint(0, V, (8, 6, 7), generator=_gen(3))
    want_tokens, want_t, want_replaced = _papers_corrupt(tokens, V, _gen(5), rate)
    for kwargs in ({}, {"block_share": 0.0}, {"block_share": 0.0, "block_shapes": BlockShapes(max_shapes=4)}):
        c = corrupt(tokens, V, generator=_gen(5), rate=rate, **kwargs)
        assert torch.equal(c.tokens, want_tokens) and torch.equal(c.replaced, want_replaced)
        assert torch.equal(c.rate, want_t) and c.block is None


@pytest.mark.parametrize("kind", ["rectangle", "stroke"])
@pytest.mark.parametrize("h, w", [(8, 8), (16, 12), (5, 9), (2, 2), (1, 6)])
def test_each_shape_is_one_contiguous_region_inside_the_grid(kind, h, w):
    shapes = BlockShapes(max_shapes=1, stroke_share=1.0 if kind == "stroke" else 0.0)
    masks = block_mask((200, h, w), generator=_gen(7), shapes=shapes)
    assert masks.shape == (200, h, w) and masks.dtype == torch.bool
    lo_h, hi_h = max(1, round(h / 8)), max(max(1, round(h / 8)), round(h * 3 / 4))
    for m in masks:
        assert m.any() and _components(m) == 1
        if kind == "rectangle":  # exactly its bounding box, sides in [min_side, max_side] of the grid
            rows, cols = m.any(dim=1).nonzero().flatten(), m.any(dim=0).nonzero().flatten()
            assert int(m.sum()) == len(rows) * len(cols)
            assert lo_h <= len(rows) <= hi_h
    if h * w >= 40:  # shapes vary in size and place: not one fixed block
        assert len({tuple(m.flatten().tolist()) for m in masks}) > 20


def test_several_shapes_per_sample_and_their_union():
    shapes = BlockShapes(max_shapes=3)
    masks = block_mask((300, 16, 16), generator=_gen(1), shapes=shapes)
    parts = [_components(m) for m in masks]
    assert min(parts) >= 1 and max(parts) <= 3 and len(set(parts)) > 1
    cover = masks.float().mean(dim=(1, 2))
    assert 0 < cover.min() and cover.max() < 1 and 0.05 < cover.mean() < 0.6


def test_block_tokens_are_all_redrawn_and_the_share_of_block_samples_holds():
    tokens = torch.randint(0, V, (2000, 8, 8), generator=_gen(2))
    c = corrupt(tokens, V, generator=_gen(4), block_share=0.3)
    assert c.block.shape == tokens.shape and c.block.dtype == torch.bool
    assert not (c.block & ~c.replaced).any()  # every token of a block is redrawn
    assert torch.equal(c.tokens[~c.replaced], tokens[~c.replaced])
    chosen = c.block.any(dim=(1, 2))  # every block sample has a non-empty block
    assert abs(chosen.float().mean().item() - 0.3) < 0.03
    # block samples: scattered corruption around the block at t ~ U[0, CONTEXT_RATE]
    assert c.rate[chosen].max() <= CONTEXT_RATE and c.rate[chosen].mean() == pytest.approx(CONTEXT_RATE / 2, abs=0.03)
    assert c.rate[~chosen].max() > 0.9  # the others keep the paper's t ~ U[0, 1]
    outside = c.replaced & ~c.block
    share_outside = outside[chosen].float().sum() / (~c.block[chosen]).float().sum()
    assert share_outside.item() == pytest.approx(c.rate[chosen].mean().item(), abs=0.03)
    # the redrawn block tokens are uniform over the vocabulary
    freq = torch.bincount(c.tokens[c.block], minlength=V).float() / c.block.sum()
    assert (freq - 1 / V).abs().max() < 0.01
    # share 1: every sample; a fixed rate is also the rate around the block
    c = corrupt(tokens[:50], V, generator=_gen(4), block_share=1.0, rate=0.0)
    assert c.block.any(dim=(1, 2)).all() and torch.equal(c.replaced, c.block)


def test_same_seed_same_blocks_and_bad_arguments():
    tokens = torch.randint(0, V, (16, 8, 8), generator=_gen())
    a = corrupt(tokens, V, generator=_gen(9), block_share=0.5)
    b = corrupt(tokens, V, generator=_gen(9), block_share=0.5)
    assert all(torch.equal(x, y) for x, y in zip((a.tokens, a.replaced, a.rate, a.block),
                                                   (b.tokens, b.replaced, b.rate, b.block)))
    assert not torch.equal(a.block, corrupt(tokens, V, generator=_gen(10), block_share=0.5).block)
    # samples without a block get the paper's corruption of the same seed, token for token
    plain, others = corrupt(tokens, V, generator=_gen(9)), ~a.block.any(dim=(1, 2))
    assert others.any() and torch.equal(a.tokens[others], plain.tokens[others])
    with pytest.raises(ValueError, match="block_share"):
        corrupt(tokens, V, block_share=1.5)
    with pytest.raises(InputError, match=r"shaped \(b h w\)"):
        corrupt(tokens.flatten(1), V, block_share=0.5)
    for bad, field in [({"min_side": 0.0}, "min_side"), ({"min_side": 0.8, "max_side": 0.5}, "max_side"),
                       ({"max_shapes": 0}, "max_shapes"), ({"stroke_share": 2.0}, "stroke_share"),
                       ({"brush": 0.0}, "brush")]:
        with pytest.raises(ConfigError, match=field):
            BlockShapes(**bad)


def test_unrolled_loss_with_blocks_corrupts_step_one_like_corrupt():
    tokens = torch.randint(0, V, (6, 8, 8), generator=_gen(3))
    model = _prior()
    seen = []

    def logits_fn(z, labels):
        seen.append(z.clone())
        return model(z, labels)

    shapes = BlockShapes(max_shapes=1)
    out = unrolled_loss(logits_fn, tokens, V, steps=2, generator=_gen(8), block_share=1.0, block_shapes=shapes)
    assert torch.isfinite(out.loss) and len(out.per_step) == 2
    out.loss.backward()
    assert model.head.weight.grad.abs().sum() > 0
    assert torch.equal(seen[0], corrupt(tokens, V, generator=_gen(8), block_share=1.0, block_shapes=shapes).tokens)
    # block_share 0 is today's loss exactly
    plain = unrolled_loss(model, tokens, V, steps=2, generator=_gen(8))
    zero = unrolled_loss(model, tokens, V, steps=2, generator=_gen(8), block_share=0.0)
    assert torch.equal(plain.loss, zero.loss)


# --- class names -----------------------------------------------------------------------------


def test_class_names_config_validation_round_trip_and_old_checkpoints(tmp_path):
    base = dict(vocab_size=V, dim=16, heads=2, depth=(1, 1, 1), num_classes=3)
    config = HourglassConfig(**base, class_names=("cats", "dogs", "owls"))
    assert from_dict(HourglassConfig, to_dict(config)) == config
    assert HourglassConfig(**base).class_names == ()
    with pytest.raises(ConfigError, match="class_names"):
        HourglassConfig(**base, class_names=("cats", "dogs"))
    with pytest.raises(ConfigError, match="class_names"):
        from_dict(HourglassConfig, {**to_dict(config), "num_classes": 0})
    with pytest.raises(ConfigError, match=r"class_names\[1\]"):
        from_dict(HourglassConfig, {**to_dict(config), "class_names": ["a", 2, "c"]})
    # a checkpoint written before the field existed loads, with no names
    model = _prior(num_classes=3)
    old = {k: v for k, v in to_dict(model.config).items() if k != "class_names"}
    save_checkpoint(tmp_path / "old.safetensors", model.state_dict(), kind="prior", config=old)
    assert load_prior(tmp_path / "old.safetensors").config.class_names == ()


def test_label_errors_name_the_classes():
    named = _prior(num_classes=3, class_names=("activities", "animals_nature", "flags")).eval()
    tokens = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(InputError, match=r"classes 0..2 \(0 activities, 1 animals_nature, 2 flags\)"):
        named(tokens, torch.tensor([4]))
    with pytest.raises(InputError, match=r"label 3 is out of range: this prior has classes 0..2 \(0 activities"):
        N["SundaeClassLabel"]().make(named, 3)
    unnamed = _prior(num_classes=3)
    with pytest.raises(InputError, match=r"classes 0..2$"):
        N["SundaeClassLabel"]().make(unnamed, 3)
    many = HourglassConfig(vocab_size=V, dim=16, heads=2, depth=(1, 1, 1), num_classes=1000,
                           class_names=tuple(f"c{i}" for i in range(1000)))
    text = many.describe_classes()
    assert text.startswith("classes 0..999 (0 c0, 1 c1") and text.endswith("..., 999 c999)") and len(text) < 200


class _FakeVQGAN:
    """Stands in for a VQ-GAN: build_latents only needs factor, vocab_size, token_version, encoder_dtype and encode."""

    factor, vocab_size, token_version = 8, V, "fake00000000"
    encoder_dtype = torch.float32

    def to(self, **kwargs):  # build_latents moves it to channels-last
        return self

    def encode(self, x):
        return (x.mean(dim=1)[:, ::8, ::8] > 0).long()  # (b h/8 w/8) tokens


def test_build_latents_writes_the_class_names(tmp_path, monkeypatch, capsys):
    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    for folder in ("smileys", "animals_nature", "flags"):
        (images / folder).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images / folder / f"{i}.png")
    monkeypatch.setattr(build_latents, "load_vqgan", lambda path, dtype=None: _FakeVQGAN())
    out = tmp_path / "latents"
    args = ["--vqgan", "unused.safetensors", "--images", str(images), "--resolution", "16", "--no-progress"]
    assert build_latents.main(args + ["--out", str(out), "--labels-from-folders"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == ["animals_nature", "flags", "smileys"] and manifest["num_classes"] == 3
    assert manifest["token_version"] == "fake00000000"  # the prior trainer records it
    assert build_latents.main(args + ["--out", str(tmp_path / "plain")]) == 0
    assert json.loads((tmp_path / "plain" / "manifest.json").read_text())["num_classes"] == 0
    # an image outside the class folders is a clear error, not a KeyError
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images / "loose.png")
    assert build_latents.main(args + ["--out", str(tmp_path / "bad"), "--labels-from-folders"]) == 1
    assert "loose.png is not in a class subfolder" in capsys.readouterr().err


TRAIN = ["model.vocab_size=16", "model.dim=16", "model.heads=2", "model.depth=[1, 1, 1]", "train.batch_size=8",
         "train.warmup=1", "train.log_every=1", "train.val_every=1000", "train.val_batches=1",
         "train.sample_every=1000", "train.sample_steps=2", "train.bf16=false", "train.steps=2"]


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


def test_prior_training_with_blocks_takes_the_class_names_of_the_dataset(tmp_path, latents, capsys):
    data = latents(num_classes=3, decoder="pixels")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["class_names"] = ["activities", "animals_nature", "flags"]
    manifest["token_version"] = "0123456789ab"
    (data / "manifest.json").write_text(json.dumps(manifest))
    run = tmp_path / "prior"
    command = ["--run-dir", str(run), "--no-progress",
               *_sets(TRAIN + [f"data.path={data}", "model.num_classes=3", "train.block_corruption=0.5",
                               "train.block_shapes.max_shapes=1"])]
    assert train_prior.main(command) == 0
    trained = load_prior(run / "model.safetensors").config
    assert trained.class_names == tuple(manifest["class_names"]) and trained.token_version == "0123456789ab"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["class_names"] == [] and saved["train"]["block_corruption"] == 0.5
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("val_block_loss" in r and "val_loss" in r for r in rows)
    assert train_prior.main(command + _sets(["train.steps=3"])) == 0  # the same command resumes
    # names that do not fit the number of classes are a one-line config error
    assert train_prior.main(["--run-dir", str(tmp_path / "bad"), "--no-progress",
                             *_sets(TRAIN + [f"data.path={data}", "model.num_classes=4"])]) == 1
    assert "names 3 classes (manifest.json class_names)" in capsys.readouterr().err


# --- can it learn ----------------------------------------------------------------------------


def test_a_tiny_prior_trained_with_blocks_fills_a_hole():
    """4 token grids (8x8, v = 16), 200 steps with block corruption: a 4x4 hole of random tokens
    is filled with the right tokens far more often than chance (1/16)."""
    start = time.process_time()
    data = _gen(0)
    grids = torch.randint(0, V, (4, 8, 8), generator=data)
    model = _prior(dim=32)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    noise = _gen(1)
    for _ in range(200):
        batch = grids[torch.randint(0, len(grids), (32,), generator=data)]
        out = unrolled_loss(model, batch, V, steps=2, generator=noise, block_share=0.5)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    hole = torch.zeros(8, 8, dtype=torch.bool)
    hole[2:6, 3:7] = True
    fill = _gen(2)
    hits = []
    with torch.no_grad():
        for _ in range(4):
            z = torch.where(hole, torch.randint(0, V, grids.shape, generator=fill), grids)
            hits.append(model(z).argmax(-1)[:, hole] == grids[:, hole])
    accuracy = torch.cat(hits).float().mean().item()
    assert accuracy > 0.5, f"hole accuracy {accuracy:.3f} (chance {1 / V:.3f})"
    assert time.process_time() - start < 240  # a CPU-time budget (summed over threads), for the CI's sake
