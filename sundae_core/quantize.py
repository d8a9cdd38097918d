"""Nearest-codeword vector quantizer with a straight-through gradient.

Loss (method.md): ||sg[E(x)] - e||^2 + beta * ||E(x) - sg[e]||^2 -- beta weighs the
*commitment* term. (The reference implementation's default "legacy" mode swaps them.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class Quantized:
    z_q: torch.Tensor  # (b c h w) quantized latents, straight-through to the encoder output
    tokens: torch.Tensor  # (b h w) int64
    loss: torch.Tensor  # scalar codebook + beta * commitment
    perplexity: torch.Tensor  # exp(entropy) of the batch's code histogram
    usage: torch.Tensor  # fraction of codes used in the batch


class VectorQuantizer(nn.Module):
    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25, l2_normalize: bool = False):
        super().__init__()
        self.n_embed, self.embed_dim, self.beta, self.l2_normalize = n_embed, embed_dim, beta, l2_normalize
        self.embedding = nn.Embedding(n_embed, embed_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_embed, 1.0 / n_embed)

    def codebook(self) -> torch.Tensor:
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_normalize else w

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """z: (b c h w) -> tokens (b h w). Distances in fp32: bf16 ties would make codes flicker."""
        b, _, h, w = z.shape
        flat = rearrange(z, "b c h w -> (b h w) c").float()
        book = self.codebook().float()
        if self.l2_normalize:
            flat = F.normalize(flat, dim=-1)
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.t() + book.pow(2).sum(1)[None]
        return rearrange(dist.argmin(1), "(b h w) -> b h w", b=b, h=h, w=w)

    def lookup(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (b h w) -> z_q (b c h w)."""
        return rearrange(F.embedding(tokens, self.codebook()), "b h w c -> b c h w")

    def forward(self, z: torch.Tensor) -> Quantized:
        tokens = self.nearest(z)
        z_q = self.lookup(tokens).to(z.dtype)
        z_in = F.normalize(z, dim=1) if self.l2_normalize else z
        codebook_loss = F.mse_loss(z_q.float(), z_in.detach().float())
        commitment = F.mse_loss(z_in.float(), z_q.detach().float())
        loss = codebook_loss + self.beta * commitment
        z_q = z_in + (z_q - z_in).detach()  # straight-through
        counts = torch.bincount(tokens.flatten(), minlength=self.n_embed).float()
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        usage = (counts > 0).float().mean()
        return Quantized(z_q, tokens, loss, perplexity, usage)

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor, counts: torch.Tensor,
                           generator: torch.Generator | None = None, threshold: float = 0.0) -> int:
        """Re-seed codes used <= threshold times with random encoder outputs from `z` (b c h w).

        Returns how many codes were restarted. The caller accumulates `counts` over a window
        and (under DDP) must pass the same z and counts on every rank to keep weights equal.
        """
        dead = (counts <= threshold).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        flat = rearrange(z, "b c h w -> (b h w) c").float()
        pick = torch.randint(0, flat.shape[0], (dead.numel(),), generator=generator, device=flat.device)
        self.embedding.weight.data[dead] = flat[pick].to(self.embedding.weight.dtype)
        return int(dead.numel())
