import numpy as np
import pytest
import torch

from msflow import baselines, fidelity
from msflow.data import load_split, write_synthetic


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


def test_resnet18_shapes_features_and_mc_dropout():
    net = baselines.ResNet18(3, 8, dropout=0.5).eval()
    x = torch.randn(4, 3, 28, 28)
    assert net(x).shape == (4, 8) and net.features(x).shape == (4, 512)
    assert 10e6 < sum(p.numel() for p in net.parameters()) < 12e6  # a ResNet-18


def test_baseline_trains_selects_and_predicts(tmp_path):
    write_synthetic(tmp_path / "d", "bloodmnist", 28, {"train": 64, "val": 32, "test": 16})
    cfg = baselines.BaselineConfig(dataset="bloodmnist", epochs=2, batch_size=32, dropout=0.5)
    out = baselines.train_baseline(cfg, tmp_path / "r", str(tmp_path / "d"), progress=False)
    model, loaded = baselines.load_baseline(out)
    assert loaded == cfg
    test = load_split("bloodmnist", "test", 28, tmp_path / "d")
    z = baselines.logits(model, test)
    assert z.shape == (16, 8) and np.allclose(z, baselines.logits(model, test))  # deterministic without MC
    mc = baselines.logits(model, test, mc_samples=3)
    assert mc.shape == (3, 16, 8) and not np.allclose(mc[0], mc[1])  # dropout active
    assert baselines.features(model, test.images).shape == (16, 512)
    assert not model.training
    # MC dropout draws masks on the penultimate features: the whole network with dropout active, sample by sample
    x = baselines._as_input(test.images, 28)
    torch.manual_seed(7)
    model.dropout.train()
    with torch.no_grad():
        feats = model.features(x)
        by_hand = np.stack([model.fc(model.dropout(feats)).numpy() for _ in range(3)])
    model.eval()
    assert np.allclose(baselines.logits(model, test, mc_samples=3, seed=7), by_hand, atol=1e-5)
    many = baselines.logits(model, test, mc_samples=400)  # inverted dropout: the mean sample is the plain logit
    assert np.allclose(many.mean(0), z, atol=0.25 * np.abs(z).max() + 0.05)
    import json

    record = json.loads((out / "baseline.json").read_text())
    assert len(record["history"]) == 2 and record["dataset"]["synthetic"] and record["provenance"]["git_commit"]


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


def test_classifier_trains_on_given_tensors(tmp_path):
    write_synthetic(tmp_path / "d", "pneumoniamnist", 28, {"train": 8, "val": 16, "test": 8})
    val = load_split("pneumoniamnist", "val", 28, tmp_path / "d")
    fake = torch.rand(32, 1, 28, 28) * 2 - 1  # "generated" images in [-1, 1]
    out = baselines.train_on(baselines.BaselineConfig(dataset="pneumoniamnist", epochs=1, batch_size=16), fake,
                             torch.arange(32) % 2, val, tmp_path / "cas", progress=False)
    model, _ = baselines.load_baseline(out)
    assert baselines.predict_images(model, val.images).shape == (16,)
    assert baselines.features(model, fake).shape == (32, 512)
