"""The trainer's sample-collapse alarm (val_sample_distinct): different tokens per unconditional sample."""

from contextlib import nullcontext

import torch

from sundae_core.config import HourglassConfig
from sundae_core.hourglass import HourglassTransformer
from trainers.training.train_prior import distinct_tokens, sample_distinct_tokens


def test_distinct_tokens_counts_each_grids_own_tokens():
    tokens = torch.zeros(3, 4, 4, dtype=torch.long)
    tokens[1, 0, :3] = torch.tensor([1, 2, 3])
    tokens[2] = torch.arange(16).view(4, 4)
    assert distinct_tokens(tokens, 16).tolist() == [1, 4, 16]


def _prior(seed=0):
    torch.manual_seed(seed)
    return HourglassTransformer(HourglassConfig(vocab_size=16, dim=16, heads=2, depth=(1, 1, 1), num_classes=3))


def test_a_collapsed_prior_reads_one_token_a_sample_and_a_spread_one_many():
    collapsed = _prior()
    with torch.no_grad():  # every position's logits favour token 3 overwhelmingly: a one-colour blob
        collapsed.head.bias.fill_(-30.0)
        collapsed.head.bias[3] = 30.0
    assert sample_distinct_tokens(collapsed, 4, (8, 8), nullcontext) == 1.0
    assert collapsed.training  # handed back in training mode
    spread = sample_distinct_tokens(_prior(), 4, (8, 8), nullcontext)
    assert spread > 4
    assert sample_distinct_tokens(_prior(), 4, (8, 8), nullcontext) == spread  # its own seeded generator
