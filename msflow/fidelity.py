"""How close generated images are to real ones, in a feature space: Fréchet distance and k-NN precision/recall.

Features come from an in-domain classifier trained in this pipeline (the ResNet-18 of
:mod:`msflow.baselines`, its 512-d penultimate layer), since no Inception weights can be downloaded here.
The same measures between the real training and test splits are the floor that generated samples are
read against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, D)`` and ``(M, D)``:
    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # nearly singular product: regularise as is customary
        eps = 1e-6 * np.eye(len(s_a))
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2 * np.real(covmean)))


@dataclass(frozen=True)
class PrecisionRecall:
    """k-NN manifold precision (fake samples inside the real manifold) and recall (real samples inside the fake one)."""

    precision: float
    recall: float


def _kth_radius(x: np.ndarray, k: int) -> np.ndarray:
    d = np.sqrt(np.maximum(((x[:, None] - x[None]) ** 2).sum(-1), 0))
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def _covered(points: np.ndarray, centers: np.ndarray, radii: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.maximum(((points[:, None] - centers[None]) ** 2).sum(-1), 0))
    return (d <= radii[None]).any(1)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> PrecisionRecall:
    """Kynkäänniemi et al. (2019): each set's manifold is the union of balls reaching each point's k-th neighbour."""
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    return PrecisionRecall(
        precision=float(_covered(fake, real, _kth_radius(real, k)).mean()),
        recall=float(_covered(real, fake, _kth_radius(fake, k)).mean()),
    )
