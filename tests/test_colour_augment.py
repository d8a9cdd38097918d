"""Colour augmentation of VQ-GAN training crops: every hue seen, greys kept, same seed same batch."""

import math

import torch

from trainers.data.colour_augment import CORNERS, hue_rotation, recolour, synthetic_canvases


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_hue_rotation_keeps_greys_and_a_third_of_a_turn_permutes_the_channels():
    grey = torch.tensor([0.3, 0.3, 0.3])
    matrices = hue_rotation(torch.rand(5, generator=_gen()) * 2 * math.pi)
    assert torch.allclose(matrices @ grey, grey.expand(5, 3), atol=1e-6)
    third = hue_rotation(torch.tensor([2 * math.pi / 3]))[0]
    assert torch.allclose(third @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_recolour_changes_hues_only_where_chosen_and_keeps_the_white_background():
    red = torch.tensor([1.0, -1.0, -1.0])[None, :, None, None].expand(64, 3, 4, 4).clone()
    red[:, :, 0, 0] = 1.0  # a white pixel in each image
    out = recolour(red, 1.0, _gen())
    assert out.min() >= -1 and out.max() <= 1
    assert torch.allclose(out[:, :, 0, 0], torch.ones(64, 3), atol=1e-5)  # white stays white
    dominant = out[:, :, 1, 1].argmax(1)
    assert set(dominant.tolist()) == {0, 1, 2}  # red became green and blue too
    assert torch.equal(recolour(red, 0.0, _gen()), red)
    assert torch.equal(recolour(red, 0.5, _gen(3)), recolour(red, 0.5, _gen(3)))


def test_synthetic_canvases_are_flat_or_two_colour_and_often_pure_corners_or_greys():
    canvases = synthetic_canvases(200, 32, _gen())
    assert canvases.shape == (200, 3, 32, 32) and canvases.min() >= -1 and canvases.max() <= 1
    colours_per_canvas = [len(torch.unique(c.flatten(1), dim=1).T) for c in canvases]
    assert set(colours_per_canvas) <= {1, 2} and 1 in colours_per_canvas and 2 in colours_per_canvas
    corners = (CORNERS * 2 - 1)
    pixels = canvases[:, :, 16, 16]
    is_corner = (pixels[:, None, :] == corners[None]).all(-1).any(-1)
    assert 0.3 < is_corner.float().mean() < 0.8
    is_grey = (pixels[:, :1] == pixels).all(-1) & ~is_corner  # greys other than black and white
    assert 0.1 < is_grey.float().mean() < 0.4
    assert torch.equal(synthetic_canvases(4, 16, _gen(5)), synthetic_canvases(4, 16, _gen(5)))
