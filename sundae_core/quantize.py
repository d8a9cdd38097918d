"""Quantizers with a straight-through gradient: `VectorQuantizer`, the paper's nearest codeword
in a learned codebook, and `ScalarQuantizer` (FSQ), a codebook-free option that cannot collapse.

VQ loss (docs/architecture.md): ||sg[E(x)] - e||^2 + beta * ||E(x) - sg[e]||^2 -- beta weighs the
*commitment* term. (The reference implementation's default "legacy" mode swaps them.)
"""

from __future__ import annotations

import math
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


class ScalarQuantizer(nn.Module):
    """Finite scalar quantisation (Mentzer et al. 2023, "FSQ"): each of the `len(levels)` latent
    channels is bounded (clamped, see `_bound`) and rounded to one of `levels[i]` values; a token is the mixed-
    radix number of those digits, so the vocabulary is prod(levels) and every id is a valid code.

    Why it is offered beside the VQ codebook: there is no codebook to collapse. A learned
    codebook on emoji art (mostly flat white) collapsed to a handful of codes within 40 steps,
    restarts or not, and a decoder fed a few codes can only draw an average colour. FSQ has no
    codebook loss and no dead codes; its straight-through rounding is the only trick.
    """

    def __init__(self, levels: tuple[int, ...]):
        super().__init__()
        self.levels = tuple(int(v) for v in levels)
        self.n_embed = math.prod(self.levels)
        self.embed_dim = len(self.levels)
        lv = torch.tensor(self.levels, dtype=torch.float32)
        # mixed-radix place values in Python: torch.cumprod on the meta device (models.skeleton)
        # runs through torch's reference kernels, whose first use imports the compiler stack (3 s)
        basis = torch.tensor([math.prod(self.levels[:i]) for i in range(len(self.levels))])
        # Buffers, not parameters, and not saved: they follow from the config alone.
        self.register_buffer("_levels", lv, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)

    def _range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (1 d 1 1) bounds: [-(L-1)/2, (L-1)/2], shifted by -1/2 for even L so that
        rounding yields exactly L integers (digit - L // 2); the 1e-3 margin keeps the top value
        of an even level from rounding past L - 1."""
        lv = self._levels.view(1, -1, 1, 1)
        half = (lv - 1) / 2
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        return -half - offset + 1e-3, half - offset - 1e-3

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        """(b d h w) -> values clamped to `_range`, with a straight-through gradient.

        FSQ bounds with tanh; measured on the emoji VQ-GAN, one latent channel drifted to a mean
        of 4.5 within 100 steps, where tanh's gradient vanishes (13 of 1024 tokens in a batch
        distinct). A clamp alone has the opposite flaw: nothing pulls a value back once it has
        left the range, and within 750 steps most tokens sat in the corners of the grid (batch
        perplexity 30 -> 11). Hence the clamp plus `range_loss`, which pulls them back.
        """
        low, high = self._range()
        z = z.float()
        clamped = torch.minimum(torch.maximum(z, low), high)
        return z + (clamped - z).detach()

    def range_loss(self, z: torch.Tensor) -> torch.Tensor:
        """Mean squared distance of (b d h w) latents outside their range (0 inside it)."""
        low, high = self._range()
        z = z.float()
        return (F.relu(low - z) + F.relu(z - high)).pow(2).mean()

    def _digits_to_values(self, digits: torch.Tensor) -> torch.Tensor:
        """Integer digits in [0, L) (b d h w) -> code values in [-1, 1]."""
        half = (self._levels // 2).view(1, -1, 1, 1)
        return (digits - half) / half

    def codebook(self) -> torch.Tensor:
        """Every code's value vector (n_embed d), in token order."""
        ids = torch.arange(self.n_embed, device=self._basis.device)
        digits = (ids[:, None] // self._basis) % self._levels.long()
        return self._digits_to_values(digits.float()[:, :, None, None])[:, :, 0, 0]

    def _round(self, z: torch.Tensor) -> torch.Tensor:
        """(b d h w) -> rounded integer-valued tensor (straight-through) in the bounded range."""
        bounded = self._bound(z)
        return bounded + (torch.round(bounded) - bounded).detach()

    def _tokens(self, rounded: torch.Tensor) -> torch.Tensor:
        half = (self._levels // 2).view(1, -1, 1, 1)
        digits = (rounded.detach() + half).round().long()
        return torch.einsum("bdhw,d->bhw", digits, self._basis)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """z: (b d h w) -> tokens (b h w)."""
        return self._tokens(self._round(z))

    def lookup(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (b h w) -> code values (b d h w) in [-1, 1]."""
        digits = (tokens[:, None] // self._basis.view(1, -1, 1, 1)) % self._levels.long().view(1, -1, 1, 1)
        return self._digits_to_values(digits.float())

    def forward(self, z: torch.Tensor) -> Quantized:
        rounded = self._round(z)
        tokens = self._tokens(rounded)
        half = (self._levels // 2).view(1, -1, 1, 1)
        z_q = (rounded / half).to(z.dtype)
        counts = torch.bincount(tokens.flatten(), minlength=self.n_embed).float()
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        return Quantized(z_q, tokens, self.range_loss(z), perplexity, (counts > 0).float().mean())

    def restart_dead_codes(self, z: torch.Tensor, counts: torch.Tensor,
                           generator: torch.Generator | None = None, threshold: float = 0.0) -> int:
        """No codebook, nothing to restart."""
        return 0
