"""Classification, selective-prediction and calibration metrics on numpy arrays.

Conventions: ``labels`` ``(N,)`` ints; ``distances`` ``(N, K)`` (smaller = more likely);
``probs`` ``(N, K)`` rows summing to one; ``uncertainty`` ``(N,)`` (larger = less sure);
``correct`` ``(N,)`` booleans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import roc_auc_score

REJECTION_FRACTIONS = np.round(np.arange(0, 1.0, 0.05), 2)
"""The rejection grid of the paper's accuracy-rejection curves (0, 0.05, ..., 0.95)."""


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(labels)))


def auc_distance(distances: np.ndarray, labels: np.ndarray) -> float:
    """The paper's AUC: per class, ROC-AUC of ``-d_k`` for "is class k", macro-averaged.

    For a binary task this is the mean of the two per-class AUCs. Classes absent from ``labels``
    are left out of the average (their AUC is undefined).
    """
    d, y = np.asarray(distances, dtype=np.float64), np.asarray(labels)
    aucs = [roc_auc_score(y == k, -d[:, k]) for k in range(d.shape[1]) if 0 < np.sum(y == k) < len(y)]
    if not aucs:
        raise ValueError("AUC needs at least two classes present in the labels")
    return float(np.mean(aucs))


def auc_standard(probs: np.ndarray, labels: np.ndarray, task: str) -> float:
    """The MedMNIST evaluator's AUC: binary tasks score the positive class's probability;
    multi-class and ordinal tasks average the one-vs-rest AUC of each class's probability."""
    p, y = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if task == "binary-class":
        return float(roc_auc_score(y, p[:, -1]))
    return float(np.mean([roc_auc_score(y == k, p[:, k]) for k in range(p.shape[1]) if 0 < np.sum(y == k) < len(y)]))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (classes), computed stably; ``(..., K)`` to ``(..., K)``."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_distances(distances: np.ndarray, temperature: float) -> np.ndarray:
    """Class probabilities ``softmax(-d / T)``."""
    return softmax(-np.asarray(distances, dtype=np.float64) / temperature)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class."""
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(p, 1e-12, None))))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error between the probability vector and the one-hot label (sum over classes)."""
    p = np.asarray(probs, dtype=np.float64)
    onehot = np.eye(p.shape[1])[labels]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def fit_temperature(scores: np.ndarray, labels: np.ndarray, distances: bool = True) -> float:
    """Temperature minimising NLL (fit on a validation split).

    Args:
        scores: ``(N, K)`` distances (``distances=True``: probabilities ``softmax(-d / T)``) or
            logits (``softmax(z / T)``).
        labels: ``(N,)``.
    """
    logits = np.asarray(scores, dtype=np.float64) * (-1.0 if distances else 1.0)
    res = minimize_scalar(lambda log_t: nll(softmax(logits / np.exp(log_t)), labels), bounds=(-10, 6), method="bounded")
    return float(np.exp(res.x))


@dataclass(frozen=True)
class Calibration:
    """Expected calibration error and its reliability diagram.

    Attributes:
        ece: sum over bins of the bin's share of images times the gap between its accuracy and mean confidence.
        bin_edges: ``(bins + 1,)``.
        bin_accuracy, bin_confidence: per bin, NaN where empty.
        bin_count: images per bin.
    """

    ece: float
    bin_edges: np.ndarray
    bin_accuracy: np.ndarray
    bin_confidence: np.ndarray
    bin_count: np.ndarray


def calibration(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> Calibration:
    """Top-label calibration with equal-width confidence bins."""
    p = np.asarray(probs, dtype=np.float64)
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    correct = pred == np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        acc = np.bincount(which, weights=correct, minlength=bins) / count
        mean_conf = np.bincount(which, weights=conf, minlength=bins) / count
    ece = float(np.nansum(count / len(conf) * np.abs(acc - mean_conf)))
    return Calibration(ece, edges, acc, mean_conf, count)


def risk_coverage(correct: np.ndarray, uncertainty: np.ndarray) -> np.ndarray:
    """Selective risk at coverage ``i / N`` for ``i = 1..N``, keeping the most certain first."""
    order = np.argsort(np.asarray(uncertainty), kind="stable")
    errors = ~np.asarray(correct, dtype=bool)[order]
    return np.cumsum(errors) / np.arange(1, len(errors) + 1)


@dataclass(frozen=True)
class AURC:
    """Area under the risk-coverage curve.

    Attributes:
        aurc: mean selective risk over coverages ``1/N .. 1``.
        optimal: the AURC of a perfect ranking (every error last) at the same accuracy.
        excess: ``aurc - optimal`` (E-AURC); 0 for a perfect ranking.
    """

    aurc: float
    optimal: float
    excess: float


def aurc(correct: np.ndarray, uncertainty: np.ndarray) -> AURC:
    """AURC and E-AURC (Geifman et al., 2019). A random ranking has expected AURC = error rate."""
    c = np.asarray(correct, dtype=bool)
    value = float(np.mean(risk_coverage(c, uncertainty)))
    i = np.arange(1, len(c) + 1)
    best = float(np.mean(np.maximum(0, i - c.sum()) / i))
    return AURC(value, best, value - best)


def accuracy_rejection(
    correct: np.ndarray, uncertainty: np.ndarray, fractions: np.ndarray = REJECTION_FRACTIONS
) -> np.ndarray:
    """Accuracy after rejecting the ``floor(r N)`` most uncertain images, for each ``r`` in ``fractions``.

    Ties in uncertainty keep their original order (stable sort), as the reference does.
    """
    c = np.asarray(correct, dtype=bool)
    order = np.argsort(-np.asarray(uncertainty, dtype=np.float64), kind="stable")
    n = len(c)
    return np.array([c[order[int(np.floor(r * n)) :]].mean() for r in fractions])


def error_detection_auroc(correct: np.ndarray, uncertainty: np.ndarray) -> float:
    """AUROC of the uncertainty as a detector of misclassified images."""
    c = np.asarray(correct, dtype=bool)
    if c.all() or not c.any():
        return float("nan")
    return float(roc_auc_score(~c, np.asarray(uncertainty)))


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` counts, rows = true class, columns = predicted class."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(labels), np.asarray(pred)), 1)
    return m


def recall_from_confusion(confusion) -> list[float | None]:
    """Recall of each class from a confusion matrix whose rows are the true classes (share of a row on its
    diagonal); ``None`` for a class with no images."""
    m = np.asarray(confusion)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"a confusion matrix is square (true x predicted classes); got shape {m.shape}")
    support = m.sum(axis=1)
    return [float(m[k, k] / support[k]) if support[k] else None for k in range(len(m))]


def per_class_recall(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    """Recall of each class (share of its images predicted as it); ``None`` for a class with no images."""
    return recall_from_confusion(confusion_matrix(pred, labels, num_classes))


def bootstrap_se(distances: np.ndarray, labels: np.ndarray, resamples: int = 200, seed: int = 0) -> dict[str, float]:
    """The standard error that the finite test set puts on accuracy and on the paper's AUC: their standard deviation
    over ``resamples`` draws of the images with replacement (seeded). For accuracy it approaches the binomial
    ``sqrt(p (1 - p) / n)``."""
    d, y = np.asarray(distances), np.asarray(labels)
    rng = np.random.default_rng(seed)
    pred = d.argmin(1)
    acc, auc = [], []
    for _ in range(resamples):
        i = rng.integers(0, len(y), len(y))
        acc.append(accuracy(pred[i], y[i]))
        auc.append(auc_distance(d[i], y[i]))
    return {"acc": float(np.std(acc, ddof=1)), "auc_paper": float(np.std(auc, ddof=1))}
