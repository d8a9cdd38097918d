"""Hole sets: the tokens the inpainting workflow encodes around a hidden hole, and the prior
trained and validated on them (sundae-build-hole-set, data.hole_set, train.hole_share)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sundae_core.checkpoint import load_checkpoint
from sundae_core.config import HourglassConfig
from sundae_core.errors import ConfigError
from sundae_core.hourglass import HourglassTransformer
from sundae_core.sampler import model_logits_fn
from sundae_core.token_shift import draw_shifts, shift_tokens
from sundae_core.unroll import unrolled_loss
from trainers.data import build_hole_set
from trainers.data.build_latents import BUILD_RECORD
from trainers.data.image_data import _hash_unit, in_subset, is_validation
from trainers.data.latent_data import HOLE_SET_KIND, HoleSet, TokenSet, write_hole_shard, write_manifest
from trainers.evaluation.token_completion import completion_accuracy
from trainers.training import train_prior

PRIOR_SETTINGS = ["model.vocab_size=16", "model.dim=16", "model.heads=2", "model.depth=[1, 1, 1]",
                  "train.batch_size=8", "train.warmup=1", "train.log_every=1", "train.val_batches=1",
                  "train.sample_every=1000", "train.val_samples=0", "train.bf16=false"]


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


class _FakeVQGAN:
    """factor 8, token = the 8 x 8 patch's mean brightness in 4 levels: a local encoder, so only a
    hole's own tokens read its fill."""

    factor, vocab_size, token_version = 8, 16, "fake00000000"
    encoder_dtype = torch.float32

    def encode(self, x):
        level = ((x.mean(dim=1) + 1) / 2).unfold(1, 8, 8).unfold(2, 8, 8).mean((-1, -2))
        return (level * 3.999).long()


@pytest.fixture
def image_folders(tmp_path):
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for group in ("animals", "food"):
        (root / group).mkdir(parents=True)
        for i in range(6):
            pixels = np.full((64, 64, 3), 255, np.uint8)
            pixels[16:56, 8:48] = rng.integers(0, 200, 3)  # a dark subject on white
            Image.fromarray(pixels).save(root / group / f"{group}{i}.png")
    return root


def _build(image_folders, out, *extra):
    return build_hole_set.main(["--vqgan", "unused", "--images", str(image_folders), "--resolution", "64",
                                "--sides", "2,3", "--holes", "2", "--labels-from-folders", "--no-progress",
                                "--out", str(out), *extra])


def test_each_hole_comes_with_the_tokens_encoded_with_it_hidden(tmp_path, image_folders, monkeypatch):
    monkeypatch.setattr(build_hole_set, "load_vqgan", lambda path, dtype=None: _FakeVQGAN())
    out = tmp_path / "holes"
    assert _build(image_folders, out) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == HOLE_SET_KIND and manifest["class_names"] == ["animals", "food"]
    n_val = sum(is_validation(p) for p in image_folders.rglob("*.png"))
    train = HoleSet(out, "train")
    assert len(train) == 2 * (12 - n_val) and train.tokens.shape[1:] == (8, 8)
    sizes = train.hole.sum((1, 2))
    assert set(sizes.tolist()) <= {4, 9}
    for tokens, context, hole in zip(train.tokens, train.context, train.hole):
        assert torch.equal(context[~hole], tokens[~hole])  # a local encoder: only the hole reads the fill
        assert context[hole].unique().numel() == 1  # one flat colour under the hole
        rows, cols = hole.nonzero().T
        assert rows.min() >= 1 and cols.min() >= 1 and rows.max() <= 6 and cols.max() <= 6  # a token of margin
    assert train.labels.tolist()[:2] == [train.labels[0]] * 2  # both holes of an image carry its label
    # the same holes on a rebuild; a build with other settings into the folder is refused
    first = load_checkpoint(out / "train-00000.safetensors", kind="latent_shard").tensors["hole"]
    (out / "train-00000.safetensors").unlink()
    assert _build(image_folders, out) == 0
    assert torch.equal(load_checkpoint(out / "train-00000.safetensors", kind="latent_shard").tensors["hole"], first)
    assert _build(image_folders, out, "--fill", "smooth") == 1


def test_extend_encodes_only_the_images_a_larger_subset_adds(tmp_path, image_folders, monkeypatch, capsys):
    encoded = []

    class _Counting(_FakeVQGAN):
        def encode(self, x):
            encoded.append(len(x))
            return super().encode(x)

    monkeypatch.setattr(build_hole_set, "load_vqgan", lambda path, dtype=None: _Counting())
    whole, part, more, rest = (tmp_path / name for name in ("whole", "part", "more", "rest"))
    assert _build(image_folders, whole) == 0
    monkeypatch.chdir(tmp_path)
    assert _build(Path("images"), part, "--subset", "0.3") == 0  # the images by a relative path
    held = len(HoleSet(part, "train")) // 2 + len(HoleSet(part, "val")) // 2
    # grown twice (an extended set extended again), the second time from another working folder
    # with the images given by another path: each image encoded once in all
    encoded.clear()
    assert _build(image_folders, more, "--subset", "0.7", "--extend", str(part)) == 0
    monkeypatch.chdir(image_folders)
    assert build_hole_set.main(["--vqgan", "unused", "--images", ".", "--resolution", "64", "--sides", "2,3",
                                "--holes", "2", "--labels-from-folders", "--no-progress", "--out", str(rest),
                                "--extend", str(more)]) == 0, capsys.readouterr().err
    assert len(encoded) == 12 - held  # one batch (the image and its two hidden copies) per new image
    manifest = json.loads((rest / "manifest.json").read_text())
    assert manifest["extends"] == str(more) and manifest["shards"]["train"][0] == "../part/train-00000.safetensors"
    # the base's holes and the new ones together are the whole build's, image for image
    for split in ("train", "val"):
        grown, full = HoleSet(rest, split), HoleSet(whole, split)
        order = lambda s: sorted(range(len(s)), key=lambda i: (s.tokens[i].tolist(), s.hole[i].tolist()))
        assert all(torch.equal(getattr(grown, k)[order(grown)], getattr(full, k)[order(full)])
                   for k in ("tokens", "context", "hole", "labels"))
    # refused, each with its fix
    capsys.readouterr()
    cases = {("--extend", str(part), "--subset", "0.3"): "holds the 0.3 share .* give a larger --subset",
             ("--extend", str(whole)): "holds every image .* already",
             ("--extend", str(part), "--sides", "3"): "built with --sides \\[2, 3\\], not \\[3\\]",
             ("--extend", str(part), "--limit", "5"): "--limit does not combine",
             ("--extend", str(part), "--out", str(part)): "is --out itself"}
    for extra, message in cases.items():
        assert _build(image_folders, tmp_path / "refused", *extra) == 1
        assert re.search(message, capsys.readouterr().err), extra
    # a base that does not hold its share of the folder as it is now (an image added since)
    added = next(n for n in (f"new{i}.png" for i in range(40)) if in_subset(Path(n), 0.3))
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image_folders / "food" / added)
    assert _build(image_folders, tmp_path / "stale", "--extend", str(part)) == 1
    assert "does not hold the 0.3 share" in capsys.readouterr().err


def test_extend_numbers_classes_the_base_did_not_meet_after_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(build_hole_set, "load_vqgan", lambda path, dtype=None: _FakeVQGAN())
    root = tmp_path / "images"
    below = [n for n in (f"food{i}.png" for i in range(40)) if _hash_unit("subset:" + n) < 0.5][:4]
    above = next(n for n in (f"zebra{i}.png" for i in range(40)) if _hash_unit("subset:" + n) >= 0.5)
    for group, name in [("food", n) for n in below] + [("zoo", above)]:
        (root / group).mkdir(parents=True, exist_ok=True)
        pixels = np.full((64, 64, 3), 255, np.uint8)
        pixels[16:56, 8:48] = 90
        Image.fromarray(pixels).save(root / group / name)
    assert _build(root, tmp_path / "part", "--subset", "0.5") == 0  # its share meets no zoo image
    assert json.loads((tmp_path / "part" / "manifest.json").read_text())["class_names"] == ["food"]
    assert _build(root, tmp_path / "rest", "--extend", str(tmp_path / "part")) == 0
    assert json.loads((tmp_path / "rest" / "manifest.json").read_text())["class_names"] == ["food", "zoo"]
    labels = torch.cat([HoleSet(tmp_path / "rest", split).labels for split in ("train", "val")
                        if json.loads((tmp_path / "rest" / "manifest.json").read_text())["shards"][split]])
    assert sorted(labels.tolist()) == [0] * 8 + [1] * 2  # food keeps label 0; the zebra's two holes are 1


def _write_hole_set(root, tokens_root, n=16, seed=0):
    """A hole set over write_latents' tiny 4 x 4 grids (vocab 16): the hole's tokens are the
    context's top-left token plus 1, so the context tells the answer; the context's right column
    differs from the target's (it read the fill, as the tokens beside a hidden hole do)."""
    g = torch.Generator().manual_seed(seed)
    root.mkdir()
    shards = {}
    for split in ("train", "val"):
        context = torch.randint(0, 15, (n, 4, 4), generator=g)
        hole = torch.zeros(n, 4, 4, dtype=torch.bool)
        hole[:, 1:3, 1:3] = True
        tokens = torch.where(hole, context[:, :1, :1] + 1, context)
        tokens[:, :, 3] = (context[:, :, 3] + 7) % 16
        write_hole_shard(root / f"{split}-00000.safetensors", tokens, context, hole, None, 16)
        shards[split] = [f"{split}-00000.safetensors"]
    manifest = json.loads((tokens_root / "manifest.json").read_text())
    write_manifest(root, {**{k: manifest[k] for k in ("vocab_size", "height", "width", "num_classes")},
                          "kind": HOLE_SET_KIND, "shards": shards})
    return root


def test_a_hole_set_split_with_another_val_fraction_is_refused(tmp_path, latents):
    """Its held-out images would be hole rows of training (or trained ones scored as held out)."""
    data = latents()
    (data / BUILD_RECORD).write_text(json.dumps({"val_fraction": 0.1}))  # where sundae-build-latents records it
    holes = _write_hole_set(tmp_path / "holes", data)
    manifest = json.loads((holes / "manifest.json").read_text())
    write_manifest(holes, {**manifest, "val_fraction": 0.2})
    tokens = TokenSet(data, "train")
    with pytest.raises(ConfigError, match=r"val_fraction=0.2 but .* val_fraction=0.1.* --val-fraction 0.1$"):
        HoleSet(holes, "val").check_matches(tokens, holes)
    write_manifest(holes, {**manifest, "val_fraction": 0.1})
    HoleSet(holes, "val").check_matches(tokens, holes)  # the same split
    (data / BUILD_RECORD).unlink()  # a set built before the record: nothing to compare
    write_manifest(holes, {**manifest, "val_fraction": 0.2})
    HoleSet(holes, "val").check_matches(tokens, holes)


def test_the_hidden_hole_figure_given_the_whole_grid_is_the_hole_figure(tmp_path, latents):
    """With each grid's own tokens as the context and the subject windows as holes,
    val_hidden_hole_top1 reads val_hole_top1: one completion_accuracy loop over the same batches,
    its noise from one generator seeded 4321."""
    val = TokenSet(latents(n=40), "val")  # 10 grids: batches of 4, 4, 2
    hole = train_prior.subject_windows(val.tokens, 2, train_prior.background_token(val.tokens))
    (tmp_path / "holes").mkdir()
    write_hole_shard(tmp_path / "holes" / "val-00000.safetensors", val.tokens, val.tokens, hole, None, 16)
    write_manifest(tmp_path / "holes", {**val.manifest, "kind": HOLE_SET_KIND,
                                        "shards": {"val": ["val-00000.safetensors"]}})
    torch.manual_seed(0)
    model = HourglassTransformer(HourglassConfig(vocab_size=16, dim=16, heads=2, depth=(1, 1, 1), shorten=4))
    g, logits_fn = torch.Generator().manual_seed(4321), model_logits_fn(model)
    with torch.no_grad():
        by_hand = sum(float(completion_accuracy(logits_fn, val.tokens[i:i + 4], hole[i:i + 4], 16, g).sum())
                      for i in range(0, 10, 4)) / 10
    assert train_prior.hidden_hole_accuracy(model, HoleSet(tmp_path / "holes", "val"), 4) == by_hand
    assert train_prior.hole_accuracy(model, val, 4, side=2) == by_hand


def test_shifted_hole_rows_move_target_context_and_hole_together(tmp_path, latents):
    holes = HoleSet(_write_hole_set(tmp_path / "holes", latents(), n=64), "train")
    own = torch.zeros(0, 4, 4, dtype=torch.long)
    tokens, _, start = train_prior.with_hole_rows(own, None, holes, 64, 16, 9, torch.Generator().manual_seed(0),
                                                  shift=1)
    g = torch.Generator().manual_seed(0)  # replayed: the rows, their moves, then the noise
    target, context, hole, _ = holes.batch(64, g)
    moves = draw_shifts(64, 1, g)
    noise = torch.randint(0, 16, target.shape, generator=g)
    assert moves.abs().sum(1).gt(0).sum() > 32  # most rows moved
    moved_hole = shift_tokens(hole, moves)
    assert torch.equal(moved_hole.sum((1, 2)), hole.sum((1, 2)))  # a token of margin: no hole cropped
    assert torch.equal(tokens, shift_tokens(target, moves))
    assert torch.equal(start[moved_hole], noise[moved_hole])
    assert torch.equal(start[~moved_hole], shift_tokens(context, moves)[~moved_hole])
    # each row's answer is still its context's top-left token plus 1 (_write_hole_set), wherever it moved
    assert all(tokens[row][moved_hole[row]].unique().numel() == 1 for row in range(64))
    for shift in (0, 2):  # no shift, or one that would crop the holes at the edge
        with pytest.raises(ConfigError, match="train.shift_holes"):
            train_prior.PriorTrainConfig(shift_holes=True, hole_share=0.5, shift=shift)


def test_hole_rows_start_from_the_hidden_context_with_noise_in_the_hole(tmp_path, latents):
    holes = HoleSet(_write_hole_set(tmp_path / "holes", latents()), "train")
    own = torch.zeros(3, 4, 4, dtype=torch.long)
    tokens, labels, start = train_prior.with_hole_rows(own, torch.zeros(3, dtype=torch.long), holes, 2, 16, 9,
                                                       torch.Generator().manual_seed(0))
    assert tokens.shape == (5, 4, 4) and labels.tolist() == [0, 0, 0, 9, 9]  # hole rows: the null class
    assert (start[:3] == -1).all() and (start[3:] >= 0).all()
    # the rows drawn, replayed: outside the hole the context (not the target), in it the noise drawn next
    g = torch.Generator().manual_seed(0)
    target, context, hole, _ = holes.batch(2, g)
    noise = torch.randint(0, 16, target.shape, generator=g)
    assert torch.equal(tokens[3:], target) and not torch.equal(context[~hole], target[~hole])
    assert torch.equal(start[3:][~hole], context[~hole]) and torch.equal(start[3:][hole], noise[hole])
    # unrolled_loss feeds the given start to step 1 and corrupts the other rows as before
    seen = []

    def logits_fn(z, labels):
        seen.append(z.clone())
        return torch.zeros(*z.shape, 16)

    unrolled_loss(logits_fn, tokens, 16, steps=1, generator=torch.Generator().manual_seed(1), start=start)
    plain = []
    unrolled_loss(lambda z, l: plain.append(z.clone()) or torch.zeros(*z.shape, 16), tokens, 16, steps=1,
                  generator=torch.Generator().manual_seed(1))
    assert torch.equal(seen[0][3:], start[3:]) and torch.equal(seen[0][:3], plain[0][:3])


def test_a_prior_learns_to_read_the_hidden_context(tmp_path, latents):
    """Can it learn: trained on hole rows alone, a tiny prior completes held-out holes whose answer
    only the context holds, far above the 1/16 of chance."""
    holes_root = _write_hole_set(tmp_path / "holes", latents(), n=1024)  # too many to learn by heart
    train, val = HoleSet(holes_root, "train"), HoleSet(holes_root, "val")
    torch.manual_seed(0)
    model = HourglassTransformer(HourglassConfig(vocab_size=16, dim=32, heads=2, depth=(1, 1, 1), shorten=4))
    before = train_prior.hidden_hole_accuracy(model, val, 16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(250):
        tokens, _, start = train_prior.with_hole_rows(torch.zeros(0, 4, 4, dtype=torch.long), None, train, 16, 16,
                                                      0, g)
        loss = unrolled_loss(lambda z, l: model(z, l), tokens, 16, steps=1, generator=g, start=start).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = train_prior.hidden_hole_accuracy(model, val, 16)
    assert before < 0.2 and after > 0.6, (before, after)


def test_the_trainer_takes_hole_rows_and_logs_the_hidden_hole_top1(tmp_path, latents, capsys, monkeypatch):
    data = latents()
    holes = _write_hole_set(tmp_path / "holes", data)
    run = tmp_path / "run"
    command = ["--run-dir", str(run), "--no-progress",
               *_sets(PRIOR_SETTINGS + [f"data.path={data}", f"data.hole_set={holes}", "train.steps=2",
                                        "train.val_every=2", "train.hole_share=0.25"])]
    assert train_prior.main(command) == 0, capsys.readouterr().err
    rows = [r for r in _log(run) if "val_loss" in r]
    assert rows and all(0 <= r["val_hidden_hole_top1"] <= 1 for r in rows)
    # train.shift_holes hands train.shift to the hole rows
    shifts, real = [], train_prior.with_hole_rows
    monkeypatch.setattr(train_prior, "with_hole_rows", lambda *a, shift=0: shifts.append(shift) or real(*a, shift=shift))
    moved = ["--run-dir", str(tmp_path / "moved"), "--no-progress",
             *_sets(PRIOR_SETTINGS + [f"data.path={data}", f"data.hole_set={holes}", "train.steps=1",
                                      "train.hole_share=0.25", "train.shift=1", "train.shift_holes=true"])]
    assert train_prior.main(moved) == 0 and shifts == [1]
    # a share without a set, and a latent set given as the hole set, are one-line errors
    bad = ["--run-dir", str(tmp_path / "bad"), "--no-progress",
           *_sets(PRIOR_SETTINGS + [f"data.path={data}", "train.hole_share=0.25"])]
    assert train_prior.main(bad) == 1 and "sundae-build-hole-set" in capsys.readouterr().err
    odd = ["--run-dir", str(tmp_path / "odd"), "--no-progress",
           *_sets(PRIOR_SETTINGS + [f"data.path={data}", f"data.hole_set={holes}", "train.hole_share=0.99"])]
    assert train_prior.main(odd) == 1 and "8 hole rows a batch" in capsys.readouterr().err
    wrong = ["--run-dir", str(tmp_path / "wrong"), "--no-progress",
             *_sets(PRIOR_SETTINGS + [f"data.path={data}", f"data.hole_set={data}", "train.hole_share=0.25"])]
    assert train_prior.main(wrong) == 1 and "not a hole set" in capsys.readouterr().err
