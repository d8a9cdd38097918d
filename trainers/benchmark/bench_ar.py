"""The benchmark's baselines and FLOP formulas: the vanilla full-resolution transformer, the
autoregressive decoder-only transformer with a KV cache (the reference approach, VQ-GAN +
transformer), and the FLOPs of AR generation and of the VQ-GAN's encode / decode."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from sundae_core.config import HourglassConfig, VQGANConfig
from sundae_core.sampler import sample_categorical
from sundae_core.vqgan import VQGAN


def vanilla_config(config: HourglassConfig) -> HourglassConfig:
    """The same network without shortening: every layer at full resolution."""
    return dataclasses.replace(config, depth=config.depth_levels().total)


class ARBlock(nn.Module):
    """Pre-norm causal block; during decoding it attends over its KV cache."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def step(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, t: int) -> torch.Tensor:
        """x: (b 1 d), the token at position t; caches: (b heads n dh), filled up to t - 1."""
        q, k, v = rearrange(self.to_qkv(self.norm1(x)), "b 1 (three hd d) -> three b hd 1 d", three=3,
                            hd=self.heads)
        k_cache[:, :, t:t + 1] = k
        v_cache[:, :, t:t + 1] = v
        # The query is the newest position: attending over the cache up to t is the causal mask.
        out = F.scaled_dot_product_attention(q, k_cache[:, :, :t + 1], v_cache[:, :, :t + 1])
        x = x + self.to_out(rearrange(out, "b hd 1 d -> b 1 (hd d)"))
        return x + self.mlp(self.norm2(x))


class ARDecoder(nn.Module):
    """Minimal decoder-only transformer over a raster of `length` tokens, KV-cached decoding.

    The reference approach (VQ-GAN + transformer): same width, heads, MLP and total depth as the
    prior it is compared with; learned positions; a start token (id = vocab_size)."""

    def __init__(self, vocab_size: int, dim: int, heads: int, depth: int, length: int, mlp_ratio: int = 4):
        super().__init__()
        self.vocab_size, self.length, self.heads = vocab_size, length, heads
        self.embed = nn.Embedding(vocab_size + 1, dim)
        self.pos = nn.Parameter(torch.randn(length, dim) * 0.02)
        self.blocks = nn.ModuleList(ARBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def new_caches(self, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        p = self.pos
        shape = (batch, self.heads, self.length, p.shape[1] // self.heads)
        return [(torch.empty(shape, device=p.device, dtype=p.dtype), torch.empty(shape, device=p.device, dtype=p.dtype))
                for _ in self.blocks]

    def next_logits(self, token: torch.Tensor, t: int, caches) -> torch.Tensor:
        """token (b,) at position t (the start token at t = 0) -> logits (b v) for position t."""
        x = (self.embed(token) + self.pos[t])[:, None]
        for block, (k, v) in zip(self.blocks, caches):
            x = block.step(x, k, v, t)
        return self.head(self.norm(x[:, 0]))

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced causal pass over (b n) tokens -> (b n v), without the cache (tests
        check that cached decoding reproduces it)."""
        b, n = tokens.shape
        start = torch.full((b, 1), self.vocab_size, dtype=torch.long, device=tokens.device)
        x = self.embed(torch.cat([start, tokens[:, :-1]], 1)) + self.pos[:n]
        for block in self.blocks:
            q, k, v = rearrange(block.to_qkv(block.norm1(x)), "b n (three hd d) -> three b hd n d", three=3,
                                hd=self.heads)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + block.to_out(rearrange(out, "b hd n d -> b n (hd d)"))
            x = x + block.mlp(block.norm2(x))
        return self.head(self.norm(x))

    @torch.inference_mode()
    def generate(self, batch: int, *, steps: int | None = None, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """(b n) tokens, one position per network call; `steps` < n stops early (warm-up)."""
        caches = self.new_caches(batch)
        out = torch.zeros(batch, self.length, dtype=torch.long, device=self.pos.device)
        token = torch.full((batch,), self.vocab_size, dtype=torch.long, device=self.pos.device)
        for t in range(self.length if steps is None else steps):
            token = sample_categorical(self.next_logits(token, t, caches), temperature, generator)
            out[:, t] = token
        return out


def ar_flops(config: HourglassConfig, batch: int, n: int) -> int:
    """Matmul FLOPs of generating n tokens with a KV cache (the attention reads t + 1 keys at t)."""
    d, layers = config.dim, config.depth_levels().total
    per_token = layers * 2 * (4 * d * d + 2 * config.mlp_ratio * d * d) + 2 * d * config.vocab_size
    attention = layers * 4 * d * (n * (n + 1) // 2)
    return batch * (n * per_token + attention)


def vqgan_flops(config: VQGANConfig, run: Callable[[VQGAN], object]) -> int:
    """FLOPs torch counts for run(model) on a meta-device VQ-GAN (no memory, no compute)."""
    with torch.device("meta"):
        model = VQGAN(config)
        counter = FlopCounterMode(display=False)
        with counter:
            run(model)
    return int(counter.get_total_flops())


def decoder_flops(config: VQGANConfig, height: int, width: int) -> int:
    """FLOPs of one VQ-GAN decode of a (height x width) token grid."""
    return vqgan_flops(config, lambda m: m.decode_latents(torch.zeros(1, config.embed_dim, height, width)))


def encoder_flops(config: VQGANConfig, height: int, width: int) -> int:
    """FLOPs of one VQ-GAN encode (with the nearest-code search) of a (height x width) image."""
    return vqgan_flops(config, lambda m: m.encode(torch.zeros(1, config.in_channels, height, width)))
