"""Evaluate a trained model: repeated stochastic classification of a split, with every metric.

The readout is stochastic (fresh ``xi_y`` per pass), so a split is classified ``repeats`` times with
independent noise and each metric is reported as mean and std over those passes (the paper uses 5).
Probabilities for the MedMNIST-standard AUC and for calibration are ``softmax(-d / T)``, with ``T``
fitted on the validation split, never on the split being evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from msflow import metrics
from msflow.config import EvalConfig
from msflow.data import Split
from msflow.distributed import Context
from msflow.model import Components
from msflow.sampler import classify, label_noise, view_pairs


@dataclass(frozen=True)
class Predictions:
    """One stochastic pass over a split (numpy, on the CPU).

    Attributes:
        distances: ``(N, K)``.
        pred: ``(N,)``.
        uncertainty: ``(N,)`` distance to the nearest prototype.
        labels: ``(N,)`` true classes.
    """

    distances: np.ndarray
    pred: np.ndarray
    uncertainty: np.ndarray
    labels: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.labels


@torch.no_grad()
def predict(
    comps: Components,
    split: Split,
    steps: int = 1,
    solver: str = "euler",
    seed: int = 0,
    batch_size: int = 500,
    limit: int = 0,
    progress: bool = False,
    views: str = "none",
    ctx: Context | None = None,
) -> Predictions:
    """Classify a split once, in batches, with noise from a generator seeded by ``seed``.

    Args:
        limit: classify only the first ``limit`` images (0: all).
        views: average the maps read off transformed copies of each image (see :data:`msflow.sampler.VIEWS`).
        ctx: the processes that share the work (see :mod:`msflow.distributed`): each classifies every
            ``ctx.world``-th batch and draws, without classifying, the noise of the others, so that every image gets
            the noise it gets from one process; every process returns all the predictions.
    """
    model, code = comps.model, comps.code
    device = next(model.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    n = len(split) if limit <= 0 else min(limit, len(split))
    ctx = ctx or Context()
    out_d = {}
    n_views = len(view_pairs(views))
    per_batch = max(1, batch_size // n_views)  # each view is a copy in the network's batch
    starts = range(0, n, per_batch)
    for b, i in enumerate(tqdm(starts, desc=f"classify {split.name}", disable=not progress, leave=False)):
        if not ctx.mine(b):  # another process's batch: its noise only
            label_noise(min(per_batch, n - i) * n_views, code, (model.resolution,) * 2, gen, device)
            continue
        x = comps.prepare(split.images[i : i + per_batch].to(device))
        with bf16_autocast(device):
            c = classify(model, code, x, steps, solver, generator=gen, views=views)
        out_d[i] = c.distances.float().cpu()
    out_d = ctx.merge(out_d)
    d = torch.cat([out_d[i] for i in sorted(out_d)]).numpy()
    return Predictions(d, d.argmin(1), d.min(1), split.labels[:n].numpy())


def score(p: Predictions, task: str, temperature: float) -> dict[str, float]:
    """Every scalar metric of one pass."""
    probs = metrics.softmax_distances(p.distances, temperature)
    risk = metrics.aurc(p.correct, p.uncertainty)
    return {
        "acc": metrics.accuracy(p.pred, p.labels),
        "auc_paper": metrics.auc_distance(p.distances, p.labels),
        "auc_medmnist": metrics.auc_standard(probs, p.labels, task),
        "aurc": risk.aurc,
        "eaurc": risk.excess,
        "error_auroc": metrics.error_detection_auroc(p.correct, p.uncertainty),
        "nll": metrics.nll(probs, p.labels),
        "brier": metrics.brier(probs, p.labels),
        "ece": metrics.calibration(probs, p.labels).ece,
    }


@dataclass(frozen=True)
class EvalResult:
    """Metrics of a split over repeated stochastic passes.

    Attributes:
        mean, std: per metric, over the passes (std with ``ddof=0``).
        per_pass: each pass's metrics.
        temperature: the ``T`` of ``softmax(-d / T)``, fitted on validation.
        arc_fractions: rejected fractions (0, 0.05, ..., 0.95).
        arc_accuracy: ``(repeats, len(arc_fractions))`` accuracy after rejection, per pass.
        confusion: ``(K, K)`` confusion matrix of the first pass.
        passes: the raw passes.
        settings: how the model was read out.
    """

    mean: dict[str, float]
    std: dict[str, float]
    per_pass: list[dict[str, float]]
    temperature: float
    arc_fractions: np.ndarray
    arc_accuracy: np.ndarray
    confusion: np.ndarray
    passes: list[Predictions] = field(repr=False)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the raw passes)."""
        return {
            "mean": self.mean,
            "std": self.std,
            "per_pass": self.per_pass,
            "temperature": self.temperature,
            "accuracy_rejection": {
                "fractions": self.arc_fractions,
                "mean": self.arc_accuracy.mean(0),
                "std": self.arc_accuracy.std(0),
            },
            "confusion": self.confusion,
            "settings": self.settings,
        }


def evaluate(
    comps: Components,
    split: Split,
    val: Split,
    cfg: EvalConfig,
    seed: int = 0,
    progress: bool = True,
    ctx: Context | None = None,
) -> EvalResult:
    """Fit the temperature on ``val``, then classify ``split`` ``cfg.repeats`` times and score each pass (the batches
    shared by the processes of ``ctx``, see :func:`predict`)."""
    kw = dict(steps=cfg.steps, solver=cfg.solver, batch_size=cfg.batch_size, views=cfg.views, ctx=ctx)
    val_pass = predict(comps, val, seed=seed + 10_000, **kw)
    temperature = metrics.fit_temperature(val_pass.distances, val_pass.labels)
    passes = [
        predict(comps, split, seed=seed + r, **kw)
        for r in tqdm(range(cfg.repeats), desc=f"evaluate {split.info.flag}/{split.name}", disable=not progress)
    ]
    settings = {"split": split.name, "repeats": cfg.repeats, "steps": cfg.steps, "solver": cfg.solver, "views": cfg.views,
                "seed": seed}
    return summarise(passes, split.info.task, split.info.num_classes, temperature, settings)


def summarise(passes: list[Predictions], task: str, num_classes: int, temperature: float,
              settings: dict[str, Any]) -> EvalResult:
    """Score each pass (softmax temperature ``temperature``) and gather the passes' metrics: their mean and std, the
    accuracy-rejection curves and the first pass's confusion matrix."""
    per_pass = [score(p, task, temperature) for p in passes]
    keys = per_pass[0].keys()
    arc = np.stack([metrics.accuracy_rejection(p.correct, p.uncertainty) for p in passes])
    return EvalResult(
        mean={k: float(np.mean([m[k] for m in per_pass])) for k in keys},
        std={k: float(np.std([m[k] for m in per_pass])) for k in keys},
        per_pass=per_pass,
        temperature=temperature,
        arc_fractions=metrics.REJECTION_FRACTIONS,
        arc_accuracy=arc,
        confusion=metrics.confusion_matrix(passes[0].pred, passes[0].labels, num_classes),
        passes=passes,
        settings=settings,
    )


def bf16_autocast(device: torch.device):
    """bfloat16 autocast for inference on CUDA; a no-op elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
