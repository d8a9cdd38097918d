"""2D axial rotary position embeddings, applied to every head.

A head of width `hd` is rotated as hd/2 (x_i, x_{i+hd/2}) pairs; the first half of the pairs turn
with the row index, the second half with the column index. Scores q.k then depend only on the
2D offset between positions. (The authors' code rotated before splitting heads, so only the first
head saw positions; here the same cos/sin broadcast over every head.)
"""

from __future__ import annotations

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


class Rotary:
    """cos/sin tables (n, hd) for one grid, computed once per forward and shared by its layers."""

    def __init__(self, height: int, width: int, head_dim: int, device, dtype):
        angles = axial_angles(height, width, head_dim, device)
        angles = torch.cat([angles, angles], dim=-1)
        self.cos, self.sin = angles.cos().to(dtype), angles.sin().to(dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (b heads n hd) -> same, rotated, in x's dtype (under autocast q/k are bf16 while the
        residual stream is fp32; mixing them would silently run attention in fp32)."""
        if self.cos.dtype != x.dtype:
            self.cos, self.sin = self.cos.to(x.dtype), self.sin.to(x.dtype)
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * self.cos + rotated * self.sin
