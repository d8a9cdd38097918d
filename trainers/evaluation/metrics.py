"""Sample-quality metrics as pure functions over feature arrays (rows = images), in float64.

- FID (Heusel et al. 2017): ||mu_r - mu_f||^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2)). The trace of
  the matrix square root is taken without scipy's `sqrtm` (whose iteration returns complex parts
  and loses accuracy on the singular covariances of small N): S_r S_f is similar to the
  symmetric PSD matrix A = S_r^(1/2) S_f S_r^(1/2), so tr (S_r S_f)^(1/2) = sum sqrt(eig(A)),
  using only symmetric eigendecompositions with round-off negatives clipped to zero.
- KID (Binkowski et al. 2018): the unbiased estimate of MMD^2 with the polynomial kernel
  k(x, y) = (x.y / d + 1)^3, averaged over random subsets; unlike FID it has no bias at small N.
- Precision / recall (Kynkaenniemi et al. 2019) and density / coverage (Naeem et al. 2020): each
  sample's k-NN ball (radius = distance to its k-th nearest neighbour in its own set, k = 5) stands
  for the manifold near it. Precision: share of fakes inside some real ball; recall: share of reals
  inside some fake ball; density: mean number of real balls holding a fake, over k; coverage: share
  of real balls holding at least one fake.

Distances are computed in row chunks so 10k x 10k comparisons never materialise at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from sundae_core.errors import InputError

_CHUNK = 1024  # rows per distance block: 1024 x 10k float64 = 80 MB
_KID_WHOLE = 4096  # sets up to this size get their kernel matrices computed once (<= 128 MB each)


@dataclass(frozen=True)
class FeatureStats:
    mean: np.ndarray  # (d,)
    cov: np.ndarray  # (d d), unbiased (divides by n - 1)
    n: int


@dataclass(frozen=True)
class Metrics:
    n_real: int
    n_fake: int
    fid: float
    kid: float  # mean over subsets
    kid_std: float  # spread over subsets (not the error of the mean)
    kid_subset_size: int
    precision: float
    recall: float
    density: float
    coverage: float
    k: int

    def to_dict(self) -> dict:
        return asdict(self)


def _features(x, name: str, min_rows: int = 2) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"{name} features must be a 2D array (n d), got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise InputError(f"{name} features need at least {min_rows} rows, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise InputError(f"{name} features contain NaN or infinity")
    return x


def _same_width(real: np.ndarray, fake: np.ndarray) -> None:
    if real.shape[1] != fake.shape[1]:
        raise InputError(f"real and fake features differ in width: {real.shape[1]} vs {fake.shape[1]} "
                         "(extracted by different networks?)")


def feature_stats(features) -> FeatureStats:
    """Mean and unbiased covariance of (n d) features, float64."""
    x = _features(features, "stats")
    mean = x.mean(axis=0)
    centred = x - mean
    return FeatureStats(mean, centred.T @ centred / (x.shape[0] - 1), x.shape[0])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((matrix + matrix.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
    """tr (a b)^(1/2) for symmetric PSD a, b, via the eigenvalues of a^(1/2) b a^(1/2)."""
    ra = _psd_sqrt(a)
    inner = ra @ b @ ra
    w = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """Frechet distance between the Gaussians N(a.mean, a.cov) and N(b.mean, b.cov)."""
    if a.mean.shape != b.mean.shape:
        raise InputError(f"statistics differ in width: {a.mean.shape[0]} vs {b.mean.shape[0]}")
    diff = a.mean - b.mean
    value = diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * trace_sqrt_product(a.cov, b.cov)
    # Equal statistics give 0 up to round-off, which may land a hair below zero.
    return float(max(value, 0.0))


def fid(real, fake) -> float:
    return frechet_distance(feature_stats(real), feature_stats(fake))


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1) ** 3


def kid(real, fake, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float, int]:
    """Kernel Inception Distance: (mean, std over subsets, subset size actually used)."""
    real, fake = _features(real, "real"), _features(fake, "fake")
    _same_width(real, fake)
    m = min(subset_size, real.shape[0], fake.shape[0])
    rng = np.random.default_rng(seed)
    # Up to a few thousand samples, the three kernel matrices are computed once and every subset
    # indexes into them (100 subsets of 1000 would otherwise redo 300 large float64 matmuls).
    whole = max(real.shape[0], fake.shape[0]) <= _KID_WHOLE
    if whole:
        k_rr, k_ff, k_rf = _poly_kernel(real, real), _poly_kernel(fake, fake), _poly_kernel(real, fake)
    values = np.empty(subsets)
    for s in range(subsets):
        i = rng.choice(real.shape[0], m, replace=False)
        j = rng.choice(fake.shape[0], m, replace=False)
        if whole:
            kxx, kyy, kxy = k_rr[np.ix_(i, i)], k_ff[np.ix_(j, j)], k_rf[np.ix_(i, j)]
        else:
            kxx, kyy, kxy = _poly_kernel(real[i], real[i]), _poly_kernel(fake[j], fake[j]), _poly_kernel(real[i], fake[j])
        # Unbiased: the diagonals k(x_i, x_i) are left out of the within-set means.
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values[s] = within - 2 * kxy.mean()
    return float(values.mean()), float(values.std()), m


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", x, x)


def _sq_dists(a: np.ndarray, b: np.ndarray, b_norms: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (na nb), clipped at zero against cancellation."""
    d = _sq_norms(a)[:, None] + b_norms[None, :] - 2 * (a @ b.T)
    return np.clip(d, 0, None, out=d)


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each row to its k-th nearest other row (the row itself is index 0)."""
    if x.shape[0] <= k:
        raise InputError(f"k-NN metrics with k={k} need more than {k} samples per set, got {x.shape[0]}")
    norms = _sq_norms(x)
    out = np.empty(x.shape[0])
    for start in range(0, x.shape[0], _CHUNK):
        block = _sq_dists(x[start:start + _CHUNK], x, norms)
        out[start:start + _CHUNK] = np.partition(block, k, axis=1)[:, k]
    return out


def manifold_metrics(real, fake, k: int = 5) -> dict[str, float]:
    """precision, recall, density, coverage with k-NN balls, in one pass over fake chunks."""
    real, fake = _features(real, "real", k + 1), _features(fake, "fake", k + 1)
    _same_width(real, fake)
    r_real, r_fake = knn_radii(real, k), knn_radii(fake, k)
    real_norms = _sq_norms(real)
    inside_any_real = 0  # fakes inside at least one real ball
    balls_holding = 0  # sum over fakes of the number of real balls holding them
    real_covered = np.zeros(real.shape[0], dtype=bool)  # real ball holds some fake
    real_recalled = np.zeros(real.shape[0], dtype=bool)  # real inside some fake ball
    for start in range(0, fake.shape[0], _CHUNK):
        dist = _sq_dists(fake[start:start + _CHUNK], real, real_norms)  # (chunk n_real)
        in_real_ball = dist <= r_real[None, :]
        inside_any_real += int(in_real_ball.any(axis=1).sum())
        balls_holding += int(in_real_ball.sum())
        real_covered |= in_real_ball.any(axis=0)
        real_recalled |= (dist <= r_fake[start:start + _CHUNK, None]).any(axis=0)
    n_fake = fake.shape[0]
    return {
        "precision": inside_any_real / n_fake,
        "recall": float(real_recalled.mean()),
        "density": balls_holding / (k * n_fake),
        "coverage": float(real_covered.mean()),
    }


def all_metrics(real, fake, *, k: int = 5, kid_subsets: int = 100, kid_subset_size: int = 1000,
                seed: int = 0, real_stats: FeatureStats | None = None) -> Metrics:
    """Every metric of (n_real d) reference features against (n_fake d) sample features."""
    real, fake = _features(real, "real"), _features(fake, "fake")
    _same_width(real, fake)
    fid_value = frechet_distance(real_stats or feature_stats(real), feature_stats(fake))
    kid_mean, kid_std, m = kid(real, fake, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    manifold = manifold_metrics(real, fake, k)
    return Metrics(n_real=real.shape[0], n_fake=fake.shape[0], fid=fid_value, kid=kid_mean, kid_std=kid_std,
                   kid_subset_size=m, k=k, **manifold)
