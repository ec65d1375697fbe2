"""How close generated images are to real ones, in a feature space: Fréchet distance and k-NN precision/recall.

Features come from any feature network: the study uses an in-domain classifier trained in its pipeline (a ResNet-18's
512-d penultimate layer), since no Inception weights could be downloaded where it ran; :func:`inception_features`
gives the standard space where torchvision and its weights are at hand.
The same measures for real training images are the floor that generated samples are read against.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import linalg


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, D)`` and ``(M, D)``:
    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``.

    ``eps * I`` is added to both covariances so that the square root exists when a set has fewer samples
    than dimensions (its covariance is then singular); use several times ``D`` samples for a stable value.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    reg = eps * np.eye(a.shape[1])
    s_a, s_b = np.cov(a, rowvar=False) + reg, np.cov(b, rowvar=False) + reg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s_a @ s_b)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2 * np.real(covmean)))


@dataclass(frozen=True)
class PrecisionRecall:
    """k-NN manifold precision (fake samples inside the real manifold) and recall (real samples inside the fake one)."""

    precision: float
    recall: float


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(len(a), len(b))`` by the Gram identity (no ``(N, M, D)`` intermediate)."""
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0)


def _kth_radius(x: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Squared distance of each point to its k-th nearest neighbour (itself excluded), ``chunk`` rows at a time."""
    return np.concatenate([np.partition(_sq_distances(x[i : i + chunk], x), k, axis=1)[:, k]  # column 0: the point itself
                           for i in range(0, len(x), chunk)])


def _covered(points: np.ndarray, centers: np.ndarray, sq_radii: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Whether each point lies in at least one ball (centre, squared radius)."""
    return np.concatenate([(_sq_distances(points[i : i + chunk], centers) <= sq_radii[None]).any(1)
                           for i in range(0, len(points), chunk)])


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> PrecisionRecall:
    """Kynkäänniemi et al. (2019): each set's manifold is the union of balls reaching each point's k-th neighbour."""
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    return PrecisionRecall(
        precision=float(_covered(fake, real, _kth_radius(real, k)).mean()),
        recall=float(_covered(real, fake, _kth_radius(fake, k)).mean()),
    )


class FeatureNetworkUnavailable(RuntimeError):
    """The optional Inception network cannot be loaded here."""


def inception_features(images, batch_size: int = 64):
    """Inception-v3 pool features ``(N, 2048)`` of images in [-1, 1], for the customary FID.

    Optional: it needs torchvision and the ImageNet weights, which torchvision downloads on first use.
    Raises:
        FeatureNetworkUnavailable: with what to do, when either is missing.
    """
    try:
        import torchvision
    except ImportError as err:
        raise FeatureNetworkUnavailable(
            "the Inception FID needs torchvision (pip install torchvision matching your torch) and internet access for "
            "its ImageNet weights; the in-domain Fréchet distance of this study needs neither"
        ) from err
    import torch
    import torch.nn.functional as F

    try:
        net = torchvision.models.inception_v3(weights=torchvision.models.Inception_V3_Weights.IMAGENET1K_V1)
    except Exception as err:  # a download failure surfaces as URLError, OSError or RuntimeError depending on versions
        raise FeatureNetworkUnavailable(f"the Inception-v3 weights could not be loaded ({err}); they download on first use, which needs internet") from err
    net.fc = torch.nn.Identity()
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].float()
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            out.append(net(F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)))
    return torch.cat(out).numpy()
