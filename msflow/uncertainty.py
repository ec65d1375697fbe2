"""MedSymmFlow's uncertainty scores, single- and multi-pass, and how to compare selective predictors.

Every score is an *uncertainty*: larger means less sure. From one stochastic pass, the paper's score is
the distance of the predicted map to the nearest class colour; the margin between the two nearest
colours is another. From N passes with independent noise: the nearest class by the mean distance, the
disagreement of the N votes, and the spread of the predicted maps across the passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from msflow.data import Split
from msflow.distributed import Context
from msflow.model import Components
from msflow.sampler import classify, label_noise

SCORES = ("distance", "margin", "mean_distance", "vote_disagreement", "map_spread")
"""Names of the uncertainty scores, the paper's first."""


@dataclass(frozen=True)
class MultiPass:
    """N stochastic readouts of a split.

    Attributes:
        distances: ``(draws, N, K)`` distance of each pass's map to each class colour.
        spread: ``(draws, N)``: row ``k`` is the spread of the first ``k + 1`` passes, the mean over pixels and
            channels of the std (across those passes) of the predicted map; row 0 is zero.
        labels: ``(N,)`` true classes.
    """

    distances: np.ndarray
    spread: np.ndarray
    labels: np.ndarray

    @property
    def draws(self) -> int:
        return self.distances.shape[0]

    def first(self, n: int) -> "MultiPass":
        """The readout made of the first ``n`` passes."""
        if not 1 <= n <= self.draws:
            raise ValueError(f"asked for the first {n} passes of a readout of {self.draws}")
        return MultiPass(self.distances[:n], self.spread[:n], self.labels)


@torch.no_grad()
def multi_pass(comps: Components, split: Split, draws: int, steps: int = 1, solver: str = "euler", seed: int = 0,
               batch_size: int = 256, ctx: Context | None = None) -> MultiPass:
    """Classify every image of ``split`` ``draws`` times with independent noise (the batches shared by the processes of
    ``ctx`` as :func:`msflow.evaluate.predict` shares them: the same noise per image as on one process)."""
    device = next(comps.model.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    ctx = ctx or Context()
    dist, spread = {}, {}
    for b, i in enumerate(range(0, len(split), batch_size)):
        if not ctx.mine(b):  # another process's batch: its noise only
            for _ in range(draws):
                label_noise(min(batch_size, len(split) - i), comps.code, (comps.model.resolution,) * 2, gen, device)
            continue
        x = comps.prepare(split.images[i : i + batch_size].to(device))
        mean = m2 = None  # Welford's running mean and sum of squared deviations of the maps
        d, s = [], []
        for k in range(draws):
            c = classify(comps.model, comps.code, x, steps, solver, gen)
            y = c.y_hat.float()
            if mean is None:
                mean, m2 = y.clone(), torch.zeros_like(y)
            else:
                delta = y - mean
                mean += delta / (k + 1)
                m2 += delta * (y - mean)
            s.append((m2 / (k + 1)).sqrt().mean(dim=(1, 2, 3)).cpu())  # std of the first k + 1 maps
            d.append(c.distances.float().cpu())
        spread[i] = torch.stack(s)
        dist[i] = torch.stack(d)
    dist, spread = ctx.merge(dist), ctx.merge(spread)
    order = sorted(dist)
    return MultiPass(torch.cat([dist[i] for i in order], dim=1).numpy(), torch.cat([spread[i] for i in order], dim=1).numpy(),
                     split.labels.numpy())


def predictions(mp: MultiPass) -> np.ndarray:
    """The multi-pass prediction: the class nearest on average."""
    return mp.distances.mean(0).argmin(1)


def scores(mp: MultiPass) -> dict[str, np.ndarray]:
    """Every uncertainty score (larger = less sure), keyed by :data:`SCORES`.

    ``distance`` and ``margin`` read the first pass only; the others use all passes.
    """
    first = np.sort(mp.distances[0], axis=1)
    mean = mp.distances.mean(0)
    votes = np.apply_along_axis(np.bincount, 1, mp.distances.argmin(2).T, minlength=mp.distances.shape[2])
    return {
        "distance": first[:, 0],
        "margin": first[:, 0] - first[:, 1],  # minus the gap between the two nearest colours
        "mean_distance": mean.min(1),
        "vote_disagreement": 1.0 - votes.max(1) / mp.draws,
        "map_spread": mp.spread[-1],
    }


def selective_accuracy(correct: np.ndarray, uncertainty: np.ndarray, rejected: tuple[float, ...] = (0.1, 0.2, 0.5)) -> dict[float, float]:
    """Accuracy after rejecting each fraction of the most uncertain images."""
    from msflow.metrics import accuracy_rejection

    return dict(zip(rejected, accuracy_rejection(correct, uncertainty, np.array(rejected)).tolist()))


def aurc_from_curve(fractions: np.ndarray, accuracy: np.ndarray) -> float:
    """Area under the risk-coverage curve from an accuracy-rejection curve sampled at ``fractions``.

    Risk ``1 - accuracy`` is integrated over coverage ``1 - fraction`` by the trapezoid rule and divided by
    the coverage range, so that curves sampled at the same fractions (ours and the paper's published points)
    are compared on equal terms. It approximates :func:`msflow.metrics.aurc` over that range.
    """
    coverage = 1.0 - np.asarray(fractions, dtype=float)
    risk = 1.0 - np.asarray(accuracy, dtype=float)
    order = np.argsort(coverage)
    c, r = coverage[order], risk[order]
    return float(np.sum((r[1:] + r[:-1]) / 2 * np.diff(c)) / (c[-1] - c[0]))


def report(correct: np.ndarray, uncertainty: np.ndarray, probs: np.ndarray | None = None, labels: np.ndarray | None = None) -> dict[str, float]:
    """One method's selective-prediction and calibration metrics (calibration only when ``probs`` are given).

    Keys: ``acc``, ``aurc``, ``eaurc``, ``sel_acc@10``, ``sel_acc@20``, ``sel_acc@50``, ``error_auroc`` and, with
    probabilities, ``ece``, ``nll``, ``brier``.
    """
    from msflow import metrics

    risk = metrics.aurc(correct, uncertainty)
    out = {"acc": float(np.mean(correct)), "aurc": risk.aurc, "eaurc": risk.excess,
           **{f"sel_acc@{int(100 * r)}": v for r, v in selective_accuracy(correct, uncertainty).items()},
           "error_auroc": metrics.error_detection_auroc(correct, uncertainty)}
    if probs is not None:
        out |= {"ece": metrics.calibration(probs, labels).ece, "nll": metrics.nll(probs, labels), "brier": metrics.brier(probs, labels)}
    return out
