"""The ResNet-18 baselines: they train, select and predict; their logits are kept as results files; their folders are
named by recipe."""

import numpy as np
import pytest
import torch

from msflow.data import load_split, write_synthetic
from msflow.model import ConfigMismatchError
from msflow_study import baselines


def test_baseline_logits_are_kept_and_a_changed_recipe_is_refused(tmp_path, small_root, monkeypatch, forbid):
    cfg = baselines.BaselineConfig(dataset="pneumoniamnist", epochs=1, batch_size=16)
    out = baselines.train_baseline(cfg, tmp_path / "b", small_root, "cpu", progress=False)
    test = load_split("pneumoniamnist", "test", 28, small_root)
    z = baselines.cached_logits(out, test)
    mc = baselines.cached_logits(out, test, mc_samples=3)
    assert z.shape == (24, 2) and mc.shape == (3, 24, 2)
    assert not np.allclose(mc[0], mc[1])  # dropout is active in MC samples
    (out / "baseline.pt").unlink()  # as brought back from a GPU session: logits, no weights
    forbid(baselines, "load_baseline")
    assert np.array_equal(baselines.cached_logits(out, test), z)
    assert baselines.train_baseline(cfg, out, small_root, "cpu") == out  # reused
    val = load_split("pneumoniamnist", "val", 28, small_root)
    with pytest.raises(FileNotFoundError, match="holds no weights"):
        baselines.cached_logits(out, val)
    with pytest.raises(ConfigMismatchError, match="epochs"):
        baselines.train_baseline(baselines.BaselineConfig(dataset="pneumoniamnist", epochs=3, batch_size=16), out, small_root)


def test_baseline_folders_are_named_by_recipe(tmp_path):
    # members of different lengths (a CPU run's few epochs, a GPU session's 20) do not share a folder
    a, b = (baselines.member_dir(tmp_path, "bloodmnist", e, 0) for e in (2, 20))
    assert a.name == "bloodmnist-resnet18-2e-seed0" and b.name == "bloodmnist-resnet18-20e-seed0"
    assert baselines.member_dir(tmp_path, "bloodmnist", 20, 3).name == "bloodmnist-resnet18-20e-seed3"
    assert a.parent == tmp_path


def test_small_cnn_interface():
    cfg = baselines.BaselineConfig(dataset="bloodmnist", arch="cnn")
    net = cfg.build().eval()
    x = torch.randn(4, 3, 28, 28)
    assert net(x).shape == (4, 8) and net.features(x).shape == (4, 128)
    assert sum(p.numel() for p in net.parameters()) < 0.5e6
    with pytest.raises(ValueError, match="unknown classifier architecture"):
        baselines.BaselineConfig(dataset="bloodmnist", arch="vgg").build()


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


def test_classifier_trains_on_given_tensors(tmp_path):
    write_synthetic(tmp_path / "d", "pneumoniamnist", 28, {"train": 8, "val": 16, "test": 8})
    val = load_split("pneumoniamnist", "val", 28, tmp_path / "d")
    fake = torch.rand(32, 1, 28, 28) * 2 - 1  # "generated" images in [-1, 1]
    out = baselines.train_on(baselines.BaselineConfig(dataset="pneumoniamnist", epochs=1, batch_size=16), fake,
                             torch.arange(32) % 2, val, tmp_path / "cas", progress=False)
    model, _ = baselines.load_baseline(out)
    assert baselines.predict_images(model, val.images).shape == (16,)
    assert baselines.features(model, fake).shape == (32, 512)


def test_a_baseline_without_its_weights_says_how_to_get_them(tmp_path):
    (tmp_path / "baseline.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"holds no weights \(baseline.pt is not kept in git.*restore-baseline"):
        baselines.load_baseline(tmp_path)


def test_a_baseline_without_its_weights_is_restored_only_if_it_is_the_recorded_network(tmp_path, small_root):
    import json

    cfg = baselines.BaselineConfig(dataset="pneumoniamnist", epochs=1, batch_size=16)
    out = baselines.train_baseline(cfg, tmp_path / "b", small_root, "cpu", progress=False)
    test = load_split("pneumoniamnist", "test", 28, small_root)
    recorded = baselines.cached_logits(out, test)
    weights = torch.load(out / "baseline.pt", weights_only=True)["weights"]
    (out / "baseline.pt").unlink()  # as committed: records and logits, no weights
    record = (out / "baseline.json").read_text()
    assert baselines.restore_baseline(out, small_root, progress=False) == out
    assert (out / "baseline.json").read_text() == record  # the record is kept as it was
    again = torch.load(out / "baseline.pt", weights_only=True)["weights"]
    assert all(torch.equal(again[k], weights[k]) for k in weights)  # seeded training gives the same network
    assert np.array_equal(baselines.logits(baselines.load_baseline(out)[0], test), recorded)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no scratch folder left behind
    # recorded logits that the network does not give: refused, and nothing is kept
    (out / "baseline.pt").unlink()
    with np.load(out / "logits_test.npz") as z:
        np.savez(out / "logits_test.npz", **{k: z[k] for k in z.files} | {"logits": z["logits"] + 1})
    with pytest.raises(baselines.RestoreMismatchError, match="logits_test.npz: logits differ by up to 1"):
        baselines.restore_baseline(out, small_root, progress=False)
    assert not (out / "baseline.pt").exists()
    history = json.loads(record)
    history["history"][0]["val_acc"] += 0.5
    (out / "baseline.json").write_text(json.dumps(history))
    with pytest.raises(baselines.RestoreMismatchError, match="validation accuracy by epoch"):
        baselines.restore_baseline(out, small_root, progress=False)
