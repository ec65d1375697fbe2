import numpy as np
import pytest
import torch

from msflow import fidelity


def test_frechet_distance_of_identical_and_shifted_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 4))
    assert fidelity.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    mu = np.array([1.0, -2.0, 0.5, 0.0])
    # equal covariances: the distance is |mu|^2 (up to sampling error)
    assert fidelity.frechet_distance(a, rng.normal(size=(4000, 4)) + mu) == pytest.approx(np.sum(mu**2), abs=0.1)
    # N(0, I) vs N(0, 4 I) in 4 dimensions: Tr(I + 4I - 2 * 2I) = 4
    assert fidelity.frechet_distance(a, 2 * rng.normal(size=(4000, 4))) == pytest.approx(4.0, abs=0.25)


def test_precision_recall_known_cases():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(300, 3))
    same = fidelity.precision_recall(real, real.copy(), k=3)
    assert (same.precision, same.recall) == (1.0, 1.0)
    far = fidelity.precision_recall(real, real + 100.0, k=3)
    assert (far.precision, far.recall) == (0.0, 0.0)
    # fakes collapsed onto one real point: precise but no recall
    collapsed = fidelity.precision_recall(real, np.repeat(real[:1], 50, axis=0), k=3)
    assert collapsed.precision == 1.0 and collapsed.recall < 0.05


def test_knn_radii_and_coverage_by_hand_and_in_chunks():
    x = np.array([[0.0], [1.0], [3.0]])
    assert fidelity._kth_radius(x, 1).tolist() == [1.0, 1.0, 4.0]  # squared distance to the nearest other point
    assert fidelity._covered(np.array([[0.9], [5.5]]), x, np.array([1.0, 1.0, 4.0])).tolist() == [True, False]
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(50, 5)), rng.normal(size=(40, 5))
    brute = ((a[:, None] - b[None]) ** 2).sum(-1)
    assert np.allclose(fidelity._sq_distances(a, b), brute)
    assert np.allclose(fidelity._kth_radius(a, 3, chunk=7), np.sort(((a[:, None] - a[None]) ** 2).sum(-1), 1)[:, 3])
    r = fidelity._kth_radius(b, 3)
    assert np.array_equal(fidelity._covered(a, b, r, chunk=7), (brute <= r[None]).any(1))


def test_inception_fid_fails_clearly_without_torchvision(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torchvision(name, *a, **k):
        if name == "torchvision":
            raise ImportError("No module named 'torchvision'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    with pytest.raises(fidelity.FeatureNetworkUnavailable, match="needs torchvision"):
        fidelity.inception_features(torch.zeros(2, 3, 28, 28))
