"""Seam matching (sundae_core/seams.py): the decoder's colour error measured around a mask is
taken out of the pasted pixels, the detail inside is kept, and nothing outside the mask moves."""

import torch

from nodes import NODE_CLASS_MAPPINGS
from sundae_core.images import composite
from sundae_core.seams import DEFAULT_BAND, match_seams, push_pull


def _scene(seed=0, size=64):
    """A smooth random image (b 3 h w) and a square mask in its middle."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(2, 3, 4, 4, generator=g)
    image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    mask = torch.zeros(2, size, size)
    mask[:, 20:44, 24:48] = 1
    return image, mask


def test_push_pull_keeps_measured_values_and_fills_a_constant_field_with_the_constant():
    values = torch.full((1, 3, 37, 50), 0.25)
    values[..., 10:20, 10:30] = 9.0  # not measured: must not leak into the fill
    weight = torch.ones(1, 1, 37, 50)
    weight[..., 10:20, 10:30] = 0
    out = push_pull(values, weight)
    assert torch.allclose(out, torch.full_like(out, 0.25), atol=1e-5)
    assert push_pull(torch.ones(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)).abs().max() == 0  # nothing known: no error


def test_a_colour_shift_of_the_decoder_is_taken_out_and_the_detail_kept():
    original, mask = _scene()
    detail = torch.zeros_like(original)
    detail[:, :, 28:36, 30:40] = 0.3  # something the generator drew inside the hole
    shift = torch.tensor([0.08, -0.05, 0.12])[None, :, None, None]  # the decoder's colour error
    generated = original + shift + detail
    fixed = match_seams(original, generated, mask, band=8)
    inside = mask[:, None].expand_as(original) > 0
    # without matching the hole is off by the shift; with it, only the drawn detail remains
    assert (generated - original - detail)[inside].abs().min() > 0.04
    assert torch.allclose((fixed - original - detail)[inside], torch.zeros(()), atol=2e-3)


def test_a_smooth_error_is_followed_not_averaged():
    """The error changes across the image (a gradient): the fill follows it from both sides."""
    original, mask = _scene(1)
    ramp = torch.linspace(-0.1, 0.1, 64)[None, None, None, :].expand(2, 3, 64, 64)
    fixed = match_seams(original, original + ramp, mask, band=8)
    inside = mask[:, None].expand_as(original) > 0
    before = ramp[inside].abs().mean()
    after = (fixed - original)[inside].abs().mean()
    assert after < before / 4


def test_no_band_an_empty_mask_or_a_full_mask_change_nothing():
    original, mask = _scene()
    generated = original + 0.1
    assert torch.equal(match_seams(original, generated, mask, band=0), generated)
    assert torch.equal(match_seams(original, generated, torch.zeros_like(mask), band=8), generated)
    assert torch.equal(match_seams(original, generated, torch.ones_like(mask), band=8), generated)


def test_composite_with_seam_matching_keeps_every_pixel_outside_the_mask_exactly():
    original, mask = _scene()
    as_comfy = lambda x: x.permute(0, 2, 3, 1).contiguous()
    generated = as_comfy((original + 0.1).clamp(0, 1))
    out = composite(as_comfy(original), generated, mask, feather=4, seam_band=16)
    outside = mask == 0
    assert torch.equal(out[outside], as_comfy(original)[outside])
    assert out.min() >= 0 and out.max() <= 1
    plain = composite(as_comfy(original), generated, mask, feather=4)
    inside = mask > 0
    assert (out - as_comfy(original))[inside].abs().mean() < (plain - as_comfy(original))[inside].abs().mean() / 4


def test_the_composite_node_matches_seams_by_default_and_old_calls_still_work():
    spec = NODE_CLASS_MAPPINGS["SundaeComposite"].INPUT_TYPES()["required"]["seam_band"]
    assert spec[1]["default"] == DEFAULT_BAND > 0
    original, mask = _scene()
    image = original.permute(0, 2, 3, 1).contiguous()
    node = NODE_CLASS_MAPPINGS["SundaeComposite"]()
    matched = node.composite(image, (image + 0.1).clamp(0, 1), mask, 4)[0]  # a caller without seam_band
    plain = node.composite(image, (image + 0.1).clamp(0, 1), mask, 4, 0)[0]
    inside = mask > 0
    assert (matched - image)[inside].abs().mean() < (plain - image)[inside].abs().mean() / 4


def test_a_wide_band_is_measured_on_coarse_cells_with_the_same_result_for_a_colour_shift():
    """band 32 measures on 4 x 4-pixel cells (seams.CELL_BAND): a mask that does not fall on the
    cells' grid still gets the shift taken out exactly, and pixels far from the mask are untouched."""
    g = torch.Generator().manual_seed(3)
    original = torch.nn.functional.interpolate(torch.rand(1, 3, 5, 5, generator=g), size=(150, 150), mode="bilinear")
    mask = torch.zeros(1, 150, 150)
    mask[:, 41:90, 53:99] = 1
    generated = original + torch.tensor([0.1, -0.1, 0.05])[None, :, None, None]
    fixed = match_seams(original, generated, mask, band=32)
    inside = mask[:, None].expand_as(original) > 0
    assert torch.allclose(fixed[inside], original[inside], atol=1e-5)
    assert torch.equal(fixed[..., :, 140:], generated[..., :, 140:])  # beyond the band: as generated
