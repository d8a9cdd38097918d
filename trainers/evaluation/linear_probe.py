"""A linear probe: L2-regularised multinomial logistic regression on standardised features.

Fitted full-batch with L-BFGS (plain torch, float64), so the same features and labels always give
the same classifier. Used to ask whether class-conditional samples look like their class to a
classifier trained on real images (Inception pool features of the training split).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sundae_core.errors import InputError


@dataclass
class LinearProbe:
    mean: torch.Tensor  # (d,) training feature mean
    std: torch.Tensor  # (d,) training feature std (floored)
    weight: torch.Tensor  # (d k)
    bias: torch.Tensor  # (k,)
    train_accuracy: float

    def logits(self, features) -> torch.Tensor:
        """features (n d) -> logits (n k)."""
        x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
        return ((x - self.mean) / self.std) @ self.weight + self.bias

    def predict(self, features) -> np.ndarray:
        """features (n d) -> class indices (n,) int64."""
        return self.logits(features).argmax(1).numpy()


def fit_linear_probe(features, labels, num_classes: int, *, l2: float = 1e-2, max_iter: int = 500) -> LinearProbe:
    """Minimise mean cross-entropy + l2 / 2 * |W|^2 over standardised features (n d) with labels (n,)."""
    # autograd on, even when the caller runs its models under inference_mode
    with torch.inference_mode(False), torch.enable_grad():
        return _fit(features, labels, num_classes, l2, max_iter)


def _fit(features, labels, num_classes: int, l2: float, max_iter: int) -> LinearProbe:
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] < 2:
        raise InputError(f"a linear probe needs features (n d) and labels (n,) with n >= 2, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise InputError(f"labels must lie in [0, {num_classes}), got {int(y.min())}..{int(y.max())}")
    mean = x.mean(0)
    std = x.std(0).clamp_min(1e-6)  # constant features (dead ReLUs) would divide by zero
    z = (x - mean) / std
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ weight + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    probe = LinearProbe(mean, std, weight.detach(), bias.detach(), 0.0)
    probe.train_accuracy = float((probe.predict(x.numpy()) == y.numpy()).mean())
    return probe
