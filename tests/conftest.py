"""Shared fixtures: tiny on-disk datasets and models the trainer, CLI and workflow tests run on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sundae_core.adapters import extract_adapter, save_adapter
from sundae_core.config import HourglassConfig, VQGANConfig
from sundae_core.hourglass import HourglassTransformer
from sundae_core.models import load_prior, save_model
from sundae_core.vqgan import VQGAN
from sundae_nodes.tokens import EMBEDDED_CLASS_NAMES
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


def write_inpaint_adapter(folder: Path) -> None:
    """An inpaint_adapter.safetensors made from folder/prior.safetensors: what the inpainting
    workflow's SUNDAE Apply Prior Adapter loads (the embedded one was made from the embedded prior,
    and a workflow run on tiny models would pass their prior through it with a warning)."""
    prior = load_prior(folder / "prior.safetensors", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    tuned = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in prior.state_dict().items()}
    save_adapter(folder / "inpaint_adapter.safetensors", extract_adapter(prior.state_dict(), tuned, 2, ""))


@pytest.fixture
def latents(tmp_path):
    """Factory: latents(**kwargs) -> path of a fresh tiny latent dataset under tmp_path."""
    count = iter(range(1000))
    return lambda **kwargs: write_latents(tmp_path / f"latents{next(count)}", **kwargs)


def pytest_configure(config):
    config.addinivalue_line("markers", "torchrun: a 2-process torchrun run on CPU (about 10-30 s); "
                                       "deselect with -m 'not torchrun'")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """f = 32 like the default VQ-GAN (1024 px -> 32 x 32 tokens), but a few thousand weights."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_model(folder / "vqgan.safetensors", VQGAN(VQGANConfig(
        resolution=64, ch=4, ch_mult=(1, 1, 1, 1, 1, 1), num_res_blocks=1, attn_resolutions=(),
        mid_attention=False, z_channels=4, embed_dim=4, n_embed=16)))
    save_model(folder / "prior.safetensors", HourglassTransformer(HourglassConfig(
        vocab_size=16, dim=16, heads=1, depth=(1, 1, 1), shorten=4, num_classes=9,
        class_names=EMBEDDED_CLASS_NAMES)))  # as the embedded (the class workflow picks one by name)
    write_inpaint_adapter(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SUNDAE_MODEL_DIR", str(folder))
        yield folder
