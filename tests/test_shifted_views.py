"""Shifted views (sundae_core/shifted_views.py): the average over grids moved by one position,
checked against known answers, `at` against the full call, and the sampler and nodes using it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nodes.sampling import SundaeDenoiseStep, SundaeSample
from sundae_core.config import HourglassConfig
from sundae_core.hourglass import HourglassTransformer
from sundae_core.sampler import (SamplerSettingError, SamplerSettings, denoise_step, model_logits_fn, sample)
from sundae_core.shifted_views import VIEW_SHIFTS, ShiftedViews, with_views
from sundae_core.token_shift import shift_tokens

VOCAB = 12


def copy_token(tokens: torch.Tensor, labels) -> torch.Tensor:
    """A translation-equivariant 'prior': each position predicts the token standing there."""
    return F.one_hot(tokens, VOCAB).float() * 5.0


def column_index(tokens: torch.Tensor, labels) -> torch.Tensor:
    """A position-bound 'prior': each position predicts its own column index in the grid it sees."""
    b, h, w = tokens.shape
    cols = torch.arange(w).expand(b, h, w)
    return F.one_hot(cols, VOCAB).float() * 5.0


def _tokens(b=2, h=4, w=6, seed=0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, h, w), generator=torch.Generator().manual_seed(seed))


def test_one_view_is_the_logits_fn_itself():
    assert with_views(copy_token, 1) is copy_token
    assert isinstance(with_views(copy_token, 4), ShiftedViews)


@pytest.mark.parametrize("views", [2, 4, 9])
def test_views_of_a_translation_equivariant_prior_agree_with_it_everywhere(views):
    """Every view holds the same answer, edges and sample borders included: nothing leaks from
    the next row or the next sample of the batch."""
    tokens = _tokens()
    out = ShiftedViews(copy_token, views)(tokens, None)
    assert out.shape == (2, 4, 6, VOCAB)
    torch.testing.assert_close(out, copy_token(tokens, None).log_softmax(-1))


def test_two_views_average_a_position_bound_prior_and_the_last_column_has_one_view():
    """views=2 adds the grid moved right by one: column x of the grid is column x + 1 there, so
    the average splits between x and x + 1, except the last column, which that view pushed off."""
    tokens = _tokens(1, 3, 5)
    out = ShiftedViews(column_index, 2)(tokens, None)
    single = F.one_hot(torch.arange(5), VOCAB).float().mul(5.0).log_softmax(-1)  # (5 v)
    for x in range(4):
        torch.testing.assert_close(out[0, :, x], ((single[x] + single[x + 1]) / 2).expand(3, VOCAB))
    torch.testing.assert_close(out[0, :, 4], single[4].expand(3, VOCAB))


@pytest.mark.parametrize("views", [3, 9])
def test_at_gives_the_full_calls_rows_at_scattered_positions(views):
    tokens = _tokens(3, 4, 6, seed=1)
    fn = ShiftedViews(column_index, views)
    positions = torch.tensor([0, 5, 6, 23, 24, 47, 71, 50])
    full = fn(tokens, None).flatten(0, 2)
    torch.testing.assert_close(fn.at(tokens, None, positions), full[positions])


def test_a_real_prior_s_views_use_its_head_at_the_positions_only():
    """ShiftedViews over PriorLogits goes through `at` (the head only where asked) and matches
    the average of the moved grids' full logits computed by hand."""
    torch.manual_seed(0)
    config = HourglassConfig(vocab_size=VOCAB, dim=16, heads=2, depth=(1, 1, 1), shorten=4)
    prior = HourglassTransformer(config).eval()
    fn = model_logits_fn(prior)
    tokens = _tokens(2, 4, 4, seed=2)
    with torch.no_grad():
        got = ShiftedViews(fn, 4).at(tokens, None, torch.tensor([5, 21]))  # (1, 1) of each sample
        expected = 0
        for dy, dx in VIEW_SHIFTS[:4]:
            moved = shift_tokens(tokens, torch.tensor([[dy, dx]]).expand(2, 2))
            expected = expected + fn(moved, None)[:, 1 + dy, 1 + dx].float().log_softmax(-1)
    torch.testing.assert_close(got, expected / 4, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("views", [0, 10, 2.5, True])
def test_settings_refuse_views_outside_one_to_nine(views):
    with pytest.raises(SamplerSettingError, match="views"):
        SamplerSettings(views=views)


def test_sampling_with_views_is_seeded_and_keeps_unmasked_tokens():
    tokens = _tokens(2, 4, 6, seed=3)
    repaint = torch.zeros(4, 6, dtype=torch.bool)
    repaint[1:3, 2:5] = True
    settings = SamplerSettings(steps=5, views=4, temperature=0.5)
    runs = [sample(column_index, tokens, settings, generator=torch.Generator().manual_seed(7), repaint=repaint)
            for _ in range(2)]
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    assert torch.equal(runs[0].tokens[:, ~repaint], tokens[:, ~repaint])
    # the position-bound prior with views draws columns x or x + 1 inside the hole, never others
    cols = torch.arange(6).expand(2, 4, 6)
    inside = runs[0].tokens[:, repaint]
    assert bool(((inside == cols[:, repaint]) | (inside == cols[:, repaint] + 1)).all())


def test_denoise_step_takes_views_and_refuses_bad_ones():
    tokens = _tokens()
    out = denoise_step(copy_token, tokens, generator=torch.Generator().manual_seed(0), temperature=0,
                       proportion=1.0, views=4)
    assert torch.equal(out.tokens, tokens)  # every view says "keep it"
    with pytest.raises(SamplerSettingError, match="views"):
        denoise_step(copy_token, tokens, views=0)


def test_nodes_offer_views_with_the_sampler_limits_and_default_one():
    for node in (SundaeSample, SundaeDenoiseStep):
        kind, options = node.INPUT_TYPES()["required"]["views"]
        assert kind == "INT" and options["default"] == 1
        assert (options["min"], options["max"]) == (1, len(VIEW_SHIFTS))


@pytest.mark.parametrize("budget", [1, 40, 10 ** 6])
def test_views_stacked_into_one_batch_or_taken_a_few_at_a_time_agree(budget, monkeypatch):
    """Views share a call up to VIEW_BATCH_TOKENS grid tokens; how they are split into calls does
    not change the answer (labels follow their samples into every view)."""
    from sundae_core import shifted_views

    torch.manual_seed(0)
    config = HourglassConfig(vocab_size=VOCAB, dim=16, heads=2, depth=(1, 1, 1), shorten=4, num_classes=3)
    fn = model_logits_fn(HourglassTransformer(config).eval())
    tokens, labels = _tokens(2, 4, 4, seed=4), torch.tensor([0, 2])
    positions = torch.tensor([0, 3, 5, 12, 15, 16, 21, 31])
    with torch.no_grad():
        reference = ShiftedViews(fn, 9).at(tokens, labels, positions)
        monkeypatch.setattr(shifted_views, "VIEW_BATCH_TOKENS", budget)
        got = ShiftedViews(fn, 9).at(tokens, labels, positions)
    torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-5)
