"""The trainer's held-out hole figure: a one-step completion of each sequence's subject window."""

import torch

from sundae_core.config import HourglassConfig
from sundae_core.hourglass import HourglassTransformer
from trainers.training.train_prior import hole_accuracy, subject_windows


class Split:
    """The one attribute of a TokenSet that hole_accuracy reads, and its length."""

    def __init__(self, tokens):
        self.tokens = tokens

    def __len__(self):
        return len(self.tokens)


def test_the_window_covers_the_densest_subject_region():
    tokens = torch.zeros(2, 12, 12, dtype=torch.long)  # 0: the white canvas
    tokens[0, 5:9, 6:10] = 3  # a 4 x 4 subject
    tokens[1, 0:2, 0:2] = 7  # a small subject in the corner, and a bigger one lower right
    tokens[1, 8:12, 7:12] = 5
    hole = subject_windows(tokens, 4, background=0)
    assert hole.sum((1, 2)).tolist() == [16, 16]
    assert torch.equal(hole[0], tokens[0] == 3)
    assert hole[1, 8:12, 7:11].all() and not hole[1, :2, :2].any()  # the first of the two best windows


def test_a_model_that_ignores_its_input_scores_the_share_of_the_token_it_always_predicts():
    torch.manual_seed(0)
    model = HourglassTransformer(HourglassConfig(vocab_size=8, dim=16, heads=1, depth=(1, 1, 1), shorten=4))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.arange(8.0))  # argmax is token 7 everywhere, whatever the input
    tokens = torch.zeros(6, 8, 8, dtype=torch.long)
    tokens[:3, 2:6, 2:6] = 7  # half the sequences: a subject of 7s that the 4 x 4 hole covers exactly
    tokens[3:, 2:6, 2:6] = 4
    accuracy = hole_accuracy(model, Split(tokens), batch_size=4, side=4)
    assert accuracy == 0.5
    assert model.training  # left as found
