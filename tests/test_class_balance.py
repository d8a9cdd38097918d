"""data.class_balance: training draws classes in their natural proportion (1), alike (0), or between."""

import pytest
import torch

from sundae_core.errors import ConfigError
from trainers.data.latent_data import LatentDataConfig, TokenSet, write_manifest, write_shard


def _skewed_set(root, labelled: bool = True):
    """90 sequences of class 0 and 10 of class 1; each sequence's tokens hold its class."""
    labels = torch.tensor([0] * 90 + [1] * 10)
    root.mkdir()
    write_shard(root / "train-00000.safetensors", labels[:, None, None].expand(-1, 2, 2).clone(),
                labels if labelled else None, vocab_size=4)
    write_manifest(root, {"vocab_size": 4, "height": 2, "width": 2, "num_classes": 2 if labelled else 0,
                          "shards": {"train": ["train-00000.safetensors"]}})
    return root


def _class_1_share(data: TokenSet, n: int = 4000) -> float:
    tokens, labels = data.batch(n, torch.Generator().manual_seed(0))
    assert torch.equal(tokens[:, 0, 0], labels)  # the tokens drawn are the labels' sequences
    return labels.float().mean().item()


@pytest.mark.parametrize("balance, share", [(1.0, 0.10), (0.0, 0.50), (0.5, 0.25)])
def test_class_balance_sets_the_share_each_class_is_drawn(tmp_path, balance, share):
    # 0.5: weights 90 ** -0.5 and 10 ** -0.5, so class 1 gets sqrt(10) / (sqrt(90) + sqrt(10)) = 0.25
    assert _class_1_share(TokenSet(_skewed_set(tmp_path / "d"), "train", balance)) == pytest.approx(share, abs=0.03)


def test_balanced_draws_repeat_with_the_generator(tmp_path):
    data = TokenSet(_skewed_set(tmp_path / "d"), "train", 0.0)
    draw = lambda: data.batch(64, torch.Generator().manual_seed(3))[1]
    assert torch.equal(draw(), draw())


def test_class_balance_needs_labels_and_a_value_in_range(tmp_path):
    with pytest.raises(ConfigError, match="no class labels"):
        TokenSet(_skewed_set(tmp_path / "d", labelled=False), "train", 0.5)
    TokenSet(tmp_path / "d", "train")  # the natural proportion needs none
    with pytest.raises(ConfigError, match=r"data.class_balance is an exponent in \[0, 1\]"):
        LatentDataConfig(path="x", class_balance=1.5)
