"""Token-grid shift augmentation: edge replication, the shift draw, the train.shift limit and the
trainer applying it to training batches only (shift 0 leaves the batches bit for bit as before)."""

from __future__ import annotations

import pytest
import torch

from trainers.data.latent_data import TokenSet
from sundae_core.token_shift import draw_shifts, largest_shift, shift_tokens
from trainers.training import prior_step, train_prior

PRIOR_SETTINGS = ["model.vocab_size=16", "model.dim=16", "model.heads=2", "model.depth=[1, 1, 1]",
                  "train.batch_size=8", "train.warmup=1", "train.log_every=1", "train.val_every=1000",
                  "train.val_batches=1", "train.sample_every=1000", "train.bf16=false", "train.steps=2"]


def _grid(h: int = 4, w: int = 5, dtype=torch.int64) -> torch.Tensor:
    return torch.arange(h * w, dtype=dtype).reshape(1, h, w)


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.int64])
def test_zero_shift_is_the_identity_for_every_integer_dtype(dtype):
    tokens = torch.randint(0, 1000, (3, 4, 6), generator=torch.Generator().manual_seed(0)).to(dtype)
    out = shift_tokens(tokens, torch.zeros(3, 2, dtype=torch.int64))
    assert out.dtype == dtype and torch.equal(out, tokens)


def test_a_shift_down_by_one_moves_rows_and_replicates_the_top_row():
    tokens = _grid()
    out = shift_tokens(tokens, torch.tensor([[1, 0]]))
    assert torch.equal(out[0, 1:], tokens[0, :-1])  # row i went to row i + 1
    assert torch.equal(out[0, 0], tokens[0, 0])  # the uncovered row repeats the edge row
    assert torch.equal(out[0, 1], tokens[0, 0])


def test_shift_up_two_right_three_matches_a_hand_built_grid():
    tokens = _grid(4, 5, torch.int16)  # rows 0..4, 5..9, 10..14, 15..19
    expected = torch.tensor([[[10, 10, 10, 10, 11],
                              [15, 15, 15, 15, 16],
                              [15, 15, 15, 15, 16],
                              [15, 15, 15, 15, 16]]], dtype=torch.int16)
    assert torch.equal(shift_tokens(tokens, torch.tensor([[-2, 3]])), expected)


def test_each_sample_gets_its_own_shift():
    tokens = torch.cat([_grid(), _grid() + 100])
    shifts = torch.tensor([[1, 0], [0, -1]])
    out = shift_tokens(tokens, shifts)
    assert torch.equal(out[0], shift_tokens(tokens[:1], shifts[:1])[0])
    assert torch.equal(out[1], shift_tokens(tokens[1:], shifts[1:])[0])
    assert torch.equal(out[1, :, -1], tokens[1, :, -1]) and torch.equal(out[1, :, :-1], tokens[1, :, 1:])


def test_shifts_are_drawn_in_range_and_repeat_for_a_seed():
    shifts = draw_shifts(4000, 2, torch.Generator().manual_seed(3))
    assert shifts.shape == (4000, 2) and shifts.dtype == torch.int64
    assert set(shifts.flatten().tolist()) == {-2, -1, 0, 1, 2}  # every value, none outside
    assert torch.equal(shifts, draw_shifts(4000, 2, torch.Generator().manual_seed(3)))
    assert not torch.equal(shifts, draw_shifts(4000, 2, torch.Generator().manual_seed(4)))
    assert not torch.equal(shifts[:, 0], shifts[:, 1])  # dy and dx drawn independently


def test_the_largest_shift_is_under_half_the_smaller_side():
    assert largest_shift(32, 32) == 15 and largest_shift(4, 4) == 1 and largest_shift(5, 8) == 2
    assert largest_shift(2, 2) == 0


def test_a_shift_too_large_for_the_grid_is_one_config_error_line(tmp_path, latents, capsys):
    data = latents()  # 4 x 4 grids: train.shift at most 1
    run = tmp_path / "prior"
    command = ["--run-dir", str(run), "--no-progress",
               *[a for s in PRIOR_SETTINGS + [f"data.path={data}", "train.shift=2"] for a in ("--set", s)]]
    assert train_prior.main(command) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: train.shift=2 is too large for the 4x4 token grids of {data} (a shift must be under "
                   "half the grid's smaller side); set train.shift to at most 1"]
    assert not run.exists()  # refused before the run folder was written
    command[-1] = "train.shift=-1"
    assert train_prior.main(command) == 1
    assert "train.shift must be >= 0" in capsys.readouterr().err


def _training_batches(tmp_path, data, monkeypatch, shift: int) -> list[torch.Tensor]:
    """The token batches the trainer's step received in a 2-step run with train.shift=shift."""
    seen = []
    real = prior_step.unrolled_loss

    def spy(logits_fn, tokens, vocab_size, **kw):
        seen.append(tokens.clone())
        return real(logits_fn, tokens, vocab_size, **kw)

    monkeypatch.setattr(prior_step, "unrolled_loss", spy)  # the training step's loss (not validation's)
    settings = PRIOR_SETTINGS + [f"data.path={data}", f"train.shift={shift}"]
    command = ["--run-dir", str(tmp_path / f"shift{shift}"), "--no-progress",
               *[a for s in settings for a in ("--set", s)]]
    assert train_prior.main(command) == 0
    monkeypatch.undo()
    return seen


def test_the_trainer_shifts_training_batches_only_when_asked(tmp_path, latents, monkeypatch):
    data = latents(height=6, width=6)
    train_tokens = TokenSet(data, "train").tokens
    # the trainer's data stream for seed 0, rank 0: the batch's indices, then (with a shift) the shifts
    g = torch.Generator().manual_seed(0)
    plain, shifted = [], []
    for _ in range(2):
        batch = train_tokens[torch.randint(0, len(train_tokens), (8,), generator=g)]
        plain.append(batch)
        shifted.append(shift_tokens(batch, draw_shifts(8, 2, g)))
    g = torch.Generator().manual_seed(0)
    unshifted = [train_tokens[torch.randint(0, len(train_tokens), (8,), generator=g)] for _ in range(2)]

    off = _training_batches(tmp_path, data, monkeypatch, shift=0)
    assert len(off) == 2 and all(torch.equal(a, b) for a, b in zip(off, unshifted))  # as before, bit for bit
    on = _training_batches(tmp_path, data, monkeypatch, shift=2)
    assert len(on) == 2 and all(torch.equal(a, b) for a, b in zip(on, shifted))
    assert any(not torch.equal(a, b) for a, b in zip(on, plain))  # the shift changed something
