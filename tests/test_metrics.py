"""Metrics against closed forms and known configurations; presets against the FLOP counter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sundae_core.errors import InputError
from sundae_core.hourglass import HourglassTransformer, flops, param_count
from sundae_core.presets import MEGAPIXEL_VQGAN, PRESET_GRIDS, PRESETS
from trainers.evaluation.metrics import (FeatureStats, all_metrics, feature_stats, fid, frechet_distance, kid,
                              manifold_metrics, trace_sqrt_product)


def gaussian(n: int, d: int, shift: float = 0.0, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, scale, size=(n, d))


def random_spd(d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# --- FID ---------------------------------------------------------------------------------------

def test_fid_of_identical_sets_is_zero():
    x = gaussian(500, 32)
    assert fid(x, x) == pytest.approx(0.0, abs=1e-8)
    # rank-deficient covariance (n < d), as with a few hundred Inception features of width 2048
    y = gaussian(20, 64, seed=1)
    assert fid(y, y) == pytest.approx(0.0, abs=1e-7)


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    d = 16
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    got = frechet_distance(FeatureStats(m1, np.diag(v1), 100), FeatureStats(m2, np.diag(v2), 100))
    assert got == pytest.approx(expected, rel=1e-10)


def test_trace_sqrt_product_matches_a_direct_matrix_square_root():
    a, b = random_spd(24, 1), random_spd(24, 2)
    w, v = np.linalg.eig(a @ b)  # a b has positive real eigenvalues (similar to an SPD matrix)
    assert trace_sqrt_product(a, b) == pytest.approx(np.sqrt(w.real).sum(), rel=1e-9)
    assert trace_sqrt_product(a, a) == pytest.approx(np.trace(a), rel=1e-10)


def test_fid_of_shifted_gaussian_samples_approaches_the_closed_form():
    d, n, shift = 8, 20000, 0.5
    real, fake = gaussian(n, d), gaussian(n, d, shift=shift, scale=2.0, seed=1)
    # N(0, I) vs N(0.5, 4 I): ||dm||^2 + d (1 - 2)^2
    assert fid(real, fake) == pytest.approx(d * shift**2 + d, rel=0.03)


def test_feature_stats_is_the_unbiased_covariance():
    x = gaussian(50, 6)
    stats = feature_stats(x)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-12)
    assert stats.n == 50


# --- KID ---------------------------------------------------------------------------------------

def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    real, same, other = gaussian(600, 16), gaussian(600, 16, seed=1), gaussian(600, 16, shift=0.5, seed=2)
    k_same, std_same, m = kid(real, same, subsets=20, subset_size=300)
    k_other, _, _ = kid(real, other, subsets=20, subset_size=300)
    assert m == 300
    assert abs(k_same) < 3 * std_same + 1e-3  # unbiased: centred on zero, may be negative
    assert k_other > 10 * max(abs(k_same), std_same)


def test_kid_subset_size_is_capped_by_the_smaller_set():
    _, _, m = kid(gaussian(30, 4), gaussian(12, 4, seed=1), subsets=3, subset_size=1000)
    assert m == 12


# --- precision / recall / density / coverage ---------------------------------------------------

def test_manifold_metrics_of_identical_sets():
    x = gaussian(200, 8)
    m = manifold_metrics(x, x, k=5)
    assert m["precision"] == 1.0 and m["recall"] == 1.0 and m["coverage"] == 1.0
    # every point lies in its own ball and in the balls of exactly the k neighbours that reach it
    # -> sum over balls = n (k + 1), density = (k + 1) / k
    assert m["density"] == pytest.approx(6 / 5)


def test_manifold_metrics_of_one_distribution_are_near_their_expectations():
    m = manifold_metrics(gaussian(1000, 16), gaussian(1000, 16, seed=1), k=5)
    assert 0.85 < m["density"] < 1.15  # E[density] = 1 for identical distributions
    assert m["coverage"] > 0.9  # E[coverage] = 1 - 2^-k ~ 0.97
    assert m["precision"] > 0.6 and m["recall"] > 0.6


def test_manifold_metrics_of_disjoint_sets_are_zero():
    m = manifold_metrics(gaussian(100, 8), gaussian(100, 8, shift=50.0, seed=1), k=5)
    assert m == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_dropping_a_mode_lowers_recall_and_coverage_not_precision():
    d = 8
    a, b = gaussian(300, d), gaussian(300, d, shift=30.0, seed=1)
    real = np.concatenate([a, b])
    fake = gaussian(300, d, seed=2)  # only mode a
    m = manifold_metrics(real, fake, k=5)
    assert m["precision"] > 0.8
    assert 0.35 < m["recall"] < 0.55
    assert 0.35 < m["coverage"] < 0.55


def test_all_metrics_reports_both_sample_counts():
    out = all_metrics(gaussian(40, 4), gaussian(30, 4, seed=1), kid_subsets=5)
    assert (out.n_real, out.n_fake, out.k, out.kid_subset_size) == (40, 30, 5, 30)
    assert set(out.to_dict()) >= {"fid", "kid", "kid_std", "precision", "recall", "density", "coverage"}


@pytest.mark.parametrize("bad, message", [
    (np.zeros((5,)), "2D"),
    (np.full((5, 4), np.nan), "NaN"),
    (np.zeros((1, 4)), "at least"),
])
def test_bad_features_are_clear_errors(bad, message):
    with pytest.raises(InputError, match=message):
        fid(bad, np.zeros((5, 4)))


def test_feature_width_mismatch_and_too_few_for_knn_are_clear_errors():
    with pytest.raises(InputError, match="width"):
        all_metrics(gaussian(10, 4), gaussian(10, 5))
    with pytest.raises(InputError, match="at least 6"):
        manifold_metrics(gaussian(5, 4), gaussian(10, 4))


# --- presets (issue 3, test 5) -----------------------------------------------------------------

def test_presets_are_the_papers_table_3():
    table = {  # name: (grid, v, depth, classes)
        "ffhq256": ((16, 16), 1024, (3, 16, 3), 0), "ffhq1024": ((32, 32), 8192, (2, 12, 2), 0),
        "celeba": ((16, 16), 1024, (2, 12, 2), 0), "mnist": ((28, 28), 256, (2, 8, 2), 10),
        "fashionmnist": ((28, 28), 256, (2, 8, 2), 10), "imagenet": ((16, 16), 1024, (3, 14, 3), 1000),
    }
    assert set(PRESETS) == set(table) == set(PRESET_GRIDS)
    for name, (grid, v, depth, classes) in table.items():
        c = PRESETS[name]
        assert (PRESET_GRIDS[name], c.vocab_size, c.depth, c.num_classes) == (grid, v, depth, classes)
        assert (c.dim, c.shorten) == (1024, 4)
    assert MEGAPIXEL_VQGAN.factor == 32 and MEGAPIXEL_VQGAN.resolution // MEGAPIXEL_VQGAN.factor == 32
    assert [MEGAPIXEL_VQGAN.ch * m for m in MEGAPIXEL_VQGAN.ch_mult] == [128, 128, 256, 256, 512, 512]
    assert (MEGAPIXEL_VQGAN.n_embed, MEGAPIXEL_VQGAN.embed_dim, MEGAPIXEL_VQGAN.num_res_blocks) == (8192, 256, 1)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_builds_and_its_counts_agree_with_the_flop_formula(name):
    """Built on the meta device (no memory): torch's FLOP counter reproduces `flops()`, and the
    parameter count is what the FLOP formula implies (2 FLOPs per weight per token) plus the
    embeddings and the resampling layers."""
    c, (h, w) = PRESETS[name], PRESET_GRIDS[name]
    with torch.device("meta"):
        model = HourglassTransformer(c)
        model.check_inputs = lambda tokens, labels=None: None  # it reads token values, which meta tensors lack
        tokens = torch.zeros(1, h, w, dtype=torch.long)
        counter = FlopCounterMode(display=False)
        with counter:
            model(tokens)
    assert counter.get_total_flops() == pytest.approx(flops(c, 1, h, w), rel=0.01)

    d, levels = c.dim, c.depth_levels()
    layers = levels.total
    vanilla = dataclasses.replace(c, depth=layers)
    # one token: every Linear weight is used once; the attention term is 4 d per layer
    implied = (flops(vanilla, 1, 1, 1) - 4 * d * layers) // 2
    embeddings = c.vocab_size * d + (c.num_classes + 1) * d * bool(c.num_classes)
    resampling = len(levels.shortened) * 2 * (c.shorten + 4) * d * d  # Linear(kd, d) + attention, both ways
    assert param_count(model) == pytest.approx(implied + embeddings + resampling, rel=0.01)
