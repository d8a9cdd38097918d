"""The trainer's sample-collapse alarms (val_sample_distinct, val_sample_background): different tokens
per unconditional sample and the share of them that are background."""

from contextlib import nullcontext

import torch

from sundae_core.config import HourglassConfig
from sundae_core.hourglass import HourglassTransformer
from trainers.training.train_prior import background_token, distinct_tokens, sample_spread, spread_of


def test_distinct_tokens_counts_each_grids_own_tokens():
    tokens = torch.zeros(3, 4, 4, dtype=torch.long)
    tokens[1, 0, :3] = torch.tensor([1, 2, 3])
    tokens[2] = torch.arange(16).view(4, 4)
    assert distinct_tokens(tokens, 16).tolist() == [1, 4, 16]


def _prior(seed=0):
    torch.manual_seed(seed)
    return HourglassTransformer(HourglassConfig(vocab_size=16, dim=16, heads=2, depth=(1, 1, 1), num_classes=3))


def test_spread_of_counts_tokens_and_the_background_share():
    tokens = torch.full((2, 4, 4), 7)
    tokens[0, 0, :4] = torch.tensor([1, 2, 3, 4])
    assert background_token(tokens) == 7
    assert spread_of(tokens, 16, 7) == {"distinct": 3.0, "background": 28 / 32}


def test_a_collapsed_prior_reads_one_token_a_sample_and_a_spread_one_many():
    collapsed = _prior()
    with torch.no_grad():  # every position's logits favour token 3 overwhelmingly: a one-colour canvas
        collapsed.head.bias.fill_(-30.0)
        collapsed.head.bias[3] = 30.0
    assert sample_spread(collapsed, 4, (8, 8), nullcontext, background=3) == {"distinct": 1.0, "background": 1.0}
    assert collapsed.training  # handed back in training mode
    spread = sample_spread(_prior(), 4, (8, 8), nullcontext, background=3)
    assert spread["distinct"] > 4 and spread["background"] < 0.5
    assert sample_spread(_prior(), 4, (8, 8), nullcontext, background=3) == spread  # its own seeded generator
