"""Shared fixtures: tiny on-disk datasets the trainer and CLI tests run on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainers.data.latent_data import write_manifest, write_shard


def write_latents(root: Path, *, vocab_size: int = 16, height: int = 4, width: int = 4, n: int = 32,
                  num_classes: int = 0, decoder: str = "vqgan", seed: int = 0) -> Path:
    """A latent dataset of random tokens: one train and one val shard (+ labels with classes)."""
    g = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    shards = {}
    for split, count in (("train", n), ("val", max(4, n // 4))):
        tokens = torch.randint(0, vocab_size, (count, height, width), generator=g)
        labels = torch.randint(0, num_classes, (count,), generator=g) if num_classes else None
        name = f"{split}-00000.safetensors"
        write_shard(root / name, tokens, labels, vocab_size)
        shards[split] = [name]
    write_manifest(root, {"vocab_size": vocab_size, "height": height, "width": width,
                          "num_classes": num_classes, "decoder": decoder, "shards": shards})
    return root


@pytest.fixture
def latents(tmp_path):
    """Factory: latents(**kwargs) -> path of a fresh tiny latent dataset under tmp_path."""
    count = iter(range(1000))
    return lambda **kwargs: write_latents(tmp_path / f"latents{next(count)}", **kwargs)


def pytest_configure(config):
    config.addinivalue_line("markers", "torchrun: a 2-process torchrun run on CPU (about 10-30 s); "
                                       "deselect with -m 'not torchrun'")
