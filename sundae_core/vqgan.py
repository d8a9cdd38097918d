"""The VQ-GAN first stage (Esser et al.), with the reference implementation's key names.

Keeping the reference key layout (`encoder.down.0.block.0.norm1.weight`, ...) means imported
checkpoints load without renaming. Inference only: losses live in `trainers/`.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .config import VQGANConfig
from .cpu_features import cpu_bf16_is_fast
from .cpu_memory import reuse_freed_memory
from .errors import InputError
from .norms import layer_norm
from .packed_linear import weights_key
from .quantize import Quantized, ScalarQuantizer, VectorQuantizer
from .token_version import ENCODING_PARTS, compute_token_version


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """(b c h w) stored channels-last: the layout oneDNN's convolutions run natively in (NCHW
    input is reordered around every conv) and in which ChannelNorm's (b h w c) view is free.
    The f = 32 megapixel decode in bf16 on 2 threads took 14.4 s NCHW and 4.2 s channels-last
    (then 2.3 s with cpu_memory.reuse_freed_memory).
    Inference models are converted once when loaded (models.load_model)."""
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x  # others: refused later


class ChannelNorm(nn.Module):
    """LayerNorm over the channels at each position (b c h w), with GroupNorm's parameter names.

    Unlike GroupNorm it uses no statistics over space, so a position's output depends only on
    that position: a model trained on crops computes the same function on the whole canvas, and
    a flat region keeps its colour (GroupNorm over a flat crop sees zero spatial variance and
    normalises the colour away; the old default decoded every colour as brown). Trains in fp32
    on the CPU (norms.layer_norm).
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = layer_norm(rearrange(x, "b c h w -> b h w c"), x.shape[1:2], self.weight, self.bias, self.eps)
        return rearrange(y, "b h w c -> b c h w")


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm as in the reference (32 groups) for wide layers; narrow layers get groups of 4."""
    if channels % 32 == 0 and channels >= 64:
        groups = 32
    else:
        groups = next(g for g in range(max(1, channels // 4), 0, -1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


NORMS: dict[str, Callable[[int], nn.Module]] = {"group": group_norm, "channel": ChannelNorm}


def conv_plus(conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """conv(x) + other, inference only. On the CPU oneDNN adds `other` as the convolution writes
    its output (a binary post-op, the kernel Inductor's freezing emits), saving a pass over a
    megapixel activation: the f = 32 decoder's 14 residual adds were 0.14 s of a 2.4 s decode
    (Intel Xeon with AMX, 2 threads, bf16). Elsewhere, or without the private op, the plain sum."""
    fused = (x.device.type == "cpu" and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
             and x.dtype == other.dtype == conv.weight.dtype and other.shape[1:] == (conv.out_channels, *x.shape[2:])
             and hasattr(torch.ops.mkldnn, "_convolution_pointwise") and torch.backends.mkldnn.is_available()
             and (x.dtype != torch.bfloat16 or cpu_bf16_is_fast()))
    if not fused:
        return conv(x).add_(other)
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, other, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        "add", None, None, [], None)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dropout: float, norm: Callable[[int], nn.Module]):
        super().__init__()
        self.norm1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self._forward_in_place(x)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self._shortcut(x) + h

    def _forward_in_place(self, x: torch.Tensor) -> torch.Tensor:
        """The same arithmetic without gradients, with at most three activations of this size
        alive at once instead of five: at 1024 x 1024 px each is 256 MB, and every new one is
        memory the kernel faults in and zeroes (cpu_memory.py)."""
        h = self.norm1(x)
        h = self.conv1(F.silu(h, inplace=True))
        h = self.norm2(h)  # conv1's output is freed here, not after conv2
        return conv_plus(self.conv2, self.dropout(F.silu(h, inplace=True)), self._shortcut(x))

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x


class AttnBlock(nn.Module):
    """Single-head spatial self-attention over all h*w positions."""

    def __init__(self, channels: int, norm: Callable[[int], nn.Module]):
        super().__init__()
        self.norm = norm(channels)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, hh, ww = x.shape
        q, k, v = (rearrange(m(h), "b c h w -> b 1 (h w) c") for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(rearrange(out, "b 1 (h w) c -> b c h w", h=hh, w=ww))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # the reference's asymmetric padding


# Which of a 3 x 3 kernel's rows (or columns) fall on each of the two low-resolution rows an
# output row of phase a sees after a nearest 2x upsampling: (phase, tap, kernel row).
_PHASE_TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],    # even rows: row i-1, then row i twice
                            [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])   # odd rows: row i twice, then row i+1


def sub_pixel_kernel(weight: torch.Tensor) -> torch.Tensor:
    """A 3 x 3 conv's weight (o i 3 3) as the four 2 x 2 kernels ((a b o) i 2 2) that give, applied
    to the low-resolution input, what it gives after a nearest 2x upsampling: output pixel
    (2y + a, 2x + b) sees only 2 x 2 distinct input pixels, so its nine taps sum into four.
    Summed in float32, then cast back to the weight's dtype."""
    taps = _PHASE_TAPS.to(weight.device)
    phases = torch.einsum("ary,oiyx,bsx->aboirs", taps, weight.float(), taps)
    return rearrange(phases, "a b o i r s -> (a b o) i r s").to(weight.dtype)


def interleave_phases(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """y ((a b c) h+1 w+1), phase (a, b)'s output for pixel (2i + a, 2j + b) at (i + a, j + b):
    the (c 2h 2w) image, channels-last like the convolutions' own outputs."""
    channels = y.shape[1] // 4
    phases = rearrange(y, "n (a b c) h w -> n h w a b c", a=2, b=2)  # a view of the channels-last conv output
    out = torch.empty((y.shape[0], 2 * height, 2 * width, channels), dtype=y.dtype, device=y.device)
    grid = rearrange(out, "n (h a) (w b) c -> n h a w b c", a=2, b=2)
    for a in (0, 1):
        for b in (0, 1):
            grid[:, :, a, :, b].copy_(phases[:, a:a + height, b:b + width, a, b])
    return rearrange(out, "n h w c -> n c h w")


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3 x 3 conv (the reference's).

    Without gradients the same function runs in sub-pixel form: one conv with 2 x 2 kernels and four
    times the outputs over the low-resolution input (sub_pixel_kernel), its four phases then
    interleaved. That is 16 multiply-adds per input-output channel pair and low-resolution pixel
    instead of 36, and no upsampled copy of the input. The f = 32 megapixel decoder's five
    upsamplings are 26 % of its FLOPs; on an Intel Xeon with AMX, 2 threads, bf16, the one into
    1024 x 1024 (128 channels) took 250 ms against 310, the one into 512 x 512 (256 channels) 160
    against 203 ms. The kernels are derived once per weight version (packed_linear.weights_key)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self._phases: tuple[tuple, torch.Tensor, torch.Tensor | None] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        kernel, bias = self._phase_weights()
        return interleave_phases(F.conv2d(x, kernel, bias, padding=1), *x.shape[-2:])

    def _phase_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        w, bias = self.conv.weight, self.conv.bias
        key = weights_key(w, bias)
        if self._phases is None or self._phases[0] != key:
            self._phases = (key, channels_last(sub_pixel_kernel(w.detach())),
                            None if bias is None else bias.detach().repeat(4))
        return self._phases[1], self._phases[2]

    def _apply(self, fn, recurse=True):
        self._phases = None  # a move or cast leaves the derived kernels behind
        return super()._apply(fn, recurse)


class _Level(nn.Module):
    """One resolution level: `block` and `attn` ModuleLists plus an optional resampler."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module]):
        super().__init__()
        self.block, self.attn = nn.ModuleList(blocks), nn.ModuleList(attns)

    def run(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class _Mid(nn.Module):
    def __init__(self, channels: int, dropout: float, attention: bool, norm: Callable[[int], nn.Module]):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, norm)
        if attention:
            self.attn_1 = AttnBlock(channels, norm)
        self.block_2 = ResnetBlock(channels, channels, dropout, norm)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.block_1(h)
        if hasattr(self, "attn_1"):
            h = self.attn_1(h)
        return self.block_2(h)


class Encoder(nn.Module):
    def __init__(self, c: VQGANConfig):
        super().__init__()
        norm = NORMS[c.norm]
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1)
        res, cin = c.resolution, c.ch
        self.down = nn.ModuleList()
        mults = (1,) + tuple(c.ch_mult)
        for i in range(len(c.ch_mult)):
            blocks, attns = [], []
            cin, cout = c.ch * mults[i], c.ch * c.ch_mult[i]
            for _ in range(c.num_res_blocks):
                blocks.append(ResnetBlock(cin, cout, c.dropout, norm))
                cin = cout
                if res in c.attn_resolutions:
                    attns.append(AttnBlock(cout, norm))
            level = _Level(blocks, attns)
            if i != len(c.ch_mult) - 1:
                level.downsample = Downsample(cout)
                res //= 2
            self.down.append(level)
        self.mid = _Mid(cin, c.dropout, c.mid_attention, norm)
        self.norm_out = norm(cin)
        self.conv_out = nn.Conv2d(cin, c.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level.run(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, c: VQGANConfig):
        super().__init__()
        norm = NORMS[c.norm]
        cin = c.ch * c.ch_mult[-1]
        res = c.resolution // c.factor
        self.conv_in = nn.Conv2d(c.z_channels, cin, 3, padding=1)
        self.mid = _Mid(cin, c.dropout, c.mid_attention, norm)
        levels = []
        for i in reversed(range(len(c.ch_mult))):
            blocks, attns = [], []
            cout = c.ch * c.ch_mult[i]
            for _ in range(c.decoder_blocks + 1):
                blocks.append(ResnetBlock(cin, cout, c.dropout, norm))
                cin = cout
                if res in c.attn_resolutions:
                    attns.append(AttnBlock(cout, norm))
            level = _Level(blocks, attns)
            if i != 0:
                level.upsample = Upsample(cout)
                res *= 2
            levels.insert(0, level)  # reference order: up[0] is the full-resolution level
        self.up = nn.ModuleList(levels)
        self.norm_out = norm(cin)
        self.conv_out = nn.Conv2d(cin, c.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level.run(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def _variance_preserving_init(module: nn.Module) -> None:
    """Conv weights uniform with variance 1 / fan_in, so a signal keeps its scale through a conv.

    PyTorch's default init has a third of that variance. Between the input and the output of an
    f = 32 model lie a dozen convolutions outside any residual path (conv_in, five downsamplers,
    conv_out, the quantizer's two 1x1 convs, five upsamplers), so colour reached the decoder
    shrunk by about 3**6 against what the residual branches add: a tiny f = 16 model trained on
    8 saturated colours reproduced none of them in 550 steps (mean colour off by up to 1.98 of
    2) and reproduced all within 0.12 with this init. Loaded checkpoints overwrite it.
    """
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_uniform_(module.weight, nonlinearity="linear")


class VQGAN(nn.Module):
    """images (b c h w) in [-1, 1] <-> tokens (b h/f w/f) in [0, n_embed)."""

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        if config.quantizer == "fsq":
            self.quantize = ScalarQuantizer(config.fsq_levels)
        else:
            self.quantize = VectorQuantizer(config.n_embed, config.embed_dim, config.beta,
                                            config.l2_normalize_codes)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        self.apply(_variance_preserving_init)

    @property
    def factor(self) -> int:
        return self.config.factor

    @property
    def vocab_size(self) -> int:
        return self.config.n_embed

    @property
    def token_version(self) -> str:
        """Digest of the weights that turn pixels into ids (sundae_core.token_version). Cached, and
        recomputed once those weights change (an optimiser step bumps their version counters)."""
        parts = [t for name, t in self.state_dict(keep_vars=True).items() if name.startswith(ENCODING_PARTS)]
        # inference tensors (a model loaded under inference_mode) keep no version counter; nothing
        # trains them, so their storage and dtype identify them
        key = tuple((t.data_ptr(), t.dtype, -1 if t.is_inference() else t._version) for t in parts)
        if getattr(self, "_token_version_key", None) != key:
            self._token_version = compute_token_version(self)
            self._token_version_key = key
        return self._token_version

    def _check_images(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise InputError(f"VQ-GAN expects images shaped (b {self.config.in_channels} h w), "
                             f"got {tuple(images.shape)}")
        f = self.factor
        if images.shape[2] % f or images.shape[3] % f:
            raise InputError(f"image size {images.shape[3]}x{images.shape[2]} (width x height) is not a "
                             f"multiple of the VQ-GAN factor {f}; resize or crop it to a multiple of {f} first")

    def cast_for_inference(self, dtype: torch.dtype | None) -> VQGAN:
        """The decoding half (post_quant_conv, decoder) in `dtype` (None: as it is), the encoding
        half (encoder, quant_conv, quantize) in float32 whatever `dtype` is.

        Why the encoder stays float32: run end to end in bf16, its activations (residual sums and
        norms included, not just the matmuls that training autocast to bf16) tip flat dark areas
        across FSQ rounding boundaries as the canvas grows. A flat black 1024 px canvas encoded in
        bf16 changed 679 of its 1024 tokens to a code that decodes dark grey, 19 of 255 off (9 at
        512 px, 2 at 256 px); in float32 or under autocast it comes back 0.6 off at every size.
        The weights are the same either way (the token version hashes them, not the activations),
        and the encoder runs once per image: 0.25 s float32 against 0.35 s bf16 for 1024 px on a
        2-core AMD EPYC."""
        for part in (self.encoder, self.quant_conv, self.quantize):
            part.float()
        for part in (self.post_quant_conv, self.decoder) if dtype is not None else ():
            part.to(dtype)
        return self

    @property
    def encoder_dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Continuous pre-quantization latents (b embed_dim h w), in the encoder's dtype."""
        self._check_images(images)
        return self.quant_conv(self.encoder(images.to(self.encoder_dtype)))

    def quantize_latents(self, z: torch.Tensor) -> Quantized:
        return self.quantize(z)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (b c H W) in [-1, 1] -> tokens (b H/f W/f) int64."""
        with reuse_freed_memory():
            return self.quantize.nearest(self.encode_latents(channels_last(images)))

    def decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z_q))

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (b h w) -> images (b c hf wf), clamped to [-1, 1], float32."""
        with reuse_freed_memory():
            return self.decode_latents(channels_last(self.lookup_tokens(tokens))).float().clamp(-1, 1)

    def lookup_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (b h w) -> their code vectors (b c h w) in the model's dtype, after checking them."""
        if tokens.ndim != 3:
            raise InputError(f"tokens must be shaped (b h w), got {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.config.n_embed):
            raise InputError(f"token ids must lie in [0, {self.config.n_embed}) for this VQ-GAN; "
                             "tokens and VQ-GAN come from different models?")
        p = self.post_quant_conv.weight
        return self.quantize.lookup(tokens.to(p.device)).to(p.dtype)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, Quantized]:
        """Training pass: reconstruction and the quantizer's result (loss, usage)."""
        q = self.quantize(self.encode_latents(images))
        return self.decode_latents(q.z_q), q

    def last_layer(self) -> torch.Tensor:
        """Decoder's last conv weight: the adaptive GAN weight is computed on it."""
        return self.decoder.conv_out.weight
