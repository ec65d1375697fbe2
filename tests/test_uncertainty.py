import dataclasses

import numpy as np
import pytest
import torch

from msflow import metrics, uncertainty
from msflow.data import write_synthetic, load_split
from msflow.config import make_config
from msflow.model import build


def _mp(distances, spread=None):
    """A readout from distances; ``spread`` is the spread of all the passes (earlier rows are zero)."""
    d = np.asarray(distances, dtype=float)
    rows = np.zeros(d.shape[:2])
    if spread is not None:
        rows[-1] = spread
    return uncertainty.MultiPass(d, rows, np.zeros(d.shape[1], int))


def test_scores_by_hand():
    # 3 passes, 2 images, 3 classes
    d = [[[0.1, 0.5, 0.9], [0.40, 0.45, 0.9]],
         [[0.2, 0.4, 0.9], [0.50, 0.30, 0.9]],
         [[0.3, 0.6, 0.9], [0.45, 0.40, 0.9]]]
    s = uncertainty.scores(_mp(d, [0.0, 0.2]))
    assert s["distance"].tolist() == pytest.approx([0.1, 0.40])
    assert s["margin"].tolist() == pytest.approx([0.1 - 0.5, 0.40 - 0.45])
    assert s["mean_distance"].tolist() == pytest.approx([0.2, (0.45 + 0.30 + 0.40) / 3])
    assert s["vote_disagreement"].tolist() == pytest.approx([0.0, 1 - 2 / 3])  # image 2 votes 0, 1, 1
    assert s["map_spread"].tolist() == [0.0, 0.2]
    assert uncertainty.predictions(_mp(d)).tolist() == [0, 1]
    assert list(s) == list(uncertainty.SCORES)


class _Readout(torch.nn.Module):
    """A field whose one-step backward readout is exactly the map ``target``: y_hat = xi_y - v_y = target."""

    def __init__(self, base, target):
        super().__init__()
        self.base, self.target = base, target
        self.image_channels, self.resolution = base.image_channels, base.resolution
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, z, t):
        c = self.image_channels
        return torch.cat([torch.zeros_like(z[:, :c]), z[:, c:] - self.target[: z.shape[0]]], dim=1)


def test_multi_pass_of_a_deterministic_readout(tmp_path):
    write_synthetic(tmp_path, "bloodmnist", 28, {"train": 8, "val": 8, "test": 10})
    split = load_split("bloodmnist", "test", 28, tmp_path)
    comps = build(make_config("bloodmnist", "smoke"))
    labels = torch.arange(10) % 8
    target = comps.code.encode(labels, 16, noise=False)
    comps = dataclasses.replace(comps, model=_Readout(comps.model, target))
    mp = uncertainty.multi_pass(comps, split, draws=4, batch_size=16)
    assert mp.distances.shape == (4, 10, 8)
    assert np.allclose(mp.spread, 0, atol=1e-6)  # every pass reads the same map
    assert uncertainty.predictions(mp).tolist() == labels.tolist()
    s = uncertainty.scores(mp)
    assert np.allclose(s["distance"], 0, atol=1e-6) and np.allclose(s["vote_disagreement"], 0)


class _Sequence(_Readout):
    """A readout whose k-th call reads the map ``targets[k]``, so the spread across calls is known."""

    def __init__(self, base, targets):
        super().__init__(base, targets[0])
        self.targets, self.calls = targets, 0

    def forward(self, z, t):
        self.target = self.targets[self.calls]
        self.calls += 1
        return super().forward(z, t)


def test_multi_pass_spread_of_the_first_k_passes(tmp_path):
    write_synthetic(tmp_path, "bloodmnist", 28, {"train": 8, "val": 8, "test": 3})
    split = load_split("bloodmnist", "test", 28, tmp_path)
    comps = build(make_config("bloodmnist", "smoke"))
    # pass k reads a constant map of value levels[k] for every image, so the spread of the first k + 1 passes
    # is the population std of levels[: k + 1]
    levels = [0.0, 0.5, -0.25, 1.0]
    targets = torch.stack([torch.full((3, 3, 16, 16), v) for v in levels])
    comps = dataclasses.replace(comps, model=_Sequence(comps.model, targets))
    mp = uncertainty.multi_pass(comps, split, draws=4, batch_size=16)
    expected = [np.std(levels[: k + 1]) for k in range(4)]
    assert mp.spread.shape == (4, 3)
    assert np.allclose(mp.spread, np.array(expected)[:, None], atol=1e-5)
    two = mp.first(2)
    assert two.draws == 2 and np.allclose(uncertainty.scores(two)["map_spread"], 0.25, atol=1e-5)
    assert np.allclose(uncertainty.scores(mp)["map_spread"], expected[-1], atol=1e-5)
    with pytest.raises(ValueError, match="first 5 passes"):
        mp.first(5)


def test_selective_accuracy_and_curve_area():
    correct = np.array([1, 0, 1, 1, 0, 1, 1, 1, 1, 1], bool)
    unc = np.array([0.1, 0.9, 0.2, 0.3, 0.8, 0.4, 0.5, 0.6, 0.05, 0.15])
    assert uncertainty.selective_accuracy(correct, unc, (0.1, 0.2)) == pytest.approx({0.1: 8 / 9, 0.2: 1.0})
    # a flat curve has the error rate as its area; a linear risk integrates exactly
    assert uncertainty.aurc_from_curve(np.array([0, 0.5, 0.9]), np.array([0.8, 0.8, 0.8])) == pytest.approx(0.2)
    frac = np.array([0.0, 0.25, 0.5])
    assert uncertainty.aurc_from_curve(frac, 1 - (1 - frac) * 0.4) == pytest.approx(0.4 * (1.0 + 0.5) / 2)
    # on a fine grid the curve's area approaches the exact AURC over the same coverage range
    rng = np.random.default_rng(0)
    c, u = rng.random(2000) < 0.8, rng.random(2000)
    grid = np.arange(0, 0.951, 0.01)
    exact = metrics.risk_coverage(c, u)[int(0.05 * 2000) - 1:].mean()
    assert uncertainty.aurc_from_curve(grid, metrics.accuracy_rejection(c, u, grid)) == pytest.approx(exact, abs=0.005)


def test_area_of_the_papers_pneumonia_curve_by_hand():
    # the paper's PneumoniaMNIST accuracy-rejection curve (msflow_study.paper.ARC): coverage .3 .5 .7 .8 .9 1 with risk .030 .053 .071 .080
    # .094 .118 (100 - the paper's accuracy, %)
    by_hand = ((0.030 + 0.053) / 2 * 0.2 + (0.053 + 0.071) / 2 * 0.2 + (0.071 + 0.080) / 2 * 0.1
               + (0.080 + 0.094) / 2 * 0.1 + (0.094 + 0.118) / 2 * 0.1) / 0.7
    rejected = np.array([0.0, 0.1, 0.2, 0.3, 0.5, 0.7])  # msflow_study.paper.ARC_FRACTIONS
    value = uncertainty.aurc_from_curve(rejected, np.array([88.2, 90.6, 92.0, 92.9, 94.7, 97.0]) / 100)
    assert value == pytest.approx(by_hand)


def test_report_by_hand():
    correct = np.array([1, 1, 0, 1], bool)
    unc = np.array([0.1, 0.2, 0.9, 0.3])  # the error is the most uncertain: a perfect ranking
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.7, 0.3]])
    labels = np.array([0, 0, 1, 0])
    r = uncertainty.report(correct, unc, probs, labels)
    assert r["acc"] == 0.75 and r["eaurc"] == pytest.approx(0.0) and r["error_auroc"] == 1.0
    assert r["sel_acc@50"] == 1.0 and r["sel_acc@10"] == 0.75  # floor(0.4) = 0 images rejected at 10 %
    assert r["nll"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.7])))
    assert "ece" not in uncertainty.report(correct, unc)
