"""Corruption, the unrolled loss, and pixel -> latent inpainting masks."""

import pytest
import torch
import torch.nn.functional as F

from sundae_core.corruption import corrupt
from sundae_core.errors import InputError
from sundae_core.masks import latent_mask
from sundae_core.sampler import sample_categorical
from sundae_core.unroll import unrolled_loss

V = 16


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


class TinyDenoiser(torch.nn.Module):
    """logits = table[token] + a per-position bias: enough to have gradients and non-trivial samples."""

    def __init__(self, h, w):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(V, V, generator=_gen(1)))
        self.bias = torch.nn.Parameter(torch.randn(h, w, V, generator=_gen(2)))
        self.calls = []

    def forward(self, tokens, labels=None):
        self.calls.append(tokens.clone())
        return self.table[tokens] + self.bias


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_unrolled_loss_is_the_mean_of_the_per_step_cross_entropies(steps):
    tokens = torch.randint(0, V, (4, 3, 5), generator=_gen(9))
    model = TinyDenoiser(3, 5)
    out = unrolled_loss(model, tokens, V, steps=steps, generator=_gen(42))
    assert len(out.per_step) == steps == len(model.calls)
    # recompute by hand with a generator in the same state
    g = _gen(42)
    z = corrupt(tokens, V, generator=g).tokens
    expected = []
    for i in range(steps):
        assert torch.equal(model.calls[i], z)  # step i + 1 denoises the previous step's sample
        logits = model.table[z] + model.bias
        expected.append(F.cross_entropy(logits.reshape(-1, V), tokens.flatten()))
        z = sample_categorical(logits.detach().reshape(-1, V), 1.0, g).view_as(tokens)
    for got, want in zip(out.per_step, expected):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(out.loss, torch.stack(expected).mean())
    # the gradient is that of the mean: every step's logits get its share, nothing flows through samples
    out.loss.backward()
    grad = model.table.grad.clone()
    model.zero_grad()
    torch.stack(expected).mean().backward()
    torch.testing.assert_close(grad, model.table.grad)
    with pytest.raises(ValueError):
        unrolled_loss(model, tokens, V, steps=0)


def test_corruption_rate_matches_t_in_expectation():
    tokens = torch.zeros(64, 32, 32, dtype=torch.long)
    c = corrupt(tokens, V, generator=_gen(), rate=0.3)
    assert c.rate.tolist() == pytest.approx([0.3] * 64)
    assert abs(c.replaced.float().mean().item() - 0.3) < 0.01
    # a fresh draw equals the original with probability 1/V
    assert abs((c.tokens != tokens).float().mean().item() - 0.3 * (V - 1) / V) < 0.01
    assert torch.equal(c.tokens[~c.replaced], tokens[~c.replaced])
    # the draws are uniform over the vocabulary
    freq = torch.bincount(c.tokens[c.replaced], minlength=V).float() / c.replaced.sum()
    assert (freq - 1 / V).abs().max() < 0.01
    # t ~ U[0, 1] per sample, and each sample is corrupted at its own t
    c = corrupt(tokens, V, generator=_gen(1))
    assert c.rate.shape == (64,) and 0.35 < c.rate.mean().item() < 0.65
    per_sample = c.replaced.float().mean(dim=(1, 2))
    assert (per_sample - c.rate).abs().max() < 0.07
    # a per-sample rate tensor; the extremes
    c = corrupt(tokens[:2], V, generator=_gen(), rate=torch.tensor([0.0, 1.0]))
    assert not c.replaced[0].any() and c.replaced[1].all()
    # same generator seed, same corruption
    assert torch.equal(corrupt(tokens, V, generator=_gen(5)).tokens, corrupt(tokens, V, generator=_gen(5)).tokens)


def test_latent_mask_and_semantics():
    f, grid = 8, (4, 4)
    mask = torch.zeros(1, 32, 32)
    mask[0, 9, 17] = 1.0  # one marked pixel ...
    expected = torch.zeros(1, 4, 4, dtype=torch.bool)
    expected[0, 1, 2] = True  # ... marks exactly its latent
    assert torch.equal(latent_mask(mask, f, grid), expected)
    # a patch that is fully known stays known, even next to a marked one
    mask = torch.zeros(1, 32, 32)
    mask[0, 8:16, 8:17] = 1.0  # latent (1, 1) fully marked, one column of latent (1, 2)
    out = latent_mask(mask, f, grid)
    assert out[0, 1, 1] and out[0, 1, 2] and int(out.sum()) == 2
    # soft masks: values at or under the threshold count as known
    assert not latent_mask(torch.full((1, 32, 32), 0.3), f, grid, threshold=0.5).any()
    assert latent_mask(torch.full((1, 32, 32), 0.3), f, grid).all()


def test_latent_mask_sizes_and_shapes():
    f, grid = 8, (4, 6)
    # ComfyUI's 64x64 all-zero mask for images without alpha: nothing to repaint
    out = latent_mask(torch.zeros(1, 64, 64), f, grid)
    assert out.shape == (1, 4, 6) and out.dtype == torch.bool and not out.any()
    assert latent_mask(torch.ones(1, 64, 64), f, grid).all()
    # (H W) without a batch
    mask = torch.zeros(32, 48)
    mask[31, 47] = 1
    out = latent_mask(mask, f, grid)
    assert out.shape == (1, 4, 6) and out[0, 3, 5] and int(out.sum()) == 1
    # a batch of masks
    masks = torch.zeros(3, 32, 48)
    masks[1, 0, 0] = 1
    assert latent_mask(masks, f, grid).sum(dim=(1, 2)).tolist() == [0, 1, 0]
    # a smaller mask is scaled up: mask pixel (3, 5) of 16x24 covers image pixels (6..7, 10..11)
    small = torch.zeros(1, 16, 24)
    small[0, 3, 5] = 1
    out = latent_mask(small, f, grid)
    assert out[0, 0, 1] and int(out.sum()) == 1
    with pytest.raises(InputError, match="mask must be shaped"):
        latent_mask(torch.zeros(1, 1, 32, 32), f, grid)


def test_a_mask_of_another_size_covers_the_padded_image_as_it_was():
    # a 1000 x 750 image padded to 1024 x 768 for f = 32, and its mask at twice the image's size
    # (a scaled image beside LoadImage's mask): the hole's column 985-991 is token column 30,
    # as it is for the mask at the image's own size, not column 31 of a mask stretched to the canvas
    f, grid, size = 32, (24, 32), (750, 1000)
    mask = torch.zeros(1, *size)
    mask[:, 300:340, 985:992] = 1
    own = latent_mask(mask, f, grid, pixel_size=size)
    twice = latent_mask(F.interpolate(mask[:, None], scale_factor=2, mode="nearest")[:, 0], f, grid, pixel_size=size)
    assert own[0, 9:11, 30].all() and int(own.sum()) == 2
    assert torch.equal(twice, own)
    # a mask of the padded canvas's own size is taken as it is
    canvas = torch.zeros(1, 768, 1024)
    canvas[:, 760:, 1020:] = 1
    assert latent_mask(canvas, f, grid, pixel_size=size)[0, 23, 31] and int(latent_mask(canvas, f, grid).sum()) == 1


def test_feathering_keeps_wide_masks_as_they_were_and_gives_thin_strokes_their_middle():
    from sundae_core.images import feathered
    wide = torch.zeros(1, 96, 96)
    wide[:, 20:70, 10:96] = 1
    f = feathered(wide, 8)
    assert f[0, 20, 40] == pytest.approx(1 / 17) and f[0, 28, 40] == 1 and f[0, 45, 95] == 1  # ramp: 8 px inside
    assert torch.equal(f[wide == 0], torch.zeros(int((wide == 0).sum())))  # outside stays the original
    for width in (2, 4, 8, 12):  # strokes thinner than the ramp: the default feather 8 kept none of them
        stroke = torch.zeros(1, 64, 64)
        stroke[:, 10:50, 30:30 + width] = 1
        f = feathered(stroke, 8)
        assert f[0, 30, 30 + width // 2] == 1, width
        assert f[0, 30, 29] == 0 and f[0, 30, 30 + width] == 0


def test_hidden_pixels_take_the_colour_around_them_and_nothing_of_what_they_held():
    from sundae_core.images import hide_masked
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    mask = torch.zeros(2, 64, 64)
    mask[:, 20:36, 8:40] = 1
    hidden = hide_masked(pixels, mask, ring=8)
    assert torch.equal(hidden[:, :, mask[0] == 0], pixels[:, :, mask[0] == 0])  # the rest as it was
    other = pixels.clone()
    other[:, :, 20:36, 8:40] = torch.rand(2, 3, 16, 32, generator=g)  # another object under the mask
    assert torch.equal(hide_masked(other, mask, ring=8), hidden)  # nothing of it comes through
    # a box hole: the mean colour of the pixels within 8 px of it (the evaluations' no-model baseline)
    ring = torch.zeros(64, 64, dtype=torch.bool)
    ring[12:44, 0:48] = True
    ring[20:36, 8:40] = False
    assert torch.allclose(hidden[:, :, 20:36, 8:40], pixels[:, :, ring].mean(-1)[:, :, None, None], atol=1e-6)
    assert hide_masked(pixels, torch.ones(2, 64, 64), ring=8).eq(0).all()  # nothing known: mid grey


@pytest.mark.parametrize("size", [(64, 64), (50, 70)])
def test_the_smooth_fill_runs_on_from_the_colours_around_the_hole_and_hides_it(size):
    from sundae_core.images import hide_masked
    h, w = size
    pixels = torch.zeros(1, 3, h, w)
    pixels[:, 0, :, : w // 2] = 1  # red on the left, green on the right (in [-1, 1])
    pixels[:, 1, :, w // 2:] = 1
    mask = torch.zeros(1, h, w)
    mask[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
    smooth = hide_masked(pixels, mask, ring=8, fill="smooth")
    assert torch.equal(smooth[:, :, mask[0] == 0], pixels[:, :, mask[0] == 0])
    row = smooth[0, :, h // 2, w // 4: 3 * w // 4]  # across the hole: red fading into green
    assert row[0, 0] > 0.6 and row[0, -1] < 0.4 and row[1, 0] < 0.4 and row[1, -1] > 0.6
    assert (row[0].diff() <= 1e-6).all() and (row[1].diff() >= -1e-6).all()
    other = pixels.clone()
    other[:, :, mask[0] > 0] = 5.0  # another object under the mask
    assert torch.equal(hide_masked(other, mask, ring=8, fill="smooth"), smooth)
    assert hide_masked(pixels, torch.ones(1, h, w), ring=8, fill="smooth").eq(0).all()  # nothing known
    # a hole at the border of a wide image takes the image's colour, not grey (the pyramid reached
    # one row before one column), and nothing under the hole, not even inf or NaN, comes through
    flat = torch.full((1, 3, h, w), 0.8)
    edge = torch.zeros(1, h, w)
    edge[:, :, 3 * w // 4:] = 1
    flat[:, :, 0, -1], flat[:, :, 1, -1] = float("inf"), float("nan")
    for fill in ("smooth", "mean"):
        assert torch.allclose(hide_masked(flat, edge, ring=8, fill=fill), torch.full_like(flat, 0.8), atol=1e-5)
    with pytest.raises(InputError, match="mean, smooth"):
        hide_masked(pixels, mask, ring=8, fill="blur")


@pytest.mark.parametrize("size", [(64, 96), (50, 70), (100, 100)])
def test_a_larger_mask_never_loses_a_marked_pixel(size):
    """Downscaling a mask must keep the AND semantics: any marked pixel marks its latent."""
    f, grid = 8, (4, 6)  # the image is 32 x 48
    H, W = size
    for y, x in [(0, 0), (H - 1, W - 1), (H // 2, W // 3), (1, 2), (H - 2, 1)]:
        mask = torch.zeros(1, H, W)
        mask[0, y, x] = 1
        out = latent_mask(mask, f, grid)
        # the latent holding the pixel's position in image coordinates must be repainted
        iy, ix = int(y * 32 / H), int(x * 48 / W)
        assert out[0, iy // f, ix // f], (size, y, x)
        assert int(out.sum()) <= 4  # and the mark stays local
