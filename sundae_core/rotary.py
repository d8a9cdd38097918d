"""2D axial rotary position embeddings, applied to every head.

A head of width `hd` is rotated as hd/2 (x_i, x_{i+hd/2}) pairs; the first half of the pairs turn
with the row index, the second half with the column index. Scores q.k then depend only on the
2D offset between positions. (The authors' code rotated before splitting heads, so only the first
head saw positions; here the same cos/sin broadcast over every head.)
"""

from __future__ import annotations

import functools

import torch


def axial_angles(height: int, width: int, head_dim: int, device=None, base: float = 10000.0) -> torch.Tensor:
    """Rotation angles (h*w, head_dim/2) for a raster-ordered h x w grid."""
    quarter = head_dim // 4
    freqs = base ** (-torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    rows = torch.arange(height, device=device, dtype=torch.float32)
    cols = torch.arange(width, device=device, dtype=torch.float32)
    row_angles = torch.outer(rows, freqs)[:, None, :].expand(height, width, quarter)
    col_angles = torch.outer(cols, freqs)[None, :, :].expand(height, width, quarter)
    return torch.cat([row_angles, col_angles], dim=-1).reshape(height * width, 2 * quarter)


@functools.lru_cache(maxsize=32)
def _tables(height: int, width: int, head_dim: int, device: torch.device,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (h*w, head_dim) for one grid, dtype and device, computed once per process: a
    sample runs the same grid for every step. Made outside inference mode so that tables first
    built while sampling can also be used by a training step's backward pass."""
    with torch.inference_mode(False), torch.no_grad():
        return _cos_signed_sin(height, width, head_dim, device, dtype)


def _cos_signed_sin(height: int, width: int, head_dim: int, device,
                    dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, and sin with its first half negated: x * cos + swap_halves(x) * signed_sin is the
    rotation, one multiply and one fused multiply-add (no negation pass over q and k)."""
    angles = axial_angles(height, width, head_dim, device)
    angles = torch.cat([angles, angles], dim=-1)
    sin = angles.sin()
    sin[:, : head_dim // 2].neg_()
    return angles.cos().to(dtype), sin.to(dtype)


class Rotary:
    """The rotation of one h x w grid, shared by the layers of one forward pass."""

    def __init__(self, height: int, width: int, head_dim: int, device, dtype):
        self.grid = (height, width, head_dim, torch.device(device))
        self.cos, self.signed_sin = self._tables(dtype)

    def _tables(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.compiler.is_compiling():  # traced into the graph (and constant-folded) instead
            return _cos_signed_sin(*self.grid, dtype)
        return _tables(*self.grid, dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (b heads n hd) -> same, rotated, in x's dtype (under autocast q/k are bf16 while the
        residual stream is fp32; mixing them would silently run attention in fp32)."""
        if self.cos.dtype != x.dtype:
            self.cos, self.signed_sin = self._tables(x.dtype)
        half = x.shape[-1] // 2
        swapped = torch.cat([x[..., half:], x[..., :half]], dim=-1)
        return torch.addcmul(x * self.cos, swapped, self.signed_sin)
