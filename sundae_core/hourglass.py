"""The 2D hourglass transformer denoiser f_theta (paper section 3.2).

tokens (b h w) -> embeddings (+ class embedding) -> pre blocks at full resolution -> downsample
(2x2 patches for k = 4) -> valley (blocks, or a further hourglass) -> upsample (+ residual) ->
post blocks -> logits (b h w v). All attention is bidirectional (no causal mask, no shifting).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .config import DepthLevels, HourglassConfig
from .errors import InputError
from .norms import LayerNorm
from .rotary import Rotary


# Below this many keys, attention with gradients runs as two plain matmuls: on CPU the fused
# (flash) kernel's backward pass is 2-5x slower than that for short sequences (measured on
# 49-256 keys and the 4-5 key patch attentions); its forward and long sequences keep the kernel.
SHORT_KEYS = 256
# CUDA's fused attention kernels put batch x heads on a grid axis of at most 65535 blocks; the
# pooling attentions (one tiny sequence per 2 x 2 patch) pass that at training batch sizes
# (256 images x 256 patches x 4 heads failed with "invalid argument" on an H200).
CUDA_GRID_LIMIT = 65535
# cuDNN's fused attention failed on the pooling attentions' 4-key groups (torch 2.11, H200); off
# the CPU these kernels serve every attention of the hourglass
GPU_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
    """Softmax attention, (b hd n d) each; the same function whichever path computes it."""
    if q.device.type == "cpu":
        if k.shape[-2] > SHORT_KEYS or not torch.is_grad_enabled():
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    elif q.shape[0] * q.shape[1] <= CUDA_GRID_LIMIT:
        with sdpa_kernel(GPU_BACKENDS):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    weights = ((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)).softmax(dim=-1)
    return F.dropout(weights, dropout) @ v


class Attention(nn.Module):
    """Multi-head attention; queries from `x`, keys/values from `context` (default: x)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                rotary: Rotary | None = None) -> torch.Tensor:
        context = x if context is None else context
        q = rearrange(self.to_q(x), "b n (hd d) -> b hd n d", hd=self.heads)
        k, v = rearrange(self.to_kv(context), "b n (two hd d) -> two b hd n d", two=2, hd=self.heads)
        if rotary is not None:
            q, k = rotary(q), rotary(k)
        out = attend(q, k, v, self.dropout if self.training else 0.0)
        return self.to_out(rearrange(out, "b hd n d -> b n (hd d)"))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), x + mlp(norm(x)), GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float, dropout_at: str = "weights"):
        super().__init__()
        on_weights = dropout_at == "weights"
        self.norm1, self.attn = LayerNorm(dim), Attention(dim, heads, dropout if on_weights else 0.0)
        # identity unless the attention's dropout goes to its output (HourglassConfig.attention_dropout_at)
        self.attn_dropout = nn.Dropout(0.0 if on_weights else dropout)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, rotary: Rotary) -> torch.Tensor:
        x = x + self.attn_dropout(self.attn(self.norm1(x), rotary=rotary))
        return x + self.mlp(self.norm2(x))


class Downsample(nn.Module):
    """Space-to-depth over p x p patches, Linear(d*k, d), then the pooled token attends to
    exactly the k tokens of its own patch (attention resampling aligned with the 2D patch)."""

    def __init__(self, dim: int, heads: int, patch: int):
        super().__init__()
        self.patch = patch
        self.linear = nn.Linear(dim * patch * patch, dim)
        self.norm_q, self.norm_kv = LayerNorm(dim), LayerNorm(dim)
        self.attn = Attention(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (b h w d), h and w multiples of the patch -> (b h/p w/p d)."""
        p = self.patch
        b, h, w, _ = x.shape
        patches = rearrange(x, "b (h p1) (w p2) d -> (b h w) (p1 p2) d", p1=p, p2=p)
        pooled = self.linear(rearrange(patches, "n k d -> n 1 (k d)"))
        pooled = pooled + self.attn(self.norm_q(pooled), self.norm_kv(patches))
        return rearrange(pooled, "(b h w) 1 d -> b h w d", b=b, h=h // p, w=w // p)


class Upsample(nn.Module):
    """Linear(d, d*k), depth-to-space, plus the residual from before the downsample; then each
    patch's k tokens attend to themselves and the coarse token they came from."""

    def __init__(self, dim: int, heads: int, patch: int):
        super().__init__()
        self.patch = patch
        self.linear = nn.Linear(dim, dim * patch * patch)
        self.norm_q, self.norm_kv = LayerNorm(dim), LayerNorm(dim)
        self.attn = Attention(dim, heads)

    def forward(self, coarse: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """coarse: (b h w d), residual: (b hp wp d) -> (b hp wp d)."""
        p = self.patch
        b, h, w, d = coarse.shape
        fine = rearrange(self.linear(coarse), "b h w (k d) -> (b h w) k d", k=p * p)
        fine = fine + rearrange(residual, "b (h p1) (w p2) d -> (b h w) (p1 p2) d", p1=p, p2=p)
        context = torch.cat([rearrange(coarse, "b h w d -> (b h w) 1 d"), fine], dim=1)
        fine = fine + self.attn(self.norm_q(fine), self.norm_kv(context))
        return rearrange(fine, "(b h w) (p1 p2) d -> b (h p1) (w p2) d", b=b, h=h, w=w, p1=p, p2=p)


class Level(nn.Module):
    """The valley's blocks at this resolution, or pre blocks, a shortened Level, post blocks."""

    def __init__(self, levels: DepthLevels, c: HourglassConfig):
        super().__init__()
        self.head_dim = c.dim // c.heads
        make = lambda n: nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio, c.dropout, c.attention_dropout_at)
                                       for _ in range(n))
        if not levels.shortened:
            self.pre, self.valley, self.post = make(levels.valley), None, make(0)
            return
        pre, post = levels.shortened[0]
        self.pre, self.post = make(pre), make(post)
        self.down = Downsample(c.dim, c.heads, c.patch)
        self.valley = Level(levels.inner(), c)
        self.up = Upsample(c.dim, c.heads, c.patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (b h w d) -> (b h w d)."""
        b, h, w, d = x.shape
        rotary = Rotary(h, w, self.head_dim, x.device, x.dtype)
        flat = rearrange(x, "b h w d -> b (h w) d")
        for block in self.pre:
            flat = block(flat, rotary)
        if self.valley is None:
            return rearrange(flat, "b (h w) d -> b h w d", h=h)
        x = rearrange(flat, "b (h w) d -> b h w d", h=h)
        p = self.down.patch
        # Grids that do not divide into patches are zero-padded at the bottom/right and cropped
        # back after upsampling, so any h x w works.
        ph, pw = -h % p, -w % p
        padded = F.pad(x, (0, 0, 0, pw, 0, ph)) if ph or pw else x
        y = self.up(self.valley(self.down(padded)), padded)[:, :h, :w]
        flat = rearrange(y, "b h w d -> b (h w) d")
        for block in self.post:
            flat = block(flat, rotary)
        return rearrange(flat, "b (h w) d -> b h w d", h=h)


class HourglassTransformer(nn.Module):
    """f_theta: tokens (b h w) int64 [+ labels (b,)] -> logits (b h w v)."""

    def __init__(self, config: HourglassConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        if config.num_classes:
            # One extra row: the null class, for classifier-free guidance.
            self.class_embed = nn.Embedding(config.num_classes + 1, config.dim)
        self.body = Level(config.depth_levels(), config)
        self.norm_out = LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.vocab_size)
        self.apply(_init)

    @property
    def null_label(self) -> int | None:
        return self.config.num_classes if self.config.num_classes else None

    def features(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (b h w) -> normalised final features (b h w d)."""
        self.check_inputs(tokens, labels)
        return self.unchecked_features(tokens, labels)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(tokens, labels))

    def unchecked_logits(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """forward without the input checks: their host syncs would split a torch.compile graph."""
        return self.head(self.unchecked_features(tokens, labels))

    def unchecked_features(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """features without the input checks (see unchecked_logits)."""
        x = self.embed(tokens)
        if self.config.num_classes:
            if labels is None:
                labels = torch.full((tokens.shape[0],), self.config.num_classes, device=tokens.device)
            x = x + self.class_embed(labels.to(tokens.device))[:, None, None, :]
        return self.norm_out(self.body(x))

    def check_inputs(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Raise InputError for tokens or labels this prior cannot take (forward does this too)."""
        c = self.config
        if tokens.ndim != 3 or tokens.dtype not in (torch.int64, torch.int32):
            raise InputError(f"prior expects integer tokens shaped (b h w), got {tuple(tokens.shape)} {tokens.dtype}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= c.vocab_size):
            raise InputError(f"token ids must lie in [0, {c.vocab_size}) for this prior; do the tokens come "
                             "from a VQ-GAN with another codebook size than the prior was trained on?")
        if labels is not None:
            if not c.num_classes:
                raise InputError("this prior is unconditional: it takes no class label (remove the class input)")
            if labels.shape != (tokens.shape[0],):
                raise InputError(f"labels must be shaped (b,) = ({tokens.shape[0]},), got {tuple(labels.shape)}")
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > c.num_classes):
                raise InputError(f"class label out of range: this prior has {c.describe_classes()} "
                                 f"and {c.num_classes} = null/unconditional")


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


def _level_flops(levels: DepthLevels, c: HourglassConfig, n: int) -> int:
    d, p2 = c.dim, c.patch ** 2
    block = 2 * n * (4 * d * d + 2 * c.mlp_ratio * d * d) + 4 * n * n * d
    if not levels.shortened:
        return levels.valley * block
    pre, post = levels.shortened[0]
    m = -(-n // p2)  # coarse tokens (ceil, padding counted)
    # downsample: linear + q (m tokens) + kv over m*k tokens + out; scores tiny
    down = 2 * m * p2 * d * d + 2 * m * d * d + 2 * m * p2 * 2 * d * d + 2 * m * d * d + 4 * m * p2 * d
    # upsample: linear + q over n + kv over n + m + out; scores within patches
    up = 2 * m * d * p2 * d + 2 * n * d * d + 2 * (n + m) * 2 * d * d + 2 * n * d * d + 4 * n * (p2 + 1) * d
    return (pre + post) * block + down + up + _level_flops(levels.inner(), c, m)


def flops(config: HourglassConfig, batch: int, height: int, width: int) -> int:
    """Matmul FLOPs of one forward pass (multiply-add = 2), the quantity benchmarks divide by."""
    n = height * width
    return batch * (_level_flops(config.depth_levels(), config, n) + 2 * n * config.dim * config.vocab_size)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
